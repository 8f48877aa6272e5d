"""`erofsgen umount MOUNTPOINT`: unmount an EROFS image (its loop devices detach themselves)."""

from __future__ import annotations

import argparse
from typing import Any

from ..blobs.mount import umount_image
from . import EXIT_OK


def register(subparsers: Any) -> None:
    """Add the `umount` sub-command."""
    parser = subparsers.add_parser(
        "umount",
        help="unmount an image mounted with `erofsgen mount`",
        description="Unmount the EROFS file system (or the composefs overlay of `mount --objects`) at "
        "MOUNTPOINT (needs root); loop devices under it detach themselves. An error if nothing, or "
        "something other than those, is mounted there.",
    )
    parser.add_argument("mountpoint", metavar="MOUNTPOINT", help="where the image is mounted")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    """Unmount."""
    umount_image(args.mountpoint)
    return EXIT_OK
