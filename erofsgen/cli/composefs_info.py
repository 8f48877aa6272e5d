"""`erofsgen composefs-info ls|objects|missing-objects|dump IMAGE...`, as composefs-info 1.0.8."""

from __future__ import annotations

import argparse
import os
import stat
import sys
from typing import Any

from ..composefs.dump import format_entry
from ..composefs.escape import escape
from ..composefs.read import dump_entries, read_image
from ..composefs.tree import CfsNode
from . import EXIT_OK
from .common import stdout_gone


def register(subparsers: Any) -> None:
    """Add the `composefs-info` sub-command."""
    parser = subparsers.add_parser(
        "composefs-info",
        help="list a composefs image, its objects, or print its composefs-dump(5)",
        description="Read composefs images as composefs-info 1.0.8 does. ls: every path (directories "
        "end in /, symlinks show -> TARGET, external files @ OBJECT); objects: the object paths the "
        "images need, sorted, each once; missing-objects: those not in --basedir; dump: the "
        "composefs-dump(5) text that mkcomposefs --from-file turns back into the same image.",
    )
    parser.add_argument("command", choices=("ls", "objects", "missing-objects", "dump"), metavar="COMMAND")
    parser.add_argument("images", nargs="+", metavar="IMAGE", help="composefs image")
    parser.add_argument("--basedir", metavar="DIR", help="object store to look in (missing-objects)")
    parser.set_defaults(func=run)


def _ls(node: CfsNode, parent: bytes, out: list[bytes]) -> None:
    for name in sorted(node.children or {}):
        child = (node.children or {})[name]
        path = parent + b"/" + name
        line = b"".join(escape(bytes([c])) if c != 0x20 else b" " for c in path)
        ftype = stat.S_IFMT(child.mode)
        if ftype == stat.S_IFDIR:
            line += b"/\t"
        elif ftype == stat.S_IFLNK:
            line += b"\t-> " + escape(child.payload or b"")
        elif ftype == stat.S_IFREG and child.payload is not None:
            line += b"\t@ " + escape(child.payload)
        out.append(line + b"\n")
        _ls(child, path, out)


def _objects(node: CfsNode, found: set[bytes]) -> None:
    if stat.S_ISREG(node.mode) and node.payload is not None:
        found.add(node.payload)
    for child in (node.children or {}).values():
        _objects(child, found)


def run(args: argparse.Namespace) -> int:
    """Read each image and print."""
    objects: set[bytes] = set()
    out: list[bytes] = []
    for path in args.images:
        with open(path, "rb") as f:
            root = read_image(f.read())
        if args.command == "ls":
            _ls(root, b"", out)
        elif args.command == "dump":
            out += [format_entry(entry) + b"\n" for entry in dump_entries(root)]
        else:
            _objects(root, objects)
    if args.command in ("objects", "missing-objects"):
        # Without --basedir, composefs-info counts every object as missing.
        store = os.fsencode(args.basedir) if args.command == "missing-objects" and args.basedir else None
        for obj in sorted(objects):
            if store is not None and os.path.lexists(os.path.join(store, obj.lstrip(b"/"))):
                continue
            out.append(obj + b"\n")
    try:
        sys.stdout.buffer.write(b"".join(out))
        sys.stdout.buffer.flush()
    except BrokenPipeError:
        return stdout_gone()
    return EXIT_OK
