"""A read-only, seekable binary file object over one inode's data."""

from __future__ import annotations

import io
import os
from typing import TYPE_CHECKING

from .data import InodeData

if TYPE_CHECKING:
    from _typeshed import WriteableBuffer

READ_PIECE = 1 << 20  # readall() gathers the rest of the file in pieces of this size


class ImageFile(io.RawIOBase):
    """File object returned by `Image.open`: read/readinto/seek/tell over an inode's bytes.

    Data is decoded lazily; memory use is bounded by the size of each read (plus one decoded
    extent of a compressed file), never by the size of the file.
    """

    def __init__(self, data: InodeData, name: str = "") -> None:
        super().__init__()
        self._data = data
        self._pos = 0
        self.name = name

    @property
    def size(self) -> int:
        """The file size in bytes."""
        return self._data.size

    @property
    def nid(self) -> int:
        """The NID of the inode being read."""
        return self._data.inode.nid

    def _check_open(self) -> None:
        if self.closed:
            raise ValueError("I/O operation on closed file")

    def readable(self) -> bool:
        """Always True (while open)."""
        self._check_open()
        return True

    def seekable(self) -> bool:
        """Always True (while open)."""
        self._check_open()
        return True

    def writable(self) -> bool:
        """Always False: images are read-only."""
        return False

    def tell(self) -> int:
        """The current position."""
        self._check_open()
        return self._pos

    def seek(self, offset: int, whence: int = os.SEEK_SET) -> int:
        """Move the position like io.IOBase.seek; seeking past EOF is allowed."""
        self._check_open()
        if whence == os.SEEK_SET:
            pos = offset
        elif whence == os.SEEK_CUR:
            pos = self._pos + offset
        elif whence == os.SEEK_END:
            pos = self._data.size + offset
        else:
            raise ValueError(f"invalid whence {whence}")
        if pos < 0:
            raise OSError(22, "negative seek position")
        self._pos = pos
        return pos

    def read(self, size: int | None = -1) -> bytes:
        """Up to `size` bytes (all the rest if negative or None); b"" at EOF."""
        self._check_open()
        if size is None or size < 0:
            return self.readall()
        data = self._data.read(self._pos, size)
        self._pos += len(data)
        return data

    def readall(self) -> bytes:
        """Everything from the current position to EOF."""
        self._check_open()
        parts: list[bytes] = []
        while True:
            piece = self.read(READ_PIECE)
            if not piece:
                return b"".join(parts)
            parts.append(piece)

    def readinto(self, buffer: WriteableBuffer) -> int:
        """Fill `buffer` from the current position; returns the byte count (0 at EOF)."""
        self._check_open()
        view = memoryview(buffer).cast("B")
        data = self._data.read(self._pos, len(view))
        view[: len(data)] = data
        self._pos += len(data)
        return len(data)

    def __repr__(self) -> str:
        return f"<ImageFile name={self.name!r} nid={self.nid} size={self.size}>"
