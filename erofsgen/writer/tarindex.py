"""Tar index mode (mkfs.erofs --tar=i): chunk indexes into the archive, which is device 1.

Every non-empty regular file is CHUNK_BASED with 8-byte chunk indexes naming 512-byte blocks
of the archive, so the image holds metadata only. As in mkfs.erofs, a file's chunk is the
smallest power of two that holds it (at least a block), so a plain member is one chunk. A
sparse member's chunks shrink until every data segment starts on a chunk boundary and ends on
one (or at the file's end): then each chunk is either wholly a hole or wholly stored, at one
place in the archive. The device table has one slot: an empty tag, the archive's size in
blocks. Nothing is hashed, copied or deduplicated.
"""

from __future__ import annotations

import os
from typing import TYPE_CHECKING, Protocol, cast

from ..errors import InvalidInputError
from ..format.chunk import CHUNK_INDEX, chunk_format
from ..model import DataSource
from .chunks import ChunkedData, ChunkSession, _Device
from .options import MAX_CHUNK_SHIFT

if TYPE_CHECKING:
    from .options import WriteOptions
    from .plan import PlannedInode

ARCHIVE_DEVICE = 1


class InArchive(Protocol):
    """A data source whose bytes lie in an archive (sources/tar_index.py's ArchiveExtent)."""

    identity: tuple[int, int]  # the archive's (st_dev, st_ino)
    segments: tuple[tuple[int, int, int], ...]  # (file offset, archive offset, length), in order
    size: int

    def describe(self) -> str: ...


def chunk_map(
    segments: tuple[tuple[int, int, int], ...], size: int, block_size: int
) -> tuple[int, list[int]] | None:
    """(log2 of the chunk size, one location per chunk: device << 32 | block, or -1 for a hole),
    or None when the segments cannot be mapped onto whole chunks of at least a block."""
    blkbits = block_size.bit_length() - 1
    bits = min(max((size - 1).bit_length(), blkbits), blkbits + MAX_CHUNK_SHIFT)
    for offset, at, length in segments:
        if at % block_size:
            return None
        ends_on_chunk = offset + length == size
        while bits >= blkbits and (offset % (1 << bits) or not (ends_on_chunk or length % (1 << bits) == 0)):
            bits -= 1
        if bits < blkbits:
            return None
    chunk = 1 << bits
    locs: list[int] = []
    j = 0
    for start in range(0, size, chunk):
        while j < len(segments) and segments[j][0] + segments[j][2] <= start:
            j += 1
        if j < len(segments) and segments[j][0] <= start:
            offset, at, _ = segments[j]
            locs.append(ARCHIVE_DEVICE << 32 | (at + start - offset) // block_size)
        else:
            locs.append(-1)
    return bits, locs


class IndexedData(ChunkedData):
    """A regular file whose chunks are blocks of the archive; its chunk size is its own."""

    __slots__ = ("chunk_bits",)

    def __init__(
        self, source: DataSource, plan: PlannedInode, session: ChunkSession, bits: int, locs: list[int]
    ) -> None:
        super().__init__(source, plan, session)
        self.chunk_bits = bits
        self.locs = locs

    @property
    def chunk_count(self) -> int:
        return len(self.locs)

    def i_u(self, plan: PlannedInode) -> int:
        return chunk_format(self.chunk_bits, self.session.block_size.bit_length() - 1, indexes=True)


class TarIndexSession(ChunkSession):
    """The chunk session of an index-mode build: one device, the archive, and no data to copy."""

    hashing = False

    def __init__(self, options: WriteOptions) -> None:
        super().__init__(options)
        assert options.tar_index is not None
        self.archive = os.fspath(options.tar_index)
        self.min_file_size = 1  # as mkfs.erofs: every non-empty file, however small
        self.indexes = True
        self.entry_size = CHUNK_INDEX.size
        try:
            st = os.stat(self.archive)
        except OSError as exc:
            raise InvalidInputError(f"cannot read the archive: {exc.strerror or exc}", self.archive) from None
        self.identity = (st.st_dev, st.st_ino)
        blocks = -(-st.st_size // self.block_size)
        if blocks > 0xFFFFFFFF:
            raise InvalidInputError("the archive is too large to index (over 2^32 blocks)", self.archive)
        self.devices.append(_Device("", blocks))

    def form(self, source: DataSource, plan: PlannedInode) -> ChunkedData:
        # Duck-typed: isinstance() with a runtime protocol costs ~25 µs a file.
        if getattr(source, "identity", None) != self.identity:
            raise InvalidInputError(
                f"tar index mode: the data of {source.describe()} is not in the archive {self.archive}"
            )
        extent = cast(InArchive, source)
        mapped = chunk_map(extent.segments, extent.size, self.block_size)
        if mapped is None:
            raise InvalidInputError(
                f"tar index mode: sparse member {source.describe()} has data segments not aligned to "
                f"{self.block_size}-byte blocks, which chunk indexes cannot map (pack it without --tar=i)"
            )
        form = IndexedData(source, plan, self, *mapped)
        self.forms.append(form)
        return form

    def resolve(self) -> None:
        """Nothing to place: every chunk's block in the archive is known from its member."""

    def start_copy(self, fd: int, path: str) -> None:
        """Nothing to copy: the data stays in the archive."""
