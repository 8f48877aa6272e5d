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


def _file_type(value: int) -> FileType:
    try:
        return FileType(value)
    except ValueError:
        return FileType.UNKNOWN  # the kernel reports DT_UNKNOWN for values it does not know


def parse_block(block: bytes, blksz: int, *, nid: int, blkno: int) -> list[RawDirEntry]:
    """The entries of one directory block; `block` holds min(block size, i_size - start) bytes."""
    maxsize = len(block)

    def corrupt(message: str) -> CorruptImageError:
        return CorruptImageError(f"directory block {blkno}: {message}", nid=nid, area="directory")

    first = DIRENT.unpack(block, 0, area="dirent")
    if not DIRENT_SIZE <= first.nameoff < blksz or first.nameoff > maxsize:
        raise corrupt(f"invalid dirent[0].nameoff {first.nameoff}")
    count = first.nameoff // DIRENT_SIZE
    heads = [DIRENT.unpack(block, k * DIRENT_SIZE, area="dirent") for k in range(count)]
    entries = []
    for k, head in enumerate(heads):
        start = head.nameoff
        if k + 1 < count:
            end = heads[k + 1].nameoff
        else:
            nul = block.find(b"\0", start, maxsize)
            end = maxsize if nul < 0 else nul
        if start < first.nameoff or not 0 < end - start <= EROFS_NAME_LEN or end > maxsize:
            raise corrupt(f"entry {k}: bad name span [{start}, {end})")
        name = block[start:end]
        if b"/" in name or b"\0" in name:
            raise corrupt(f"entry {k}: name {escape_name(name)} contains '/' or NUL")
        entries.append(RawDirEntry(name, head.nid, _file_type(head.file_type)))
    return entries


def block_count(data: InodeData, blksz: int) -> int:
    """Number of directory blocks (the last one may be partial)."""
    return -(-data.size // blksz)


def read_block(data: InodeData, blksz: int, blkno: int) -> list[RawDirEntry]:
    """Parse directory block `blkno`."""
    start = blkno * blksz
    raw = data.read(start, min(blksz, data.size - start))
    return parse_block(raw, blksz, nid=data.inode.nid, blkno=blkno)


def iter_entries(data: InodeData, blksz: int) -> Iterator[RawDirEntry]:
    """Every entry of the directory in on-disk order, "." and ".." included."""
    for blkno in range(block_count(data, blksz)):
        yield from read_block(data, blksz, blkno)


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
