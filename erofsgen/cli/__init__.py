"""Command line: a thin argparse layer over the public API.

Each sub-command lives in its own module exposing `register(subparsers)`; the module sets
`func` on its parser to a callable taking the parsed namespace and returning an exit status.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Sequence

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


def main(argv: Sequence[str] | None = None) -> int:
    words = list(sys.argv[1:] if argv is None else argv)
    parser = build_parser(words[0] if words and words[0] in COMMANDS else None)
    args = parser.parse_args(words)
    try:
        status: int = args.func(args)
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
