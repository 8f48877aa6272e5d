"""Reading file data while the image is emitted: streamed, never held whole, checked for change."""

from __future__ import annotations

import contextlib
import errno
import io
import os
from typing import BinaryIO

from ..errors import InvalidInputError
from ..model import File
from .validate import show

COPY_CHUNK = 1 << 20
_NO_KERNEL_COPY = {errno.EXDEV, errno.ENOSYS, errno.EINVAL, errno.EOPNOTSUPP, errno.EBADF}


class FileReader:
    """Sequential reader over one file's data that can also copy straight into the image.

    A file that shrinks shows as a short copy or read; one that grows, as a size mismatch at
    `finish`. `path` is the image path, formatted only when an error needs it.
    """

    def __init__(self, node: File, path: bytes) -> None:
        self.path = path
        self.expected = node.data.size
        self.pos = 0
        try:
            self.file: BinaryIO = node.data.open()
        except OSError as exc:
            raise self.error(f"cannot read {node.data.describe()}: {exc.strerror or exc}") from None
        self.fd: int | None = None
        with contextlib.suppress(OSError, io.UnsupportedOperation):
            self.fd = self.file.fileno()

    def __enter__(self) -> FileReader:
        return self

    def __exit__(self, *exc: object) -> None:
        self.file.close()

    def error(self, message: str) -> InvalidInputError:
        return InvalidInputError(message, show(self.path))

    def copy_to(self, dst_fd: int, dst_offset: int, length: int) -> None:
        """Copy the next `length` bytes to the image at `dst_offset`, in the kernel when it can."""
        done = 0
        if self.fd is not None:
            try:
                while done < length:
                    n = os.copy_file_range(self.fd, dst_fd, length - done, self.pos + done, dst_offset + done)
                    if n == 0:
                        raise self.error(f"file shrank while packing (ended at byte {self.pos + done})")
                    done += n
            except OSError as exc:
                if exc.errno not in _NO_KERNEL_COPY:
                    raise self.error(f"read failed: {exc.strerror}") from None
                os.lseek(self.fd, self.pos + done, os.SEEK_SET)
        self.pos += done
        while done < length:
            chunk = self.read(min(COPY_CHUNK, length - done))
            os.pwrite(dst_fd, chunk, dst_offset + done)
            done += len(chunk)

    def read(self, length: int) -> bytes:
        """Exactly the next `length` bytes."""
        if self.fd is not None:
            data = os.pread(self.fd, length, self.pos)
        else:
            data = self.file.read(length)
            while len(data) < length:  # file objects may return short reads
                more = self.file.read(length - len(data))
                if not more:
                    break
                data += more
        if len(data) < length:
            raise self.error(f"file shrank while packing (ended at byte {self.pos + len(data)})")
        self.pos += length
        return data

    def finish(self) -> None:
        """Fail if the file grew while it was copied."""
        grown = bool(self.file.read(1)) if self.fd is None else os.fstat(self.fd).st_size != self.expected
        if grown:
            raise self.error("file changed size while packing")
