"""Command line: a thin argparse layer over the public API.

Each sub-command lives in its own module exposing `register(subparsers)`; the module sets
`func` on its parser to a callable taking the parsed namespace and returning an exit status.
"""

from __future__ import annotations

import argparse
import difflib
import errno
import gc
import importlib
import os
import signal
import sys
import threading
from collections.abc import Callable, Sequence
from types import FrameType
from typing import Any, NoReturn

from .. import __version__
from ..errors import ErofsgenError

# Sub-command modules, in the order `--help` lists them.
COMMANDS = (
    "pack",
    "inspect",
    "ls",
    "cat",
    "extract",
    "dump",
    "check",
    "blobs",
    "mount",
    "umount",
    "store",
    "mkcomposefs",
    "composefs-info",
)

EXIT_OK = 0
EXIT_PROBLEMS = 1  # `check` found problems
EXIT_ERROR = 2  # bad input, corrupt image, missing file
_NO_ROOM = {errno.ENOSPC, errno.EDQUOT, errno.EFBIG}


class Parser(argparse.ArgumentParser):
    """ArgumentParser whose usage errors suggest the closest command or option (one line, exit 2)."""

    def fail(self, message: str) -> NoReturn:
        """Exit 2 after one line `PROG: error: MESSAGE` on stderr (no usage block)."""
        self.exit(EXIT_ERROR, f"{self.prog}: error: {message}\n")

    def _check_value(self, action: argparse.Action, value: Any) -> None:
        choices = action.choices
        if isinstance(value, str) and choices is not None and value not in choices:
            match = _closest(value, [str(choice) for choice in choices])
            if match is not None:
                what = "command" if isinstance(action, argparse._SubParsersAction) else "choice"
                self.fail(f"unknown {what} {value!r}; did you mean {match!r}?")
        super()._check_value(action, value)


class CommandParser(Parser):
    """A sub-command's parser: rejects what it does not know itself, suggesting its own options."""

    def parse_known_args(  # type: ignore[override]
        self, args: Sequence[str] | None = None, namespace: argparse.Namespace | None = None
    ) -> tuple[argparse.Namespace, list[str]]:
        parsed, extras = super().parse_known_args(args, namespace)
        for word in extras:
            if word.startswith("-") and word != "-":
                name = word.split("=", 1)[0]
                options = [opt for action in self._actions for opt in action.option_strings]
                match = _closest(name, options)
                if match is not None:
                    self.fail(f"unrecognized option {name!r}; did you mean {match!r}?")
        if extras:
            self.error(f"unrecognized arguments: {' '.join(extras)}")
        return parsed, extras


def _closest(word: str, candidates: list[str]) -> str | None:
    matches = difflib.get_close_matches(word, candidates, n=1, cutoff=0.7)
    return matches[0] if matches else None


def build_parser(only: str | None = None) -> argparse.ArgumentParser:
    """The parser; with `only`, just that sub-command (so only its module is imported)."""
    parser = Parser(prog="erofsgen", description="Write and read EROFS images.")
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND", parser_class=CommandParser)
    for name in COMMANDS if only is None else (only,):
        try:
            module = importlib.import_module(f".{name.replace('-', '_')}", __name__)
        except ModuleNotFoundError as exc:
            if exc.name != f"{__name__}.{name.replace('-', '_')}":
                raise
            continue  # command not built yet
        module.register(sub)
    return parser


def _check_leading_options(parser: argparse.ArgumentParser, words: list[str]) -> None:
    """Refuse an unknown option before the command (`--verison`), with a suggestion.

    argparse would otherwise drop it and complain that COMMAND is missing, or pass it by.
    """
    known = [opt for action in parser._actions for opt in action.option_strings]
    for word in words:
        if not word.startswith("-") or word == "--":
            return
        if word not in known:
            match = _closest(word, known)
            hint = f"; did you mean {match!r}?" if match is not None else ""
            parser.exit(EXIT_ERROR, f"{parser.prog}: error: unrecognized option {word!r}{hint}\n")


def command_parsers(parser: argparse.ArgumentParser) -> dict[str, argparse.ArgumentParser]:
    """The sub-command parsers of a `build_parser()` result, by command name."""
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            return dict(action.choices)
    return {}


def error(message: str) -> None:
    """Print `erofsgen: error: MESSAGE` on stderr as one line, whatever bytes a path in it holds."""
    print(f"erofsgen: error: {one_line(message)}", file=sys.stderr)


def one_line(message: str) -> str:
    """`message` with what cannot be shown (newlines, controls, bytes that are not UTF-8) escaped.

    Readers escape the names they report as `ls -b` does; paths from the command line or the
    source tree may reach a message raw, and must not split the line or print as `\\udcff`.
    """
    if message.isprintable():
        return message
    from ..reader.names import escape_name  # only on this rare path: pack does not load the reader

    return "".join(ch if ch.isprintable() else escape_name(ch) for ch in message)


# Signals that end a command the way Ctrl-C does: every cleanup runs, then exit 128 + signal.
TERMINATING = (signal.SIGTERM, signal.SIGHUP)
# What signal.signal takes and returns: a function, SIG_DFL, SIG_IGN, or None (set outside Python).
SignalHandler = Callable[[int, FrameType | None], Any] | int | None


class Terminated(KeyboardInterrupt):
    """SIGTERM or SIGHUP arrived; a KeyboardInterrupt so that every interrupt cleanup runs."""

    def __init__(self, signum: int) -> None:
        super().__init__(signum)
        self.signum = signum


def console_main() -> NoReturn:
    """The `erofsgen` command: `main`, then exit without tearing the heap down object by object.

    A large pack leaves millions of objects that Python would free one at a time on the way out
    (a third of a second for /usr/share); by the time main returns every file is closed and
    every thread joined, so only the standard streams need flushing. For the same reason the
    cyclic collector stays off: the writer pauses it while it builds, and once on again its
    first pass would walk every object made meanwhile (60 ms for /usr/share) just before the
    exit frees them all; the reading commands make no cycles worth collecting.
    """
    gc.disable()
    status = main()
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except (OSError, ValueError):
            status = status or EXIT_ERROR  # output lost: not a success
    os._exit(status)


def main(argv: Sequence[str] | None = None) -> int:
    words = list(sys.argv[1:] if argv is None else argv)
    parser = build_parser(words[0] if words and words[0] in COMMANDS else None)
    _check_leading_options(parser, words)
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
        name = exc.filename
        if isinstance(name, bytes):  # an os call given a bytes path: shown escaped, not as b'...'
            from ..reader.names import escape_name

            name = escape_name(name)
        return f"{name}: {exc.strerror or exc}"
    reason = exc.strerror or str(exc)
    # Files (images, extract's destinations) are named where they fail; reading never runs out
    # of room, so an unnamed "no space" is the one output left: standard output (`> /dev/full`).
    return f"standard output: {reason}" if exc.errno in _NO_ROOM else reason
