"""A spool for data read once from a stream (tar members): an unnamed temporary file.

Each member's bytes are written at an offset reserved for them; holes of sparse members are
never written, so they cost no disk. A file's `SpoolData` keeps the spool open for as long as
the tree needs it. Its `open()` hands the writer a view whose `fileno()` and `tell()` are the
spool's descriptor and the data's offset, so the writer reads it with `pread` and copies it
into the image with `copy_file_range`, the data never passing through Python objects whole.
"""

from __future__ import annotations

import io
import os
import tempfile
from typing import BinaryIO, cast


class Spool:
    """An unnamed temporary file written at reserved offsets; nothing is left behind."""

    def __init__(self, directory: str | None = None) -> None:
        self.file = tempfile.TemporaryFile(dir=directory)  # noqa: SIM115 (closed by close())
        self.fd = self.file.fileno()
        self.end = 0

    def reserve(self, size: int) -> int:
        """The offset of `size` new bytes."""
        offset = self.end
        self.end += size
        return offset

    def write_at(self, data: bytes | memoryview, offset: int) -> None:
        view = memoryview(data)
        while view:
            n = os.pwrite(self.fd, view, offset)
            view = view[n:]
            offset += n

    def finish(self) -> None:
        """Extend the file to every byte reserved: a sparse member ending in a hole wrote none there."""
        if os.fstat(self.fd).st_size < self.end:
            os.ftruncate(self.fd, self.end)

    def close(self) -> None:
        self.file.close()


class SpoolData:
    """A regular file's data at [offset, offset + size) of a spool (a `DataSource`)."""

    __slots__ = ("label", "offset", "size", "spool")

    def __init__(self, spool: Spool, offset: int, size: int, label: str) -> None:
        self.spool = spool
        self.offset = offset
        self.size = size
        self.label = label

    def describe(self) -> str:
        return self.label

    def open(self) -> BinaryIO:
        return cast(BinaryIO, _SpoolView(self.spool.fd, self.offset, self.size))


class _SpoolView(io.RawIOBase):
    """Positional reads of one spooled file; closing it leaves the spool open."""

    def __init__(self, fd: int, offset: int, size: int) -> None:
        super().__init__()
        self._fd = fd
        self._start = offset
        self._pos = offset
        self._end = offset + size

    def readable(self) -> bool:
        return True

    def fileno(self) -> int:
        return self._fd

    def tell(self) -> int:
        return self._pos

    def readinto(self, buffer: bytearray | memoryview) -> int:  # type: ignore[override]
        want = min(len(buffer), self._end - self._pos)
        if want <= 0:
            return 0
        data = os.pread(self._fd, want, self._pos)
        buffer[: len(data)] = data
        self._pos += len(data)
        return len(data)
