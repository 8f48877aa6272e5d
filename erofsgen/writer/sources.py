"""Reading file data while the image is emitted: streamed, never held whole, checked for change."""

from __future__ import annotations

import contextlib
import errno
import io
import os
from typing import BinaryIO

from ..errors import InvalidInputError
from ..model import File, PathData
from .validate import show

COPY_CHUNK = 1 << 20
_NO_KERNEL_COPY = {errno.EXDEV, errno.ENOSYS, errno.EINVAL, errno.EOPNOTSUPP, errno.EBADF}


class FileReader:
    """Sequential reader over one file's data that can also copy straight into the image.

    A file that shrinks shows as a short copy or read; one that grows, as a size mismatch at
    `finish`. `path` is the image path, formatted only when an error needs it. Path-backed
    data is read through a bare descriptor: no file object per file.
    """

    def __init__(self, node: File, path: bytes) -> None:
        self.path = path
        self.expected = node.data.size
        self.pos = 0  # bytes consumed
        self.base = 0  # descriptor offset of the data's first byte
        self.file: BinaryIO | None = None
        self.fd: int | None = None
        data = node.data
        try:
            if isinstance(data, PathData):
                self.fd = os.open(data.path, os.O_RDONLY | os.O_CLOEXEC | os.O_NOFOLLOW)
            else:
                self.file = data.open()
        except OSError as exc:
            raise self.error(f"cannot read {data.describe()}: {exc.strerror or exc}") from None
        if self.file is not None:
            with contextlib.suppress(OSError, io.UnsupportedOperation):
                self.fd = self.file.fileno()
                self.base = self.file.tell()

    def __enter__(self) -> FileReader:
        return self

    def __exit__(self, *exc: object) -> None:
        if self.file is not None:
            self.file.close()
        elif self.fd is not None:
            os.close(self.fd)

    def error(self, message: str) -> InvalidInputError:
        return InvalidInputError(message, show(self.path))

    def copy_to(self, dst_fd: int, dst_offset: int, length: int) -> None:
        """Copy the next `length` bytes to the image at `dst_offset`, in the kernel when it can."""
        done = 0
        if self.fd is not None:
            try:
                while done < length:
                    src = self.base + self.pos + done
                    n = os.copy_file_range(self.fd, dst_fd, length - done, src, dst_offset + done)
                    if n == 0:
                        raise self.error(f"file shrank while packing (ended at byte {self.pos + done})")
                    done += n
            except OSError as exc:
                if exc.errno not in _NO_KERNEL_COPY:
                    raise self.error(f"read failed: {exc.strerror}") from None
        self.pos += done
        while done < length:
            chunk = self.read(min(COPY_CHUNK, length - done))
            os.pwrite(dst_fd, chunk, dst_offset + done)
            done += len(chunk)

    def read(self, length: int) -> bytes:
        """Exactly the next `length` bytes."""
        if self.fd is not None:
            data = os.pread(self.fd, length, self.base + self.pos)
        else:
            data = self._read_file(length)
        if len(data) < length:
            raise self.error(f"file shrank while packing (ended at byte {self.pos + len(data)})")
        self.pos += length
        return data

    def _read_file(self, length: int) -> bytes:
        assert self.file is not None
        data = self.file.read(length)
        while len(data) < length:  # file objects may return short reads
            more = self.file.read(length - len(data))
            if not more:
                break
            data += more
        return data

    def finish(self) -> None:
        """Fail if the file grew while it was copied."""
        if self.fd is not None:
            grown = os.fstat(self.fd).st_size != self.base + self.expected
        else:
            grown = bool(self._read_file(1))
        if grown:
            raise self.error("file changed size while packing")
