"""Map file offsets of uncompressed inodes (flat, inline, chunk-based) to device bytes.

Mirrors the kernel's `erofs_map_blocks`: flat data is one contiguous block run from `startblk`
(FLAT_INLINE keeps the last partial block right after the inode); chunk-based data looks up
one block-map entry or chunk index per chunk, where a NULL address is a hole read as zeros.
"""

from __future__ import annotations

import struct
from collections.abc import Iterator
from typing import NamedTuple

from ..errors import CorruptImageError
from ..format.chunk import CHUNK_BLOCK_MAP_ENTRY, CHUNK_INDEX
from ..format.constants import EROFS_NULL_ADDR, ChunkFormat, DataLayout, FeatureIncompat
from ..format.device import device_id_mask
from .inode import InodeInfo
from .storage import Storage
from .superblock import SuperblockInfo


class Segment(NamedTuple):
    """A run of file bytes [logical, logical + length) stored contiguously (or a hole).

    A NamedTuple: extraction maps every file, so construction must be cheap.
    """

    logical: int
    length: int
    device: int | None  # storage device index (0 = primary); None = hole, reads as zeros
    physical: int  # byte offset on that device
    inline: bool = False  # FLAT_INLINE tail inside the metadata block

    @property
    def end(self) -> int:
        """The file offset just past this segment."""
        return self.logical + self.length


def _redirected_run(storage: Storage, seg: Segment, offset: int, nid: int) -> Segment:
    """With extra devices given, primary blocks in a device's unified range live on that device."""
    bs = storage.blksz
    block = (seg.physical + (offset - seg.logical)) // bs
    device, phys = storage.locate(0, block, nid=nid)
    if device == 0 and phys == block * bs:
        return seg
    start = offset - offset % bs
    return Segment(start, min(bs, seg.end - start), device, phys)


def map_flat(storage: Storage, sb: SuperblockInfo, inode: InodeInfo, offset: int) -> Segment:
    """The segment of a FLAT_PLAIN/FLAT_INLINE inode that holds byte `offset` (< i_size)."""
    bs = sb.block_size
    nblocks = -(-inode.size // bs)
    tail = inode.layout == DataLayout.FLAT_INLINE
    lastblk = nblocks - 1 if tail else nblocks
    if offset < lastblk * bs:
        startblk = inode.startblk if inode.startblk is not None else EROFS_NULL_ADDR
        if startblk == EROFS_NULL_ADDR and not tail:
            # 6.15+ kernels: a FLAT_PLAIN inode without a start block reads as zeros.
            return Segment(0, lastblk * bs, None, 0)
        seg = Segment(0, lastblk * bs, 0, startblk * bs)
        if storage.slots and not storage.flat_mode:
            return _redirected_run(storage, seg, offset, inode.nid)
        return seg
    if not tail or inode.inline_offset is None:
        raise CorruptImageError(f"offset {offset} has no data block", nid=inode.nid, area="flat data")
    if inode.inline_offset % bs + inode.inline_size > bs:
        raise CorruptImageError(
            "inline data cross block boundary", nid=inode.nid, offset=inode.inline_offset, area="inline data"
        )
    return Segment(lastblk * bs, inode.inline_size, 0, inode.inline_offset, inline=True)


def chunk_entry(storage: Storage, sb: SuperblockInfo, inode: InodeInfo, index: int) -> tuple[int, int]:
    """(device_id, blkaddr) of chunk `index`; blkaddr EROFS_NULL_ADDR is a hole."""
    assert inode.chunk_array_offset is not None and inode.chunk_format is not None
    unit = inode.chunk_entry_size
    pos = inode.chunk_array_offset + index * unit
    raw = storage.read(pos, unit, area="chunk array", nid=inode.nid)
    if not inode.chunk_format & ChunkFormat.INDEXES:
        return 0, CHUNK_BLOCK_MAP_ENTRY.unpack(raw, area="chunk block map").blkaddr
    rec = CHUNK_INDEX.unpack(raw, area="chunk index")
    ndev = sb.extra_devices if sb.has(FeatureIncompat.DEVICE_TABLE) else 0
    return rec.device_id & device_id_mask(ndev), rec.startblk_lo


def map_chunk(storage: Storage, sb: SuperblockInfo, inode: InodeInfo, offset: int) -> Segment:
    """The chunk of a CHUNK_BASED inode that holds byte `offset` (< i_size)."""
    assert inode.chunkbits is not None
    index = offset >> inode.chunkbits
    if index >= inode.chunk_count:
        raise CorruptImageError(f"chunk {index} beyond the chunk array", nid=inode.nid, area="chunk array")
    start = index << inode.chunkbits
    length = min(1 << inode.chunkbits, inode.size - start)
    device_id, blkaddr = chunk_entry(storage, sb, inode, index)
    if blkaddr == EROFS_NULL_ADDR:
        return Segment(start, length, None, 0)
    device, phys = storage.locate(device_id, blkaddr, nid=inode.nid)
    return Segment(start, length, device, phys)


def check_bounds(storage: Storage, sb: SuperblockInfo, inode: InodeInfo) -> None:
    """Refuse an uncompressed inode whose block run or chunk array lies beyond the image.

    Checked up front so an absurd i_size fails at once instead of after reading gigabytes.
    """
    bs = sb.block_size
    if inode.layout == DataLayout.CHUNK_BASED:
        assert inode.chunk_array_offset is not None
        end = inode.chunk_array_offset + inode.chunk_count * inode.chunk_entry_size
        what = "chunk array"
    else:
        nblocks = -(-inode.size // bs) - (1 if inode.layout == DataLayout.FLAT_INLINE and inode.size else 0)
        if (
            inode.startblk in (None, EROFS_NULL_ADDR)
            or nblocks <= 0
            or (storage.slots and not storage.flat_mode)
        ):
            return
        assert inode.startblk is not None
        end = (inode.startblk + nblocks) * bs
        what = "data blocks"
    if end > storage.primary_size:
        raise CorruptImageError(
            f"{what} of a {inode.size}-byte file end at {end:#x}, beyond the image",
            nid=inode.nid,
            area=what,
        )


def map_uncompressed(storage: Storage, sb: SuperblockInfo, inode: InodeInfo, offset: int) -> Segment:
    """Dispatch on the layout of an uncompressed inode."""
    if inode.layout == DataLayout.CHUNK_BASED:
        return map_chunk(storage, sb, inode, offset)
    return map_flat(storage, sb, inode, offset)


_ENTRY_PIECE = 1 << 20  # chunk arrays are read at most this many bytes at a time
_BLOCK_MAP = struct.Struct("<I")
_INDEX = CHUNK_INDEX.struct  # (startblk_hi, device_id, startblk_lo), the schema-derived codec


def iter_chunk_entries(storage: Storage, inode: InodeInfo) -> Iterator[tuple[int, int, int, int]]:
    """(index, absolute offset, raw device_id, blkaddr) of every chunk entry, read in pieces."""
    assert inode.chunk_array_offset is not None and inode.chunk_format is not None
    unit = inode.chunk_entry_size
    indexes = bool(inode.chunk_format & ChunkFormat.INDEXES)
    per_piece = _ENTRY_PIECE // unit
    for first in range(0, inode.chunk_count, per_piece):
        count = min(per_piece, inode.chunk_count - first)
        start = inode.chunk_array_offset + first * unit
        raw = storage.read(start, count * unit, area="chunk array", nid=inode.nid)
        if indexes:
            for k, (_hi, device_id, blkaddr) in enumerate(_INDEX.iter_unpack(raw)):
                yield first + k, start + k * unit, device_id, blkaddr
        else:
            for k, (blkaddr,) in enumerate(_BLOCK_MAP.iter_unpack(raw)):
                yield first + k, start + k * unit, 0, blkaddr


def iter_segments(storage: Storage, sb: SuperblockInfo, inode: InodeInfo) -> Iterator[Segment]:
    """All data of an uncompressed inode as maximal runs in file order, holes included.

    Adjacent chunks stored contiguously on one device become one segment, so a copy moves
    each run at once; segment lengths never pass i_size.
    """
    size = inode.size
    if not size:
        return
    if inode.layout == DataLayout.CHUNK_BASED:
        yield from _chunk_segments(storage, sb, inode)
        return
    if storage.slots and not storage.flat_mode:  # blocks may be redirected one by one
        pos = 0
        while pos < size:
            seg = map_flat(storage, sb, inode, pos)
            if seg.end <= pos:
                raise CorruptImageError("mapping makes no progress", nid=inode.nid, area="flat data")
            yield Segment(seg.logical, min(seg.end, size) - seg.logical, seg.device, seg.physical, seg.inline)
            pos = seg.end
        return
    bs = sb.block_size
    whole = -(-size // bs) * bs
    if inode.layout == DataLayout.FLAT_INLINE:
        whole -= bs
    if whole > 0:
        seg = map_flat(storage, sb, inode, 0)
        yield Segment(0, min(whole, size), seg.device, seg.physical)
    if whole < size:
        yield map_flat(storage, sb, inode, whole)


def _chunk_segments(storage: Storage, sb: SuperblockInfo, inode: InodeInfo) -> Iterator[Segment]:
    assert inode.chunkbits is not None
    bits, size, nid = inode.chunkbits, inode.size, inode.nid
    mask = device_id_mask(sb.extra_devices if sb.has(FeatureIncompat.DEVICE_TABLE) else 0)
    run_start = run_end = run_phys = 0
    run_device: int | None = None
    for index, _offset, device_id, blkaddr in iter_chunk_entries(storage, inode):
        start = index << bits
        end = min(start + (1 << bits), size)
        if blkaddr == EROFS_NULL_ADDR:
            device, phys = None, 0
        else:
            device, phys = storage.locate(device_id & mask, blkaddr, nid=nid)
        if (
            device == run_device
            and run_end > run_start
            and (device is None or run_phys + run_end - run_start == phys)
        ):
            run_end = end
            continue
        if run_end > run_start:
            yield Segment(run_start, run_end - run_start, run_device, run_phys)
        run_start, run_end, run_device, run_phys = start, end, device, phys
    if run_end > run_start:
        yield Segment(run_start, run_end - run_start, run_device, run_phys)
