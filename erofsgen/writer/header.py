"""Planned areas outside inode records, and the one writer every metadata byte goes through.

The header is an ordered list of `Area`s (superblock, long xattr prefixes, shared xattrs; later
device table, compression configs, a composefs header), each planned once with its offset and
size. `MetadataWriter` writes records and areas in increasing offset order and checks that each
area lands exactly where, and as large as, it was planned.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

WINDOW_FLUSH = 1 << 20
GAP_FLUSH = 4096  # a gap wider than this is left as a hole instead of buffered zeros


@dataclass(frozen=True, slots=True)
class Area:
    """One planned area: `data` is None when its bytes are final only at the end (superblock)."""

    name: str
    offset: int
    size: int
    data: bytes | None = None

    @property
    def end(self) -> int:
        return self.offset + self.size


class MetadataWriter:
    """Buffers metadata written in increasing offset order; refuses to overlap what came before."""

    def __init__(self, fd: int, data_area: tuple[int, int] = (0, 0)) -> None:
        self.fd = fd
        self.start = 0
        self.buf = bytearray()
        self.data_area = data_area  # bytes written by others: a gap across them is never filled

    @property
    def end(self) -> int:
        return self.start + len(self.buf)

    def write(self, offset: int, data: bytes) -> None:
        """Write `data` at `offset`, at or after everything written so far."""
        end = self.start + len(self.buf)
        if offset < end:
            raise AssertionError(f"metadata at {offset:#x} overlaps what was written up to {end:#x}")
        crosses = end <= self.data_area[0] < self.data_area[1] <= offset
        if self.buf and (crosses or offset - end > GAP_FLUSH or len(self.buf) > WINDOW_FLUSH):
            self.flush()
            end = self.start
        if not self.buf:
            self.start = end = offset
        self.buf += bytes(offset - end)
        self.buf += data

    def write_area(self, area: Area, data: bytes | None = None) -> None:
        """Write a planned area, its planned bytes or `data`; they must be exactly its size."""
        data = area.data if data is None else data
        if data is None or len(data) != area.size:
            got = "nothing" if data is None else f"{len(data)} bytes"
            raise AssertionError(f"{area.name}: planned {area.size} bytes at {area.offset:#x}, got {got}")
        self.write(area.offset, data)

    def flush(self) -> None:
        """Write out what is buffered."""
        if self.buf:
            os.pwrite(self.fd, self.buf, self.start)
            self.start += len(self.buf)
            self.buf.clear()


def write_final(fd: int, area: Area, data: bytes) -> None:
    """Write an area whose bytes were final only after everything else (the superblock)."""
    if len(data) != area.size:
        raise AssertionError(f"{area.name}: planned {area.size} bytes at {area.offset:#x}, got {len(data)}")
    if os.pwrite(fd, data, area.offset) != area.size:
        raise OSError(f"short write of the {area.name}")
