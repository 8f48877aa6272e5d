"""Checks of names and nodes against what EROFS and the kernel can hold.

plan.collect_inodes() runs them on every name and node as it first meets them, before any
layout is decided. Every error names the path (relative to the image root).
"""

from __future__ import annotations

import os

from ..errors import InvalidInputError
from ..format.constants import EROFS_NAME_LEN, EROFS_PATH_MAX, XATTR_LIST_MAX, XATTR_NAME_MAX
from ..format.xattr import split_xattr_name
from ..limits import MAX_ID, MAX_TIME_NS, MIN_TIME_NS
from ..model import Device, Directory, File, Node, Symlink

ACL_NAMES = (b"system.posix_acl_access", b"system.posix_acl_default")
MAX_XATTR_VALUE = 65535  # e_value_size is 16 bits
MAX_FILE_SIZE = 2**63 - 1


def show(path: bytes) -> str:
    """A relative image path as the user should read it in a message."""
    return "/" + os.fsdecode(path)


def check_name(name: bytes, parent: bytes) -> None:
    if (
        name
        and len(name) <= EROFS_NAME_LEN
        and name not in (b".", b"..")
        and b"/" not in name
        and b"\0" not in name
    ):
        return  # the common case, without formatting a message
    where = show(parent + b"/" + name if parent else name)
    if not name or name in (b".", b".."):
        raise InvalidInputError(f"invalid file name {name!r}", where)
    if b"/" in name or b"\0" in name:
        raise InvalidInputError("file name contains '/' or NUL", where)
    if len(name) > EROFS_NAME_LEN:
        raise InvalidInputError(f"file name is {len(name)} bytes, longer than {EROFS_NAME_LEN}", where)


def check_node(node: Node, path: bytes, *, xattrs: bool = True) -> None:
    meta = node.meta
    for what, value in (("uid", meta.uid), ("gid", meta.gid)):
        if not 0 <= value <= MAX_ID:
            raise InvalidInputError(f"{what} {value} is outside 0..{MAX_ID}", show(path))
    if meta.mode & ~0o7777:
        raise InvalidInputError(f"mode {meta.mode:#o} has bits outside 0o7777", show(path))
    if not MIN_TIME_NS <= meta.mtime_ns <= MAX_TIME_NS:
        raise InvalidInputError(f"mtime {meta.mtime_ns} ns is out of range", show(path))
    if meta.xattrs and xattrs:
        where = show(path)
        check_xattrs(meta.xattrs, where)
        check_xattr_targets(node, meta.xattrs, where)
    check_payload(node, path)


def check_payload(node: Node, path: bytes) -> None:
    # The path is formatted only for an error: this runs once per inode.
    if isinstance(node, Symlink):
        if not 0 < len(node.target) < EROFS_PATH_MAX:
            raise InvalidInputError(
                f"symlink target is {len(node.target)} bytes; it must be 1..{EROFS_PATH_MAX - 1}", show(path)
            )
    elif isinstance(node, File):
        if not 0 <= node.data.size <= MAX_FILE_SIZE:
            raise InvalidInputError(f"file size {node.data.size} is out of range", show(path))
    elif isinstance(node, Device) and not (0 <= node.major < 4096 and 0 <= node.minor < 2**20):
        raise InvalidInputError(
            f"device number {node.major}:{node.minor} does not fit 12:20 bits", show(path)
        )


def check_xattrs(xattrs: dict[bytes, bytes], where: str) -> None:
    listed = 0
    for name, value in xattrs.items():
        if not name or len(name) > XATTR_NAME_MAX or b"\0" in name:
            raise InvalidInputError(f"xattr name {name!r} is empty, too long or contains NUL", where)
        split = split_xattr_name(name)
        if split is None:
            raise InvalidInputError(
                f"xattr {os.fsdecode(name)} has no prefix EROFS can store "
                "(user., trusted., security., system.posix_acl_*)",
                where,
            )
        if not split[1] and name not in ACL_NAMES:
            # Linux refuses a name that is only its namespace, and cannot read one back.
            raise InvalidInputError(f"xattr name {os.fsdecode(name)} has nothing after its prefix", where)
        if len(value) > MAX_XATTR_VALUE:
            raise InvalidInputError(
                f"xattr {os.fsdecode(name)} value is {len(value)} bytes, over {MAX_XATTR_VALUE}", where
            )
        listed += len(name) + 1
    if listed > XATTR_LIST_MAX:
        raise InvalidInputError(f"xattr names take {listed} bytes, over the kernel's {XATTR_LIST_MAX}", where)


def check_xattr_targets(node: Node, xattrs: dict[bytes, bytes], where: str) -> None:
    """Xattrs the kernel would refuse to read back from this kind of inode."""
    plain = isinstance(node, File | Directory)
    for name, value in xattrs.items():
        if name.startswith(b"user.") and not plain:
            raise InvalidInputError(
                f"{os.fsdecode(name)}: user.* xattrs are only allowed on regular files and directories", where
            )
        if name in ACL_NAMES:
            if isinstance(node, Symlink) or (name == ACL_NAMES[1] and not isinstance(node, Directory)):
                raise InvalidInputError(f"{os.fsdecode(name)} is not allowed on this file type", where)
            if len(value) < 4 or (len(value) - 4) % 8 or value[:4] != b"\x02\0\0\0":
                raise InvalidInputError(f"{os.fsdecode(name)} is not a POSIX ACL (version 2) value", where)
