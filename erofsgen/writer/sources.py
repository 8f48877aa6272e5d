"""Reading file data while the image is emitted: streamed, never held whole, checked for change."""

from __future__ import annotations

import contextlib
import errno
import io
import os
from typing import BinaryIO

from ..errors import InvalidInputError
from ..model import File

COPY_CHUNK = 1 << 20
_NO_KERNEL_COPY = {errno.EXDEV, errno.ENOSYS, errno.EINVAL, errno.EOPNOTSUPP, errno.EBADF}


class FileReader:
    """Sequential reader over one file's data that can also copy straight into the image."""

    def __init__(self, node: File, where: str) -> None:
        self.where = where
        self.expected = node.data.size
        self.pos = 0
        try:
            self.file: BinaryIO = node.data.open()
        except OSError as exc:
            raise InvalidInputError(
                f"cannot read {node.data.describe()}: {exc.strerror or exc}", where
            ) from None
        self.fd: int | None = None
        with contextlib.suppress(OSError, io.UnsupportedOperation):
            self.fd = self.file.fileno()
        if self.fd is not None and os.fstat(self.fd).st_size != self.expected:
            self.close()
            raise InvalidInputError("file changed size since it was scanned", where)

    def __enter__(self) -> FileReader:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        self.file.close()

    def _short(self) -> InvalidInputError:
        return InvalidInputError(f"file shrank while packing (ended at byte {self.pos})", self.where)

    def copy_to(self, dst_fd: int, dst_offset: int, length: int) -> None:
        """Copy the next `length` bytes to the image at `dst_offset`, in the kernel when it can."""
        done = 0
        if self.fd is not None:
            try:
                while done < length:
                    n = os.copy_file_range(self.fd, dst_fd, length - done, self.pos + done, dst_offset + done)
                    if n == 0:
                        self.pos += done
                        raise self._short()
                    done += n
            except OSError as exc:
                if exc.errno not in _NO_KERNEL_COPY:
                    raise InvalidInputError(f"read failed: {exc.strerror}", self.where) from None
                os.lseek(self.fd, self.pos + done, os.SEEK_SET)
        self.pos += done
        while done < length:
            chunk = self.read(min(COPY_CHUNK, length - done))
            os.pwrite(dst_fd, chunk, dst_offset + done)
            done += len(chunk)

    def read(self, length: int) -> bytes:
        """Exactly the next `length` bytes."""
        data = os.pread(self.fd, length, self.pos) if self.fd is not None else self.file.read(length)
        if len(data) < length:
            while len(data) < length:  # short reads of pipes and odd file objects
                more = self.file.read(length - len(data)) if self.fd is None else b""
                if not more:
                    self.pos += len(data)
                    raise self._short()
                data += more
        self.pos += length
        return data

    def finish(self) -> None:
        """Fail if the file grew while it was copied."""
        grown = os.fstat(self.fd).st_size != self.expected if self.fd is not None else bool(self.file.read(1))
        if grown:
            raise InvalidInputError("file changed size while packing", self.where)
