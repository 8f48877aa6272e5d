"""Options and behaviours shared by the sub-commands that read images."""

from __future__ import annotations

import argparse
import os
import sys

from ..reader.names import escape_name
from . import EXIT_OK


def add_device_option(parser: argparse.ArgumentParser) -> None:
    """--device FILE (repeatable): the image's extra devices in device-table order."""
    parser.add_argument(
        "--device",
        action="append",
        default=[],
        metavar="FILE",
        help="an extra (blob) device of the image, in device-table order (repeatable)",
    )


def os_error_text(exc: OSError) -> str:
    """'PATH: reason' for an OSError, the path escaped like every name we print."""
    reason = exc.strerror or str(exc)
    return reason if exc.filename is None else f"{escape_name(exc.filename)}: {reason}"


def stdout_gone() -> int:
    """Call on BrokenPipeError: silence stdout so exiting does not fail again; returns EXIT_OK.

    A reader that stops early (`| head`) is not an error of ours.
    """
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        os.close(devnull)
    except (OSError, ValueError, AttributeError):
        pass  # stdout is not a real file (e.g. captured): nothing to silence
    return EXIT_OK
