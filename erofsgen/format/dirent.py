"""Directory entries: 12-byte records at the front of each directory block, names after them."""

from __future__ import annotations

import stat
from collections.abc import Sequence
from typing import NamedTuple

import construct as cs

from .codec import FixedCodec
from .constants import FileType

# struct erofs_dirent
Dirent = cs.Struct(
    "nid" / cs.Int64ul,
    "nameoff" / cs.Int16ul,  # offset of the name inside the block
    "file_type" / cs.Int8ul,
    "reserved" / cs.Int8ul,
)


class DirentRec(NamedTuple):
    nid: int
    nameoff: int
    file_type: int
    reserved: int


DIRENT = FixedCodec(Dirent, DirentRec)
DIRENT_SIZE = DIRENT.size

_MODE_TO_FT = {
    stat.S_IFREG: FileType.REG_FILE,
    stat.S_IFDIR: FileType.DIR,
    stat.S_IFCHR: FileType.CHRDEV,
    stat.S_IFBLK: FileType.BLKDEV,
    stat.S_IFIFO: FileType.FIFO,
    stat.S_IFSOCK: FileType.SOCK,
    stat.S_IFLNK: FileType.SYMLINK,
}


def file_type_of_mode(mode: int) -> FileType:
    return _MODE_TO_FT.get(stat.S_IFMT(mode), FileType.UNKNOWN)


def pack_dirent_block(entries: Sequence[tuple[bytes, int, int]], size: int) -> bytes:
    """One directory block from sorted (name, nid, file_type) entries, zero padded to `size`."""
    nameoff = DIRENT_SIZE * len(entries)
    if nameoff + sum(len(name) for name, _, _ in entries) > size:
        raise ValueError(f"directory entries overflow a {size}-byte block")
    block = bytearray(size)
    pack_into = DIRENT.struct.pack_into  # the schema-derived codec, positionally
    for i, (name, nid, ftype) in enumerate(entries):
        pack_into(block, i * DIRENT_SIZE, nid, nameoff, ftype, 0)
        block[nameoff : nameoff + len(name)] = name
        nameoff += len(name)
    return bytes(block)
