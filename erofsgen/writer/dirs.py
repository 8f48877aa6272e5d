"""Directory data: sorted entries packed into blocks the way the kernel searches them."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from ..format.dirent import DIRENT_SIZE, pack_dirent_block


@dataclass(frozen=True, slots=True)
class DirectoryShape:
    """How a directory's sorted names split into blocks; depends on names only, not nids."""

    names: tuple[bytes, ...]  # sorted bytewise, "." and ".." included
    splits: tuple[int, ...]  # index of the first name of each block
    size: int  # i_size: full blocks before the last, plus the used bytes of the last

    def block_range(self, block: int) -> range:
        end = self.splits[block + 1] if block + 1 < len(self.splits) else len(self.names)
        return range(self.splits[block], end)


def shape_directory(child_names: Sequence[bytes], block_size: int) -> DirectoryShape:
    """Pack names in bytewise order; a block ends when the next entry would not fit."""
    names = tuple(sorted([b".", b"..", *child_names]))
    splits = [0]
    used = 0
    for i, name in enumerate(names):
        need = DIRENT_SIZE + len(name)
        if used + need > block_size:
            splits.append(i)
            used = 0
        used += need
    size = (len(splits) - 1) * block_size + used
    return DirectoryShape(names, tuple(splits), size)


def directory_block(
    shape: DirectoryShape, block: int, entries: Sequence[tuple[bytes, int, int]], block_size: int, length: int
) -> bytes:
    """Bytes of one directory block; `entries` are (name, nid, file type) in `shape.names` order.

    `length` is how much of the block is stored: a whole block, or the used part of an inline tail.
    """
    span = shape.block_range(block)
    return pack_dirent_block(entries[span.start : span.stop], block_size)[:length]
