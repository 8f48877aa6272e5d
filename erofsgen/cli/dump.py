"""`erofsgen dump IMAGE`: every on-disk structure with its absolute offset and decoded fields.

Without --nid/--path the whole image is dumped: the superblock area, then every inode reachable
from the root (breadth first, each once) with its xattrs, data map and directory entries.
Structures that cannot be read are printed as `error:` items and the dump goes on; the exit
status is then 1.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Iterator
from typing import Any

from ..reader import open_image
from ..reader.dump import DumpError, Item, format_text, inode_items, iter_image, to_json
from ..reader.names import escape_name
from . import EXIT_OK, EXIT_PROBLEMS
from .common import add_blob_store_option, add_device_option, resolved_devices, stdout_gone


def register(subparsers: Any) -> None:
    """Add the `dump` sub-command."""
    parser = subparsers.add_parser(
        "dump",
        help="show every on-disk structure of an image",
        description="Print each structure of IMAGE (superblock, device slots, compression configs, "
        "inodes, xattrs, chunk indexes, compressed indexes, dirents) with its offset and fields.",
    )
    parser.add_argument("image", metavar="IMAGE", help="EROFS image")
    which = parser.add_mutually_exclusive_group()
    which.add_argument("--nid", type=lambda s: int(s, 0), metavar="N", help="dump only the inode N")
    which.add_argument("--path", metavar="P", help="dump only the inode at path P")
    parser.add_argument("--json", action="store_true", help="print a JSON array of structures")
    add_device_option(parser)
    add_blob_store_option(parser)
    parser.set_defaults(func=run)


def _write(items: Iterator[Item], as_json: bool) -> int:
    """Print items as they come (nothing is accumulated); returns how many were errors."""
    errors = 0
    out = sys.stdout
    out.write("[\n" if as_json else "")
    for n, item in enumerate(items):
        errors += isinstance(item, DumpError)
        if as_json:
            out.write((",\n" if n else "") + json.dumps(to_json(item)))
        else:
            out.write(format_text(item) + "\n")
    out.write("\n]\n" if as_json else "")
    out.flush()
    return errors


def run(args: argparse.Namespace) -> int:
    """Dump the selection; the superblock checksum is reported, not enforced."""
    with open_image(args.image, resolved_devices(args, verify=False), strict_checksum=False) as image:
        if args.path is not None:
            nid = image.lookup(args.path)
            items = inode_items(image, nid, "/" + escape_name(os.fsencode(args.path)).strip("/"))
        elif args.nid is not None:
            items = inode_items(image, args.nid)
        else:
            items = iter_image(image)
        try:
            errors = _write(items, args.json)
        except BrokenPipeError:
            return stdout_gone()
    return EXIT_PROBLEMS if errors else EXIT_OK
