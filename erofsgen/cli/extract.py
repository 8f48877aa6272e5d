"""`erofsgen extract IMAGE DEST`: recreate the image's tree (or one path of it) at DEST."""

from __future__ import annotations

import argparse
import sys
from typing import Any

from ..blobs.devices import subtree_devices, verify_devices
from ..reader import open_image
from . import EXIT_ERROR, EXIT_OK, error
from .common import add_blob_store_option, add_device_option, os_error_text, resolved_devices


def register(subparsers: Any) -> None:
    """Add the `extract` sub-command."""
    parser = subparsers.add_parser(
        "extract",
        help="extract an image to a directory",
        description="Recreate the tree of IMAGE at DEST (which must not exist or be empty) with "
        "contents, modes, owners (as root), times, xattrs and hard links.",
    )
    parser.add_argument("image", metavar="IMAGE", help="EROFS image")
    parser.add_argument("dest", metavar="DEST", help="destination directory (or file, with --path)")
    parser.add_argument("--path", default="/", metavar="P", help="extract only P (default: the root)")
    add_device_option(parser)
    add_blob_store_option(parser)
    parser.add_argument("--quiet", action="store_true", help="print nothing but errors")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    """Extract, then print a one-line summary and what had to be skipped."""
    whole = args.path.strip("/") == ""
    devices = resolved_devices(args, verify=whole)
    with open_image(args.image, devices) as image:
        if args.blob_store and not whole:  # hash only the blobs the extracted part reads
            verify_devices(image, devices, subtree_devices(image, image.lookup(args.path)))
        try:
            result = image.extract(args.dest, args.path, parallel=True)
        except OSError as exc:  # the destination failed: say which file and why
            error(os_error_text(exc))
            return EXIT_ERROR
    if not args.quiet:
        print(
            f"extracted {result.directories} directories, {result.files} files, "
            f"{result.symlinks} symlinks, {result.specials} special files, {result.hardlinks} hard links"
        )
        for what in result.skipped:
            print(f"skipped: {what}", file=sys.stderr)
    return EXIT_OK
