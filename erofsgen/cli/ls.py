"""`erofsgen ls IMAGE [PATH]`: list a directory of an image, like ls(1).

Names are printed escaped (UTF-8 where valid, `\\xNN` for other bytes and control characters,
`\\\\` for a backslash), so every entry is one line whatever bytes its name holds. Entries come
in on-disk order, which for a valid image is bytewise name order. `-l` shows the mode string,
link count, numeric owner and group, size (or `major, minor` for devices), the mtime in local
time with nanoseconds, the name and `-> target` for symlinks; `-i` adds the inode number (the
NID, as the kernel reports it); `-d` lists a directory itself.
"""

from __future__ import annotations

import argparse
import os
import stat
import sys
import time
from typing import Any

from ..errors import ErofsgenError
from ..format.constants import FileType
from ..reader import Image, InodeInfo, open_image
from ..reader.names import escape_name
from . import EXIT_OK, EXIT_PROBLEMS, error
from .common import add_blob_store_option, add_device_option, resolved_devices, stdout_gone


def register(subparsers: Any) -> None:
    """Add the `ls` sub-command."""
    parser = subparsers.add_parser(
        "ls",
        help="list a directory of an image",
        description="List PATH (default: the root) of IMAGE. Exit status 1 if some entries could "
        "not be read.",
    )
    parser.add_argument("image", metavar="IMAGE", help="EROFS image")
    parser.add_argument("path", nargs="?", default="/", metavar="PATH", help="directory or file in the image")
    parser.add_argument("-l", dest="long", action="store_true", help="long listing format")
    parser.add_argument("-R", dest="recursive", action="store_true", help="list subdirectories recursively")
    parser.add_argument("-i", dest="inode", action="store_true", help="print each entry's NID first")
    parser.add_argument(
        "-d", dest="directory", action="store_true", help="list a directory itself, not its entries"
    )
    add_device_option(parser)
    add_blob_store_option(parser)
    parser.set_defaults(func=run)


def time_text(seconds: int, nanoseconds: int) -> str:
    """'YYYY-MM-DD HH:MM:SS.nnnnnnnnn' in local time (as dump.erofs prints), or '@seconds.ns'."""
    try:
        stamp = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(seconds))
    except (OverflowError, OSError, ValueError):
        return f"@{seconds}.{nanoseconds:09d}"
    return f"{stamp}.{nanoseconds:09d}"


class _Lister:
    def __init__(self, image: Image, args: argparse.Namespace) -> None:
        self.image = image
        self.long = args.long
        self.show_nid = args.inode
        self.recursive = args.recursive
        self.directory = args.directory
        self.status = EXIT_OK

    def trouble(self, what: str, exc: ErofsgenError) -> None:
        error(f"{what}: {exc}")
        self.status = EXIT_PROBLEMS

    def line(self, name: bytes, nid: int) -> str:
        shown = escape_name(name)
        prefix = f"{nid:>8} " if self.show_nid else ""
        if not self.long:
            return prefix + shown
        info = self.image.inode(nid)
        text = f"{prefix}{self.long_fields(info)} {shown}"
        if info.file_type == FileType.SYMLINK:
            text += " -> " + escape_name(self.image.readlink_nid(nid))
        return text

    @staticmethod
    def long_fields(info: InodeInfo) -> str:
        if info.file_type in (FileType.CHRDEV, FileType.BLKDEV):
            size = f"{info.major:>4}, {info.minor:>4}"
        else:
            size = f"{info.size:>10}"
        when = time_text(info.mtime, info.mtime_nsec)
        return f"{stat.filemode(info.mode)} {info.nlink:>3} {info.uid:>5} {info.gid:>5} {size} {when}"

    def emit(self, name: bytes, nid: int, where: bytes) -> None:
        try:
            print(self.line(name, nid))
        except ErofsgenError as exc:
            self.trouble(escape_name(where), exc)

    def list_dir(self, path: bytes, nid: int) -> list[tuple[bytes, int]]:
        """Print the entries of one directory; returns its subdirectories."""
        try:
            entries = list(self.image.scandir_nid(nid))
        except ErofsgenError as exc:
            self.trouble(escape_name(path), exc)
            return []
        subdirs = []
        for entry in entries:
            child = path.rstrip(b"/") + b"/" + entry.name
            self.emit(entry.name, entry.nid, child)
            if entry.file_type == FileType.DIR:
                subdirs.append((child, entry.nid))
        return subdirs

    def run(self, path: bytes) -> int:
        nid = self.image.lookup(path)
        if self.directory or not self.image.inode(nid).is_dir:
            self.emit(path, nid, path)
            return self.status
        if not self.recursive:
            self.list_dir(path, nid)
            return self.status
        stack = [(path, nid)]
        seen: set[int] = set()
        first = True
        while stack:
            dirpath, dnid = stack.pop()
            if dnid in seen:  # a loop or a hard-linked directory: list it once
                continue
            seen.add(dnid)
            print(("" if first else "\n") + escape_name(dirpath) + ":")
            first = False
            stack.extend(reversed(self.list_dir(dirpath, dnid)))
        return self.status


def run(args: argparse.Namespace) -> int:
    """List PATH; a directory that cannot be read is reported and the listing goes on."""
    with open_image(args.image, resolved_devices(args, verify=False)) as image:
        try:
            return _Lister(image, args).run(os.fsencode(args.path))
        except BrokenPipeError:
            return stdout_gone()
        finally:
            try:
                sys.stdout.flush()
            except BrokenPipeError:
                stdout_gone()
