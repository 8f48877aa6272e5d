"""Command line: a thin argparse layer over the public API.

Each sub-command lives in its own module exposing `register(subparsers)`; the module sets
`func` on its parser to a callable taking the parsed namespace and returning an exit status.
"""

from __future__ import annotations

import argparse
import importlib
import signal
import sys
import threading
from collections.abc import Callable, Sequence
from types import FrameType
from typing import Any

from ..errors import ErofsgenError

# Sub-command modules, in the order `--help` lists them.
COMMANDS = ("pack", "inspect", "ls", "cat", "extract", "dump", "check")

EXIT_OK = 0
EXIT_PROBLEMS = 1  # `check` found problems
EXIT_ERROR = 2  # bad input, corrupt image, missing file


def build_parser(only: str | None = None) -> argparse.ArgumentParser:
    """The parser; with `only`, just that sub-command (so only its module is imported)."""
    parser = argparse.ArgumentParser(prog="erofsgen", description="Write and read EROFS images.")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name in COMMANDS if only is None else (only,):
        try:
            module = importlib.import_module(f".{name}", __name__)
        except ModuleNotFoundError as exc:
            if exc.name != f"{__name__}.{name}":
                raise
            continue  # command not built yet
        module.register(sub)
    return parser


def error(message: str) -> None:
    print(f"erofsgen: error: {message}", file=sys.stderr)


# Signals that end a command the way Ctrl-C does: every cleanup runs, then exit 128 + signal.
TERMINATING = (signal.SIGTERM, signal.SIGHUP)
# What signal.signal takes and returns: a function, SIG_DFL, SIG_IGN, or None (set outside Python).
SignalHandler = Callable[[int, FrameType | None], Any] | int | None


class Terminated(KeyboardInterrupt):
    """SIGTERM or SIGHUP arrived; a KeyboardInterrupt so that every interrupt cleanup runs."""

    def __init__(self, signum: int) -> None:
        super().__init__(signum)
        self.signum = signum


def main(argv: Sequence[str] | None = None) -> int:
    words = list(sys.argv[1:] if argv is None else argv)
    parser = build_parser(words[0] if words and words[0] in COMMANDS else None)
    args = parser.parse_args(words)
    previous = _raise_on_termination()
    try:
        return _run(args)
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)


def _raise_on_termination() -> dict[int, SignalHandler]:
    """Make SIGTERM and SIGHUP raise Terminated; returns the handlers to restore.

    Only the first such signal raises: a second one must not cut the cleanup of the first
    short. Signals ignored on entry (`nohup`) stay ignored.
    """
    if threading.current_thread() is not threading.main_thread():
        return {}  # only the main thread may set handlers (and it is the one signals reach)
    fired = False

    def handler(signum: int, frame: FrameType | None) -> None:
        nonlocal fired
        if not fired:
            fired = True
            raise Terminated(signum)

    previous: dict[int, SignalHandler] = {}
    for signum in TERMINATING:
        current = signal.getsignal(signum)
        # None: a handler set outside Python, which could not be put back.
        if current is not signal.SIG_IGN and current is not None:
            previous[signum] = signal.signal(signum, handler)
    return previous


def _run(args: argparse.Namespace) -> int:
    try:
        status: int = args.func(args)
    except Terminated as exc:
        error(f"terminated by {signal.Signals(exc.signum).name}")
        return 128 + exc.signum
    except KeyboardInterrupt:
        error("interrupted")
        return 130
    except ErofsgenError as exc:
        error(str(exc))
        return EXIT_ERROR
    except OSError as exc:
        error(_os_error(exc))
        return EXIT_ERROR
    return status


def _os_error(exc: OSError) -> str:
    if exc.filename is not None:
        return f"{exc.filename}: {exc.strerror or exc}"
    return str(exc)
