"""Compressed regular files (LZ4, LZ4HC): cut into extents by the data stage, placed like plain data.

The data stage reads the file once and cuts it into extents by output size: each extent is as
much data as compresses into one pcluster (one block), the compressed stream right-aligned in
it (0PADDING). An extent that would not hold more than a block of data is stored raw instead (a
PLAIN pcluster of one block of data), as mkfs.erofs does, and a file whose compression saves
nothing at all stays a plain file. The pclusters go to the spool, at an offset reserved on the
main thread, so nothing depends on which worker ran when; emit copies them to the file's blocks
and writes the map header and the lcluster index after the inode: compacted (COMPRESSED_COMPACT,
as mkfs.erofs) or full (COMPRESSED_FULL, 8 bytes per block of the file). See
specs/compression.md.
"""

from __future__ import annotations

import os
import threading
from array import array
from collections.abc import Callable
from typing import TYPE_CHECKING

from ..format.constants import Z_EROFS_LI_D0_CBLKCNT, DataLayout, LclusterType, MapAdvise
from ..format.zmap import (
    LCLUSTER_INDEX,
    MAP_HEADER,
    Lz4Config,
    MapHeaderRec,
    compact_index_size,
    compact_layout,
    encode_compacted_pack,
)
from .filecopy import copy_range
from .lz4dest import LZ4_MAX_DISTANCE, DestSizeCompressor
from .stored import Stored

if TYPE_CHECKING:
    from .plan import PlannedInode

_INDEX_PACK = LCLUSTER_INDEX.struct.pack
_HEADER = MAP_HEADER.pack(MapHeaderRec(0, 0, 0, 0, 0))  # LZ4 as HEAD1, one-block lclusters
_FULL_INDEX_GAP = bytes(8)  # the reserved bytes between the map header and the entries
FLUSH_BYTES = 1 << 20  # pclusters are written to the spool in pieces of about this size

Reader = Callable[[int], bytes]  # the next n bytes of the file (fewer only at its end)
SpoolWriter = Callable[[int, bytes, int], None]  # (spool descriptor, data, offset)


class CompressedData(Stored):
    """A regular file compressed by the data stage, or its `plain` form where that saves nothing."""

    __slots__ = (
        "_size",
        "blocks",
        "compact",
        "compressed",
        "heads",
        "nblocks",
        "pcluster",
        "plain",
        "spool_fd",
        "spool_offset",
        "starts",
    )
    file_data = True

    def __init__(
        self, plain: Stored, size: int, spool_fd: int, spool_offset: int, *, compact: bool, pcluster: int
    ) -> None:
        self.compact = compact  # compacted indexes (layout 3), else full ones (layout 1)
        self.pcluster = pcluster  # largest pcluster in bytes: above a block, big pclusters
        self.plain = plain  # how the file is stored if compression does not pay
        self._size = size
        self.spool_fd = spool_fd
        self.spool_offset = spool_offset  # room for ceil(size / block size) pclusters
        self.compressed = False  # decided by the data stage
        self.starts = array("Q")  # each extent's first byte in the file
        self.heads = bytearray()  # each extent's index type: LclusterType.HEAD1 or PLAIN
        self.nblocks = array("H")  # each extent's pcluster, in blocks
        self.blocks = 0

    @property
    def size(self) -> int:
        return self._size

    def index_bytes(self, plan: PlannedInode, block_size: int) -> int:
        """Record bytes after the xattr body: padding to 8, map header, then the index."""
        inode_end = plan.core_size + len(plan.xattr_body)  # records are 32-aligned: so is this
        pad = -inode_end % 8
        total = -(-self._size // block_size)
        if self.compact:
            return pad + len(_HEADER) + compact_index_size(compact_layout(inode_end, total, True), total)
        return pad + len(_HEADER) + len(_FULL_INDEX_GAP) + 8 * total

    def shape(self, plan: PlannedInode, block_size: int, may_inline: bool) -> None:
        if self.compressed:
            extra = self.index_bytes(plan, block_size)
            if self.blocks * block_size + extra < self._size:
                plan.layout = DataLayout.COMPRESSED_COMPACT if self.compact else DataLayout.COMPRESSED_FULL
                plan.nblocks = self.blocks
                plan.tail_size = 0
                plan.extra = extra
                return
            self.compressed = False  # its indexes eat the gain: plain after all
        plan.extra = 0
        self.plain.shape(plan, block_size, may_inline)

    def i_u(self, plan: PlannedInode) -> int:
        if self.compressed:
            return self.blocks  # a compressed inode's i_u counts its pcluster blocks
        return self.plain.i_u(plan)

    def write(
        self, fd: int, plan: PlannedInode, block_size: int, stop: threading.Event | None = None
    ) -> bytes:
        if not self.compressed:
            return self.plain.write(fd, plan, block_size, stop)
        copy_range(self.spool_fd, self.spool_offset, fd, plan.startblk * block_size, self.blocks * block_size)
        inode_end = plan.core_size + len(plan.xattr_body)
        pad = bytes(-inode_end % 8)
        big = self.pcluster > block_size
        entries = lcluster_entries(self.starts, self.heads, self.nblocks, self._size, block_size, big=big)
        advise = (MapAdvise.BIG_PCLUSTER_1 | MapAdvise.BIG_PCLUSTER_2) if big else 0
        if self.compact:
            header = MAP_HEADER.pack(MapHeaderRec(0, 0, MapAdvise.COMPACTED_2B | advise, 0, 0))
            return pad + header + compact_indexes(entries, inode_end, plan.startblk, big=big)
        header = MAP_HEADER.pack(MapHeaderRec(0, 0, advise, 0, 0))
        return pad + header + _FULL_INDEX_GAP + full_indexes(entries, plan.startblk)


# One per lcluster: (type, clusterofs, block offset of its pcluster) for heads,
# (NONHEAD, delta[0], delta[1]) for the others; with big pclusters the first NONHEAD after a head
# holds CBLKCNT | blocks as its delta[0].
Entry = tuple[int, int, int]


def lcluster_entries(
    starts: array[int], heads: bytearray, nblocks: array[int], size: int, lcluster: int, *, big: bool = False
) -> list[Entry]:
    """The logical index of extents starting at `starts`, their pclusters one after another.

    The lcluster holding EOF gets a PLAIN head of its own (clusterofs = size % lcluster, offset
    -1: block 0, never read) when the last extent began earlier.
    """
    total = -(-size // lcluster)
    head_lcns = [s // lcluster for s in starts]
    dummy = size % lcluster != 0 and head_lcns[-1] != total - 1
    entries: list[Entry] = []
    block = 0
    for j, start in enumerate(starts):
        head = head_lcns[j]
        last = j + 1 == len(starts)
        next_head = (total - 1 if dummy else total) if last else head_lcns[j + 1]
        entries.append((heads[j], start % lcluster, block))
        for lcn in range(head + 1, next_head):
            delta0 = Z_EROFS_LI_D0_CBLKCNT | nblocks[j] if big and lcn == head + 1 else lcn - head
            entries.append((LclusterType.NONHEAD, delta0, next_head - lcn))
        block += nblocks[j]
    if dummy:
        entries.append((LclusterType.PLAIN, size % lcluster, -1))
    assert len(entries) == total
    return entries


def full_indexes(entries: list[Entry], startblk: int) -> bytes:
    """Layout COMPRESSED_FULL: 8 bytes per lcluster, each head with its pcluster's block."""
    out = []
    for ltype, a, b in entries:
        if ltype == LclusterType.NONHEAD:
            out.append(_INDEX_PACK(ltype, 0, a | b << 16))
        else:
            out.append(_INDEX_PACK(ltype, a, startblk + b if b >= 0 else 0))
    return b"".join(out)


def compact_indexes(entries: list[Entry], inode_end: int, startblk: int, *, big: bool = False) -> bytes:
    """Layout COMPRESSED_COMPACT with 2-byte packs where they fit (COMPACTED_2B), as mkfs.erofs.

    No block address per entry: readers count back from a head to its pack's start. Without big
    pclusters a head's pcluster is base + 1 + the heads before it in the pack; with them, base +
    the blocks of the pclusters whose size marks (the CBLKCNT entry, or the head of a pcluster
    without one) come before it in the pack. Either way each pack's base follows from the
    pclusters marked before the pack. The last slot of a pack holds a NONHEAD's delta[1] instead
    of its delta[0], unless it is a CBLKCNT mark.
    """
    total = len(entries)
    geometry = compact_layout(inode_end, total, True)
    end_2b = geometry.initial_4b + geometry.compacted_2b
    bounds = [(0, geometry.initial_4b, 4), (geometry.initial_4b, end_2b, 2), (end_2b, total, 4)]
    lclusterbits = 0  # only its floor of 12 matters here (lobits = max(lclusterbits, 12))
    packs = []
    marked = 0  # blocks of the pclusters marked before the current pack
    for first, end, unit in bounds:
        vcnt = 2 if unit == 4 else 16
        for at in range(first, min(end, total), vcnt):
            slots = entries[at : at + vcnt]
            values = []
            for i, (ltype, a, b) in enumerate(slots):
                if ltype == LclusterType.NONHEAD and i == vcnt - 1 and not a & Z_EROFS_LI_D0_CBLKCNT:
                    values.append((ltype, min(b, 0x7FF)))
                else:
                    values.append((ltype, a))
            while len(values) < vcnt:
                values.append((0, 0))  # a half-filled final pack
            base = startblk + marked if big else startblk + marked - 1
            packs.append(encode_compacted_pack(values, base, unit, lclusterbits))
            for n, (ltype, a, b) in enumerate(slots):
                if ltype == LclusterType.NONHEAD:
                    if a & Z_EROFS_LI_D0_CBLKCNT:
                        marked += a & ~Z_EROFS_LI_D0_CBLKCNT
                elif b >= 0 and not (big and _followed_by_mark(entries, at + n)):
                    marked += 1  # a one-block pcluster: its head is its mark
    out = b"".join(packs)
    assert len(out) == compact_index_size(geometry, total)
    return out


def _followed_by_mark(entries: list[Entry], lcn: int) -> bool:
    return lcn + 1 < len(entries) and entries[lcn + 1][0] == LclusterType.NONHEAD


def compression_configs(pcluster_size: int, block_size: int) -> bytes:
    """The COMPR_CFGS records after the superblock: needed only for big pclusters (LZ4 only)."""
    if pcluster_size <= block_size:
        return b""
    record: bytes = Lz4Config.build(
        {
            "max_distance": LZ4_MAX_DISTANCE,
            "max_pclusterblks": pcluster_size // block_size,
            "reserved": bytes(10),
        }
    )
    return len(record).to_bytes(2, "little") + record


def compress_file(
    form: CompressedData,
    read: Reader,
    compress: DestSizeCompressor,
    block_size: int,
    spool_write: SpoolWriter,
    abort: threading.Event,
) -> None:
    """Cut the file into extents and write their pclusters to the spool (the data stage's job).

    Reads at most a window ahead: an LZ4 block never holds more than about 255 times its size,
    and extents stay within 1024 lclusters (NONHEAD deltas then never reach the CBLKCNT bit).
    A pcluster takes as many blocks as its stream needs, up to `form.pcluster` bytes.
    """
    size = form.size
    capacity = form.pcluster
    window = min(255 * capacity, 1024 * block_size)  # deltas stay far below CBLKCNT (2048)
    buffer = b""  # file bytes from `pos - off`; refilled a few windows at a time
    off = 0
    pos = 0
    out = bytearray()
    written = 0
    starts, heads = form.starts, form.heads
    while pos < size:
        if abort.is_set():
            return
        want = min(window, size - pos)
        if len(buffer) - off < want:
            more = read(min(4 * window, size - pos) - (len(buffer) - off))
            buffer = buffer[off:] + more
            off = 0
            if len(buffer) < want:
                raise AssertionError("the reader ended before the file's size")
        stream, used = compress(buffer, off, off + want, capacity) if want > block_size else (b"", 0)
        blocks = -(-len(stream) // block_size)
        starts.append(pos)
        if used > blocks * block_size:
            heads.append(LclusterType.HEAD1)
            form.nblocks.append(blocks)
            out += bytes(blocks * block_size - len(stream))
            out += stream
        else:  # no block saved: this extent is one block of raw data
            used = min(block_size, want)
            heads.append(LclusterType.PLAIN)
            form.nblocks.append(1)
            out += buffer[off : off + used]
            out += bytes(block_size - used)
        off += used
        pos += used
        if len(out) >= FLUSH_BYTES:
            spool_write(form.spool_fd, bytes(out), form.spool_offset + written)
            written += len(out)
            out.clear()
    if out:
        spool_write(form.spool_fd, bytes(out), form.spool_offset + written)
    form.blocks = sum(form.nblocks)
    form.compressed = any(h == LclusterType.HEAD1 for h in heads)


def spool_reader(fd: int, offset: int) -> Reader:
    """Sequential reads of data already in the spool."""
    pos = offset

    def read(n: int) -> bytes:
        nonlocal pos
        data = os.pread(fd, n, pos)
        pos += len(data)
        return data

    return read
