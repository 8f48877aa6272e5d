"""Directory blocks: parse dirents and names, list a directory, look a name up.

Parsing follows the kernel's readdir checks (`12 <= dirent[0].nameoff < block size`, names
inside the block and i_size, at most 255 bytes) plus fsck's name rules (not empty, no '/' or
NUL), so every name handed out is a safe single path component. Lookup binary-searches blocks by
their first name and then the entries of one block, exactly like the kernel, so an unsorted
directory fails lookups the same way it does when mounted.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import NamedTuple

from ..errors import CorruptImageError
from ..format.constants import EROFS_NAME_LEN, FileType
from ..format.dirent import DIRENT, DIRENT_SIZE
from .data import InodeData
from .names import escape_name


class RawDirEntry(NamedTuple):
    """One directory entry with its on-disk name bytes."""

    name: bytes
    nid: int
    file_type: FileType


class BlockScan(NamedTuple):
    """What one directory block holds, and what is wrong with it (see `scan_block`)."""

    entries: list[tuple[bytes, int, int, int]]  # name, nid, raw file_type, dirent offset in the block
    problems: list[tuple[int, str, bool]]  # offset in the block, message, whether the block is refused


FT_MAX = 8  # file types from here on are invalid (the kernel reports them as DT_UNKNOWN)
# The kernel reports DT_UNKNOWN for values it does not know.
_FILE_TYPES = tuple(FileType(v) if v < FT_MAX else FileType.UNKNOWN for v in range(256))
_HEAD = DIRENT.struct  # the schema-derived codec, positionally: (nid, nameoff, file_type, reserved)
READ_PIECE = 1 << 20  # a directory is read at most this many bytes at a time


def scan_block(block: bytes, blksz: int) -> BlockScan:
    """Parse one directory block as fsck.erofs does, collecting problems instead of raising.

    `block` holds min(block size, i_size - start) bytes. The entries are those read before any
    structural problem. A problem is `refused` when the kernel's readdir or fsck.erofs rejects
    the block for it (the reader then raises); the others (a dirent[0].nameoff that is not a
    multiple of 12, an unknown file type) only `check` reports. This is the one directory
    parser: the reader, `check` and `dump` all go through it.
    """
    maxsize = len(block)
    if maxsize < DIRENT_SIZE:
        return BlockScan([], [(0, f"{maxsize} bytes cannot hold a dirent", True)])
    nameoff0 = _HEAD.unpack_from(block, 0)[1]
    if not DIRENT_SIZE <= nameoff0 < blksz or nameoff0 > maxsize:
        return BlockScan([], [(8, f"invalid dirent[0].nameoff {nameoff0}", True)])
    problems: list[tuple[int, str, bool]] = []
    if nameoff0 % DIRENT_SIZE:
        problems.append((8, f"dirent[0].nameoff {nameoff0} is not a multiple of {DIRENT_SIZE}", False))
    count = nameoff0 // DIRENT_SIZE
    heads = list(_HEAD.iter_unpack(block[: count * DIRENT_SIZE]))
    entries = []
    for k, (nid, start, ftype, _reserved) in enumerate(heads):
        if k + 1 < count:
            end = heads[k + 1][1]
        else:
            nul = block.find(b"\0", start, maxsize)
            end = maxsize if nul < 0 else nul
        if not 0 < end - start <= EROFS_NAME_LEN or end > maxsize:
            problems.append((k * DIRENT_SIZE + 8, f"dirent {k}: bad name length {end - start}", True))
            break
        name = block[start:end]
        if b"/" in name or b"\0" in name:
            problems.append((start, f"dirent {k}: name {escape_name(name)} contains '/' or NUL", True))
        if ftype >= FT_MAX:
            problems.append((k * DIRENT_SIZE + 10, f"dirent {k}: invalid file type {ftype}", False))
        entries.append((name, nid, ftype, k * DIRENT_SIZE))
    return BlockScan(entries, problems)


def parse_block(block: bytes, blksz: int, *, nid: int, blkno: int) -> list[RawDirEntry]:
    """The entries of one directory block, or CorruptImageError for a block the kernel refuses."""
    entries, problems = scan_block(block, blksz)
    for _offset, message, refused in problems:
        if refused:
            raise CorruptImageError(f"directory block {blkno}: {message}", nid=nid, area="directory")
    types = _FILE_TYPES
    return [RawDirEntry(name, child, types[ftype]) for name, child, ftype, _ in entries]


def block_count(data: InodeData, blksz: int) -> int:
    """Number of directory blocks (the last one may be partial)."""
    return -(-data.size // blksz)


def read_block(data: InodeData, blksz: int, blkno: int) -> list[RawDirEntry]:
    """Parse directory block `blkno`."""
    start = blkno * blksz
    raw = data.read(start, min(blksz, data.size - start))
    return parse_block(raw, blksz, nid=data.inode.nid, blkno=blkno)


def iter_blocks(data: InodeData, blksz: int) -> Iterator[tuple[int, bytes]]:
    """(block number, bytes) of every directory block, read up to READ_PIECE bytes at a time."""
    per_piece = max(1, READ_PIECE // blksz)
    for first in range(0, block_count(data, blksz), per_piece):
        start = first * blksz
        piece = data.read(start, min(per_piece * blksz, data.size - start))
        for pos in range(0, len(piece), blksz):
            yield first + pos // blksz, piece[pos : pos + blksz]


def iter_entries(data: InodeData, blksz: int) -> Iterator[RawDirEntry]:
    """Every entry of the directory in on-disk order, "." and ".." included."""
    nid = data.inode.nid
    for blkno, block in iter_blocks(data, blksz):
        yield from parse_block(block, blksz, nid=nid, blkno=blkno)


def lookup(data: InodeData, blksz: int, name: bytes) -> RawDirEntry | None:
    """Find `name` as the kernel does: binary search over blocks, then within one block."""
    head, back = 0, block_count(data, blksz) - 1
    candidate: list[RawDirEntry] | None = None
    while head <= back:
        mid = head + (back - head) // 2
        entries = read_block(data, blksz, mid)
        if name == entries[0].name:
            return entries[0]
        if name < entries[0].name:
            back = mid - 1
        else:
            head, candidate = mid + 1, entries
    if candidate is None:
        return None
    lo, hi = 1, len(candidate) - 1  # entry 0 was compared already
    while lo <= hi:
        mid = lo + (hi - lo) // 2
        here = candidate[mid].name
        if name == here:
            return candidate[mid]
        if name > here:
            lo = mid + 1
        else:
            hi = mid - 1
    return None
