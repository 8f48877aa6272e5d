"""Chunk-based inodes: a 4-byte block map or 8-byte chunk indexes after the inode."""

from __future__ import annotations

from typing import NamedTuple

import construct as cs

from .codec import FixedCodec
from .constants import ChunkFormat

# Without ChunkFormat.INDEXES: one block address per chunk (primary device), NULL = hole.
ChunkBlockMapEntry = cs.Struct("blkaddr" / cs.Int32ul)

# struct erofs_inode_chunk_index
ChunkIndex = cs.Struct(
    "startblk_hi" / cs.Int16ul,  # 48BIT chunk format only; 0 otherwise
    "device_id" / cs.Int16ul,  # 0 = primary, k = device slot k - 1
    "startblk_lo" / cs.Int32ul,  # NULL = hole
)


class ChunkBlockMapEntryRec(NamedTuple):
    blkaddr: int


class ChunkIndexRec(NamedTuple):
    startblk_hi: int
    device_id: int
    startblk_lo: int


CHUNK_BLOCK_MAP_ENTRY = FixedCodec(ChunkBlockMapEntry, ChunkBlockMapEntryRec)
CHUNK_INDEX = FixedCodec(ChunkIndex, ChunkIndexRec)


def chunk_format(chunkbits: int, blkszbits: int, *, indexes: bool) -> int:
    """i_u for a chunk-based inode."""
    fmt = (chunkbits - blkszbits) & ChunkFormat.BLKBITS_MASK
    return fmt | (ChunkFormat.INDEXES if indexes else 0)


def chunk_entry_size(fmt: int) -> int:
    return CHUNK_INDEX.size if fmt & ChunkFormat.INDEXES else CHUNK_BLOCK_MAP_ENTRY.size


def chunk_array_offset(inode_end: int, fmt: int) -> int:
    """Absolute offset of the chunk array: the inode end rounded up to the entry size."""
    unit = chunk_entry_size(fmt)
    return (inode_end + unit - 1) // unit * unit
