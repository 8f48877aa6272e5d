"""Packing inode records into the metadata area with as little padding as possible.

A record with inline data must sit inside one block (the kernel refuses inline data that
crosses a block, and old kernels want a fast symlink's whole record in one block). Records
without inline data may straddle blocks. So: rigid records go into blocks best-fit decreasing;
then the others fill the gaps best-fit; whatever is left runs on contiguously after the last
block, behind the shared xattr area, which must start on a block boundary. A `front` gap (the
rest of block 0 after the root's record, before the data area) is filled like any block.
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
    """Regions (blocks, or the front gap) holding records, bucketed by free slots for best fit.

    `nonempty` has bit k set while bucket k holds a region, so a lookup is one bit operation
    instead of a scan over every bucket. Blocks are opened from `start` on, one at a time.
    """

    def __init__(self, start: int, block_size: int, front: tuple[int, int] | None) -> None:
        self.bs = block_size
        self.fill: list[int] = []  # next free byte of each region
        self.limit: list[int] = []  # end of each region
        self.buckets: list[list[int]] = [[] for _ in range(block_size // SLOT + 1)]
        self.nonempty = 0
        self.next = _aligned(start)  # where the next block opens (mid-block for the first)
        if front is not None and _aligned(front[0]) < front[1]:
            self._add(_aligned(front[0]), front[1])

    def _add(self, start: int, end: int) -> int:
        self.fill.append(start)
        self.limit.append(end)
        index = len(self.fill) - 1
        self._file(index)
        return index

    def _file(self, index: int) -> None:
        k = (self.limit[index] - self.fill[index]) // SLOT
        self.buckets[k].append(index)
        self.nonempty |= 1 << k

    def place(self, size: int, *, may_open: bool) -> int | None:
        """Offset for `size` bytes in the fullest region that has room, opening a block if allowed."""
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
            start = self.next
            end = (start // self.bs + 1) * self.bs
            if start + need * SLOT > end:  # the first block's rest is too small: skip it
                start = end
                end += self.bs
            self.next = end
            index = len(self.fill)
            self.fill.append(start)
            self.limit.append(end)
        offset = self.fill[index]
        self.fill[index] += need * SLOT
        self._file(index)
        return offset

    @property
    def end(self) -> int:
        """The block boundary after every opened block."""
        return -(-self.next // self.bs) * self.bs


def pack_records(
    sizes: Sequence[int],
    rigid: Sequence[int],
    meta_start: int,
    block_size: int,
    shared_size: int,
    front: tuple[int, int] | None = None,
) -> Packed:
    """Offsets for every record in the metadata area from `meta_start` (and the `front` gap).

    `sizes[i]` is record i's size in bytes and `rigid[i]` whether it must stay inside one block
    (compact sequences, such as an array and bytes, keep a large tree's planning small).
    """
    offsets = [-1] * len(sizes)
    blocks = _Blocks(meta_start, block_size, front)
    for i in sorted((i for i in range(len(sizes)) if rigid[i]), key=lambda i: -sizes[i]):
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
