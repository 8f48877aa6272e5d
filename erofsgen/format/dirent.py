"""Directory entries: 12-byte records at the front of each directory block, names after them."""

from __future__ import annotations

import stat
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


def pack_dirent_block(entries: list[tuple[bytes, int, int]], size: int) -> bytes:
    """One directory block from sorted (name, nid, file_type) entries, zero padded to `size`."""
    nameoff = DIRENT_SIZE * len(entries)
    heads = []
    for name, nid, ftype in entries:
        heads.append(DIRENT.pack(DirentRec(nid, nameoff, ftype, 0)))
        nameoff += len(name)
    body = b"".join(heads) + b"".join(name for name, _, _ in entries)
    if len(body) > size:
        raise ValueError(f"directory block overflow: {len(body)} > {size}")
    return body + bytes(size - len(body))
