"""Packing inode records into the metadata area with as little padding as possible.

A record with inline data must sit inside one block (the kernel refuses inline data that
crosses a block, and old kernels want a fast symlink's whole record in one block). Records
without inline data may straddle blocks. So: rigid records go into blocks best-fit decreasing;
then the others fill the gaps best-fit; whatever is left runs on contiguously after the last
block, behind the shared xattr area, which must start on a block boundary.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from ..format.constants import EROFS_INODE_SLOT_SIZE

SLOT = EROFS_INODE_SLOT_SIZE


@dataclass(frozen=True, slots=True)
class Packed:
    offsets: list[int]  # absolute byte offset of each record, in input order
    shared_offset: int  # where the shared xattr area starts (a block boundary)
    end: int  # first byte after all metadata


def _aligned(size: int) -> int:
    return -(-size // SLOT) * SLOT


class _Blocks:
    """Blocks holding rigid records, bucketed by free space (in slots) for best-fit lookups.

    `nonempty` has bit k set while bucket k holds a block, so a lookup is one bit operation
    instead of a scan over every bucket.
    """

    def __init__(self, first_offset: int, block_size: int) -> None:
        self.bs = block_size
        self.fill: list[int] = []  # next free byte of each block
        self.buckets: list[list[int]] = [[] for _ in range(block_size // SLOT + 1)]
        self.nonempty = 0
        self.first_block = first_offset // block_size
        self.fill.append(_aligned(first_offset))
        self._file(0)

    def _file(self, index: int) -> None:
        k = ((self.first_block + index + 1) * self.bs - self.fill[index]) // SLOT
        self.buckets[k].append(index)
        self.nonempty |= 1 << k

    def place(self, size: int, *, may_open: bool) -> int | None:
        """Offset for `size` bytes in the fullest block that has room, opening one if allowed."""
        need = -(-size // SLOT)
        fitting = self.nonempty >> need
        if fitting:
            k = need + (fitting & -fitting).bit_length() - 1
            bucket = self.buckets[k]
            index = bucket.pop()
            if not bucket:
                self.nonempty &= ~(1 << k)
        else:
            if not may_open or need * SLOT > self.bs:
                return None
            index = len(self.fill)
            self.fill.append((self.first_block + index) * self.bs)
        offset = self.fill[index]
        self.fill[index] += need * SLOT
        self._file(index)
        return offset

    @property
    def end(self) -> int:
        return (self.first_block + len(self.fill)) * self.bs


def pack_records(
    sizes: Sequence[int], rigid: Sequence[int], meta_start: int, block_size: int, shared_size: int
) -> Packed:
    """Offsets for every record; the first record (the root) is placed first so its nid is small.

    `sizes[i]` is record i's size in bytes and `rigid[i]` whether it must stay inside one block
    (compact sequences, such as an array and bytes, keep a large tree's planning small).
    """
    offsets = [-1] * len(sizes)
    if rigid[0]:
        blocks = _Blocks(meta_start, block_size)
        root = blocks.place(sizes[0], may_open=True)
        assert root is not None
        offsets[0] = root
    else:  # it may straddle blocks: put it right at the start, the blocks begin after it
        offsets[0] = _aligned(meta_start)
        blocks = _Blocks(offsets[0] + _aligned(sizes[0]), block_size)
    for i in sorted((i for i in range(1, len(sizes)) if rigid[i]), key=lambda i: -sizes[i]):
        placed = blocks.place(sizes[i], may_open=True)
        assert placed is not None
        offsets[i] = placed
    for i, size in enumerate(sizes):
        if offsets[i] < 0:
            placed = blocks.place(size, may_open=False)
            if placed is not None:
                offsets[i] = placed
    shared_offset = blocks.end
    cursor = _aligned(shared_offset + shared_size)
    for i, size in enumerate(sizes):
        if offsets[i] < 0:
            offsets[i] = cursor
            cursor += _aligned(size)
    return Packed(offsets, shared_offset, cursor)
