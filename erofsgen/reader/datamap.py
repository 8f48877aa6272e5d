"""Map file offsets of uncompressed inodes (flat, inline, chunk-based) to device bytes.

Mirrors the kernel's `erofs_map_blocks`: flat data is one contiguous block run from `startblk`
(FLAT_INLINE keeps the last partial block right after the inode); chunk-based data looks up
one block-map entry or chunk index per chunk, where a NULL address is a hole read as zeros.
"""

from __future__ import annotations

from dataclasses import dataclass

from ..errors import CorruptImageError
from ..format.chunk import CHUNK_BLOCK_MAP_ENTRY, CHUNK_INDEX
from ..format.constants import EROFS_NULL_ADDR, ChunkFormat, DataLayout, FeatureIncompat
from ..format.device import device_id_mask
from .inode import InodeInfo
from .storage import Storage
from .superblock import SuperblockInfo


@dataclass(frozen=True)
class Segment:
    """A run of file bytes [logical, logical + length) stored contiguously (or a hole)."""

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
