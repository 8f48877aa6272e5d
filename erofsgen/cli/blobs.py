"""`erofsgen blobs IMAGE`: the image's extra (blob) devices and where each one is found.

One line per device-table slot, in table order: the device number (slot + 1, the chunk-index
device id and the position among `--device`/`device=`), its tag, its size in blocks and bytes
as the table gives it, and the file found for it or `missing`. Every problem is then reported
on standard error; the exit status is 2 if there was any, after the whole list.
"""

from __future__ import annotations

import argparse
import os
import sys
from typing import Any

from ..blobs.devices import DeviceLocation, ProblemKind, find_devices
from ..reader.names import escape_name
from . import EXIT_ERROR, EXIT_OK, error
from .common import add_blob_store_option, add_device_option, stdout_gone

_STATUS = {
    ProblemKind.TRUNCATED: "truncated",
    ProblemKind.MISMATCH: "content does not match",
    ProblemKind.UNREADABLE: "unreadable",
}


def register(subparsers: Any) -> None:
    """Add the `blobs` sub-command."""
    parser = subparsers.add_parser(
        "blobs",
        help="list the blob devices of an image and where they are",
        description="List the extra (blob) devices of IMAGE in device-table order: number, tag, "
        "size, and the file found for each in the blob stores (or given with --device), or "
        "'missing'. Exit status 2 if any device is missing, too short, or (with --verify) does "
        "not hash to its tag.",
    )
    parser.add_argument("image", metavar="IMAGE", help="EROFS image")
    add_blob_store_option(parser)
    add_device_option(parser)
    parser.add_argument(
        "--verify", action="store_true", help="hash every blob found and compare it with its tag"
    )
    parser.set_defaults(func=run)


def location_text(loc: DeviceLocation) -> str:
    """The last column: the file, annotated, or `missing`."""
    if loc.path is None:
        return "missing"
    text = escape_name(os.fspath(loc.path))
    notes = [_STATUS[p.kind] for p in loc.problems if p.kind in _STATUS]
    if loc.verified:
        notes.append("verified")
    return f"{text} ({', '.join(notes)})" if notes else text


def format_line(loc: DeviceLocation) -> str:
    """`DEV TAG BLOCKS BYTES LOCATION`, aligned for 64-character digest tags."""
    return f"{loc.device_id:>3}  {loc.tag or '-':<64}  {loc.blocks:>10}  {loc.size:>14}  {location_text(loc)}"


def run(args: argparse.Namespace) -> int:
    """Print every device, then every problem; exit 2 if there was one."""
    locations = find_devices(args.image, args.blob_store, args.device, verify=args.verify, strict=False)
    if not locations:
        print(f"erofsgen: {escape_name(args.image)}: no extra devices", file=sys.stderr)
        return EXIT_OK
    try:
        print(f"{'DEV':>3}  {'TAG':<64}  {'BLOCKS':>10}  {'BYTES':>14}  LOCATION")
        for loc in locations:
            print(format_line(loc))
        sys.stdout.flush()
    except BrokenPipeError:
        stdout_gone()
    problems = [p for loc in locations for p in loc.problems]
    for problem in problems:
        error(problem.message)
    return EXIT_ERROR if problems else EXIT_OK
