"""`erofsgen cat IMAGE PATH`: write a regular file's bytes to standard output, streamed."""

from __future__ import annotations

import argparse
import sys
from typing import Any, BinaryIO

from ..blobs.devices import data_devices, verify_devices
from ..errors import InvalidInputError
from ..format.constants import FileType
from ..reader import open_image
from ..reader.names import escape_name
from . import EXIT_OK
from .common import add_blob_store_option, add_device_option, resolved_devices, stdout_gone

PIECE = 1 << 20  # bytes per read: memory stays bounded whatever the file size


def register(subparsers: Any) -> None:
    """Add the `cat` sub-command."""
    parser = subparsers.add_parser(
        "cat",
        help="write a file of an image to standard output",
        description="Write the content of the regular file PATH of IMAGE to standard output.",
    )
    parser.add_argument("image", metavar="IMAGE", help="EROFS image")
    parser.add_argument("path", metavar="PATH", help="file inside the image")
    add_device_option(parser)
    add_blob_store_option(parser)
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    """Stream the file in pieces of PIECE bytes."""
    devices = resolved_devices(args, verify=False)
    with open_image(args.image, devices) as image:
        nid = image.lookup(args.path)
        info = image.inode(nid)
        shown = escape_name(args.path)
        if info.file_type == FileType.SYMLINK:
            target = escape_name(image.readlink_nid(nid))
            raise InvalidInputError(f"is a symbolic link (to {target}), not followed", shown)
        if info.file_type != FileType.REG_FILE:
            raise InvalidInputError(f"not a regular file ({info.file_type.name.lower()})", shown)
        if args.blob_store:  # hash just the blobs this file reads, before any byte is written
            verify_devices(image, devices, data_devices(image, nid))
        out = sys.stdout.buffer
        with image.open_nid(nid, args.path) as src:
            while piece := src.read(PIECE):
                if not _write(out, piece):
                    return stdout_gone()
        if not _write(out, None):
            return stdout_gone()
    return EXIT_OK


def _write(out: BinaryIO, piece: bytes | None) -> bool:
    """Write `piece` (None: flush); False if the reader closed the pipe, which is not an error.

    Any other failure (`> /dev/full`) is an OSError naming standard output.
    """
    try:
        if piece is None:
            out.flush()
        else:
            out.write(piece)
    except BrokenPipeError:
        return False
    except OSError as exc:
        stdout_gone()  # the exit must not try, and fail, to flush the same bytes again
        raise OSError(exc.errno, exc.strerror, "standard output") from None
    return True
