"""Options and behaviours shared by the sub-commands that read images."""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence
from pathlib import Path

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


def add_blob_store_option(parser: argparse.ArgumentParser) -> None:
    """--blob-store DIR (repeatable): find the extra devices by their digest tags in blob stores."""
    parser.add_argument(
        "--blob-store",
        action="append",
        default=[],
        metavar="DIR",
        help="find the extra devices by their tags in blob store DIR (repeatable; the first store "
        "holding a blob wins)",
    )


def resolved_devices(args: argparse.Namespace, *, verify: bool) -> Sequence[str | Path]:
    """The extra devices for `args.image`: `--device` files as given, or blobs found by tag in
    the `--blob-store` directories, checked to exist and be long enough, and with `verify` to
    hash to their tags, so a damaged store is an error naming the blob, never wrong data.
    """
    if not args.blob_store:
        devices: list[str] = args.device
        return devices
    from ..blobs.devices import find_devices  # only commands given a store need it

    return [
        loc.path for loc in find_devices(args.image, args.blob_store, args.device, verify=verify) if loc.path
    ]


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
