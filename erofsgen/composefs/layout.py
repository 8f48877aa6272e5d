"""mkcomposefs 1.0.8's layout: inode order, cores, xattr sharing, inline tails and padding.

Everything here is decided before a byte is written (libcomposefs's compute_* pass); image.py
writes it and checks each area lands where this said. The rules, in order:

* inodes breadth first from the root, entries in bytewise name order, hard links not counted;
  i_ino is the position in that order; a directory's nlink is 2 + its subdirectories;
* each inode's xattrs sorted by name; a (name, value) pair on more than one inode is shared
  (at most 128 per inode), the shared table sorted by name, value length and value, all
  descending;
* the superblock's build time is the smallest mtime; an inode is compact when its mtime is that
  one and its nlink, uid, gid (16 bits) and size (32 bits) fit;
* records run on from byte 1152 on 32-byte slots; padding before a record keeps its inline tail
  inside one block (symlinks: the whole record), or the tail goes to a data block instead.
"""

from __future__ import annotations

import functools
import stat
from collections import Counter, deque
from dataclasses import dataclass, field

from ..format.constants import EROFS_SUPER_OFFSET
from ..format.dirent import DIRENT_SIZE
from ..format.inode import INODE_COMPACT, INODE_EXTENDED
from ..format.xattr import xattr_filter_bit
from .prepare import Inode, Link, Prepared, chunking

BLOCK = 4096
SLOT = 32
META_START = EROFS_SUPER_OFFSET + 128  # the root's record follows the superblock
MAX_SHARED = 128  # EROFS_XATTR_LONG_PREFIX: mkcomposefs shares at most this many per inode
_U16 = 0xFFFF
_U32 = 0xFFFFFFFF
# mkcomposefs's prefix table: prefixes matched in this order, `system.posix_acl_*` as prefixes too
_PREFIXES = (
    (b"user.", 1),
    (b"system.posix_acl_access", 2),
    (b"system.posix_acl_default", 3),
    (b"trusted.", 4),
    (b"security.", 6),
)
ACL_NAMES = (b"system.posix_acl_access", b"system.posix_acl_default")


@functools.lru_cache(maxsize=4096)
def name_index(name: bytes) -> tuple[int, bytes]:
    """(e_name_index, suffix) as mkcomposefs encodes an xattr name (few names repeat a lot)."""
    for prefix, index in _PREFIXES:
        if name.startswith(prefix):
            return index, name[len(prefix) :]
    return 0, name


@functools.lru_cache(maxsize=4096)
def filter_bit(name: bytes) -> int:
    """The name's bit in the xattr bloom filter (h_name_filter)."""
    return 1 << xattr_filter_bit(*name_index(name))


def entry_size(name: bytes, value: bytes) -> int:
    return (4 + len(name_index(name)[1]) + len(value) + 3) & ~3


@dataclass(eq=False, slots=True)
class Record:
    """An inode's place and shape in the image."""

    inode: Inode
    ino: int
    xattrs: list[tuple[bytes, bytes]]  # sorted by name
    shared: list[int] = field(default_factory=list)  # byte offsets in the shared table
    inline: list[tuple[bytes, bytes]] = field(default_factory=list)
    compact: bool = True
    n_blocks: int = 0
    tail: int = 0
    pad: int = 0  # bytes before the record
    offset: int = 0  # absolute byte offset of the record (nid * 32)
    xattr_size: int = 0
    chunk_format: int = -1  # chunk-based files: chunk bits - 12
    chunk_count: int = 0
    dirents: list[bytes] | None = None  # directories: dirent blocks, filled when written

    @property
    def nid(self) -> int:
        return self.offset // SLOT

    @property
    def core_size(self) -> int:
        return INODE_COMPACT.size if self.compact else INODE_EXTENDED.size

    @property
    def size(self) -> int:
        """The i_size this record stores."""
        ftype = self.inode.file_type
        if ftype == stat.S_IFDIR:
            return self.n_blocks * BLOCK + self.tail
        if ftype == stat.S_IFREG:
            return self.inode.size
        if ftype == stat.S_IFLNK:
            return self.tail if self.n_blocks == 0 else self.inode.size
        return 0


@dataclass(slots=True)
class Layout:
    version: int
    records: list[Record]  # BFS order = record order
    by_inode: dict[int, Record]
    shared: list[tuple[bytes, bytes]]  # the shared table, in order
    shared_size: int
    build_time: tuple[int, int]  # (seconds, nanoseconds)
    has_acl: bool
    inodes_end: int
    data_start: int  # byte offset of the first data block
    n_data_blocks: int

    def record_of(self, target: Inode | Link) -> Record:
        inode = target.target if isinstance(target, Link) else target
        return self.by_inode[id(inode)]


def _bfs(root: Inode) -> list[Inode]:
    order = [root]
    queue = deque([root])
    while queue:
        inode = queue.popleft()
        for _, child in inode.entries or ():
            if isinstance(child, Inode):
                order.append(child)
                if child.entries is not None:
                    queue.append(child)
    return order


def _dir_shape(inode: Inode) -> tuple[int, int]:
    """Full blocks and inline tail of a directory (entries never straddle blocks)."""
    assert inode.entries is not None
    n_blocks = used = 0
    for name, _ in inode.entries:
        size = DIRENT_SIZE + len(name)
        if used + size > BLOCK:
            n_blocks += 1
            used = 0
        used += size
    if used > BLOCK // 2:  # never more than half a block inline
        return n_blocks + 1, 0
    return n_blocks, used


def _shape(rec: Record) -> None:
    """Blocks and tail before padding (compute_erofs_inode_size)."""
    inode = rec.inode
    ftype = inode.file_type
    if ftype == stat.S_IFDIR:
        rec.n_blocks, rec.tail = _dir_shape(inode)
    elif ftype == stat.S_IFLNK:
        assert inode.payload is not None
        rec.tail = len(inode.payload)
    elif ftype == stat.S_IFREG and inode.size > 0:
        if inode.content is not None:
            rec.n_blocks, rec.tail = divmod(inode.size, BLOCK)
            if rec.tail > BLOCK // 2:
                rec.n_blocks, rec.tail = rec.n_blocks + 1, 0
        else:
            bits, rec.chunk_count = chunking(inode.size)
            rec.chunk_format = bits - 12
            rec.tail = 4 * rec.chunk_count


def _fits_compact(rec: Record, build_time: tuple[int, int]) -> bool:
    inode = rec.inode
    if (inode.mtime_sec, inode.mtime_nsec) != build_time:
        return False
    if max(inode.nlink, inode.uid, inode.gid) > _U16:
        return False
    size = rec.n_blocks * BLOCK + rec.tail if inode.file_type == stat.S_IFDIR else inode.size
    return size <= _U32


def _pad_for_tail(rec: Record, pos: int) -> int:
    """Padding before the record so its tail stays in one block; may move the tail to a block."""
    head = rec.core_size + rec.xattr_size
    total = head + rec.tail
    if rec.inode.file_type == stat.S_IFLNK:
        # The whole record in one block; a target that cannot fit goes to a data block, but
        # the padding is still decided on the record as it was (as mkcomposefs does).
        if total // BLOCK > 0:
            rec.n_blocks += 1
            rec.tail = 0
        if pos // BLOCK != (pos + total - 1) // BLOCK:
            return -pos % BLOCK
        return 0
    room = BLOCK - (pos + head) % BLOCK
    if room < rec.tail:
        pad = -(-room // SLOT) * SLOT
        room = BLOCK - (pos + head + pad) % BLOCK
        if rec.tail <= room:
            return pad
        rec.n_blocks += 1
        rec.tail = 0
        return -pos % BLOCK
    return 0


def _share(records: list[Record]) -> tuple[list[tuple[bytes, bytes]], int]:
    """The shared table (pairs on more than one inode) and each record's shared/inline split."""
    counts = Counter(pair for rec in records for pair in rec.xattrs)
    table = sorted(
        (pair for pair, n in counts.items() if n > 1),
        key=lambda p: (p[0], len(p[1]), p[1]),
        reverse=True,
    )
    offsets: dict[tuple[bytes, bytes], int] = {}
    at = 0
    for pair in table:
        offsets[pair] = at
        at += entry_size(*pair)
    for rec in records:
        for pair in rec.xattrs:
            offset = offsets.get(pair)
            if offset is not None and len(rec.shared) < MAX_SHARED:
                rec.shared.append(offset)
            else:
                rec.inline.append(pair)
        if rec.xattrs:
            body = 12 + 4 * len(rec.shared) + sum(entry_size(*p) for p in rec.inline)
            rec.xattr_size = (body + 3) & ~3
    return table, at


def plan(prepared: Prepared) -> Layout:
    """Place every record, the shared xattrs and the data blocks."""
    order = _bfs(prepared.root)
    records = []
    by_inode: dict[int, Record] = {}
    has_acl = False
    for ino, inode in enumerate(order):
        if inode.entries is not None:
            inode.nlink = 2 + sum(
                1 for _, c in inode.entries if isinstance(c, Inode) and c.entries is not None
            )
        rec = Record(inode, ino, sorted(inode.xattrs.items()))
        has_acl = has_acl or any(name in inode.xattrs for name in ACL_NAMES)
        records.append(rec)
        by_inode[id(inode)] = rec
    build_time = min((i.mtime_sec, i.mtime_nsec) for i in order)
    shared, shared_size = _share(records)
    pos = META_START
    n_data_blocks = 0
    for rec in records:
        _shape(rec)
        rec.compact = _fits_compact(rec, build_time)
        start = -(-pos // SLOT) * SLOT
        extra = _pad_for_tail(rec, start)
        rec.pad = start - pos + extra
        rec.offset = start + extra
        pos = rec.offset + rec.core_size + rec.xattr_size + rec.tail
        n_data_blocks += rec.n_blocks
    inodes_end = -(-pos // SLOT) * SLOT
    data_start = -(-(inodes_end + shared_size) // BLOCK) * BLOCK
    return Layout(
        prepared.version,
        records,
        by_inode,
        shared,
        shared_size,
        build_time,
        has_acl,
        inodes_end,
        data_start,
        n_data_blocks,
    )
