"""`erofsgen inspect IMAGE`: superblock fields and tree statistics (like `dump.erofs -s -S`)."""

from __future__ import annotations

import argparse
import json
from typing import Any

from ..reader import open_image
from ..reader.stats import format_stats, image_stats
from . import EXIT_OK, EXIT_PROBLEMS
from .common import add_blob_store_option, add_device_option, resolved_devices, stdout_gone


def register(subparsers: Any) -> None:
    """Add the `inspect` sub-command."""
    parser = subparsers.add_parser(
        "inspect",
        help="show the superblock and statistics of an image",
        description="Show the superblock fields of IMAGE and statistics of its tree: files by type, "
        "compressed and uncompressed counts, size histograms. Exit status 1 if parts of the "
        "tree could not be read.",
    )
    parser.add_argument("image", metavar="IMAGE", help="EROFS image")
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    add_device_option(parser)
    add_blob_store_option(parser)
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    """Print the statistics; the checksum state is shown, not enforced."""
    with open_image(args.image, resolved_devices(args, verify=False), strict_checksum=False) as image:
        stats = image_stats(image)
    text = json.dumps(stats.to_json(), indent=2) if args.json else format_stats(stats)
    try:
        print(text, flush=True)
    except BrokenPipeError:
        return stdout_gone()
    return EXIT_PROBLEMS if stats.errors else EXIT_OK
