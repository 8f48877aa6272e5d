"""Copying file data into the image: kernel-side where possible, never held whole, checked for change.

Used by the stored forms (stored.py) when they write themselves; nothing here knows the model
types beyond the data source it is handed.
"""

from __future__ import annotations

import contextlib
import errno
import io
import os
import threading
from typing import BinaryIO, Protocol

from ..errors import InvalidInputError
from ..model import DataSource, EntryData, PathData
from .validate import show

COPY_CHUNK = 1 << 20  # bytes per read when the kernel cannot copy for us
KERNEL_COPY_CHUNK = 64 << 20  # bytes per copy_file_range call: keeps cancellation prompt
_NO_KERNEL_COPY = {errno.EXDEV, errno.ENOSYS, errno.EINVAL, errno.EOPNOTSUPP, errno.EBADF}
_IMAGE_SIDE = {errno.ENOSPC, errno.EDQUOT, errno.EFBIG}  # the image's problem, not the source's
# No symlink may have taken the file's place; a FIFO that did must not block the build.
_PATH_FLAGS = os.O_RDONLY | os.O_CLOEXEC | os.O_NOFOLLOW | os.O_NONBLOCK


class CopyStopped(Exception):
    """A copy given up between chunks because the build already failed (never shown to users)."""


def _check(stop: threading.Event | None) -> None:
    if stop is not None and stop.is_set():
        raise CopyStopped


class Target(Protocol):
    """Where one inode's data goes: its planned blocks and inline tail."""

    @property
    def path(self) -> bytes: ...
    @property
    def size(self) -> int: ...

    startblk: int
    nblocks: int
    tail_size: int


class FileReader:
    """Sequential reader over one file's data that can also copy straight into the image.

    A file that shrinks shows as a short read; one that grows, as a size mismatch at `finish`.
    `path` is the image path, formatted only when an error needs it. Path-backed data is read
    through a bare descriptor (no file object per file), opened without following symlinks and
    without blocking, should a FIFO have taken the file's place since the scan.
    """

    def __init__(self, data: DataSource, path: bytes, size: int, stop: threading.Event | None = None) -> None:
        self.path = path
        self.stop = stop  # set when the build has failed: the copy ends at the next chunk
        self.expected = size
        self.pos = 0  # bytes consumed
        self.base = 0  # descriptor offset of the data's first byte
        self.file: BinaryIO | None = None
        self.fd: int | None = None
        self.owned_fd = isinstance(data, PathData | EntryData)
        try:
            if isinstance(data, PathData | EntryData):
                self.fd = os.open(data.path, _PATH_FLAGS)
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
                    _check(self.stop)
                    step = min(length - done, KERNEL_COPY_CHUNK)
                    src = self.base + self.pos + done
                    n = os.copy_file_range(self.fd, dst_fd, step, src, dst_offset + done)
                    if n == 0:
                        break  # EOF, or a file system that cannot say: the reads below decide
                    done += n
            except OSError as exc:
                if exc.errno in _IMAGE_SIDE:
                    raise
                if exc.errno not in _NO_KERNEL_COPY:
                    raise self.error(f"read failed: {exc.strerror}") from None
        self.pos += done
        while done < length:
            _check(self.stop)
            chunk = self.read(min(COPY_CHUNK, length - done))
            os.pwrite(dst_fd, chunk, dst_offset + done)
            done += len(chunk)

    def read(self, length: int) -> bytes:
        """Exactly the next `length` bytes; fewer means the file shrank."""
        parts = []
        got = 0
        while got < length:
            try:
                if self.fd is not None:
                    part = os.pread(self.fd, length - got, self.base + self.pos + got)
                else:
                    assert self.file is not None
                    part = self.file.read(length - got)
            except OSError as exc:
                raise self.error(f"read failed: {exc.strerror}") from None
            if not part:
                raise self.error(f"file shrank while packing (ended at byte {self.pos + got})")
            parts.append(part)
            got += len(part)
        self.pos += length
        return parts[0] if len(parts) == 1 else b"".join(parts)

    def finish(self) -> None:
        """Fail if the file grew while it was copied (where growth can be told)."""
        if self.owned_fd:
            assert self.fd is not None
            try:
                grown = os.fstat(self.fd).st_size != self.expected
            except OSError as exc:
                raise self.error(f"cannot stat: {exc.strerror}") from None
        elif self.file is not None and self.fd is None:
            grown = bool(self.file.read(1))  # windows and in-memory data end where they should
        else:
            grown = False  # a source's own descriptor: its size is not ours to judge
        if grown:
            raise self.error("file changed size while packing")


def copy_path(
    path: bytes | str,
    target: Target,
    data: DataSource,
    fd: int,
    block_size: int,
    stop: threading.Event | None = None,
) -> bytes:
    """Copy a path-backed file's whole blocks into the image; return its inline tail.

    `stop`, once set, ends the copy before its next chunk with CopyStopped.

    Kept lean: it runs once per file of the tree. One pread fetches the tail and one byte more,
    which tells a file that grew; a short one tells a file that shrank. FileReader takes over
    for anything unusual.
    """
    try:
        src = os.open(path, _PATH_FLAGS)
    except OSError as exc:
        raise InvalidInputError(
            f"cannot read {os.fsdecode(path)}: {exc.strerror}", show(target.path)
        ) from None
    try:
        done = 0
        tail_size = target.tail_size
        length = target.size - tail_size if target.nblocks else 0
        dst = target.startblk * block_size
        while done < length:
            _check(stop)
            try:
                n = os.copy_file_range(src, fd, min(length - done, KERNEL_COPY_CHUNK), done, dst + done)
            except OSError as exc:
                if exc.errno in _IMAGE_SIDE:
                    raise
                n = 0  # not copyable in the kernel: the slow path sorts it out
            if n == 0:
                return copy_with_reader(target, data, fd, block_size, stop)
            done += n
        tail = os.pread(src, tail_size + 1, length)
    finally:
        os.close(src)
    if len(tail) != tail_size:
        return copy_with_reader(target, data, fd, block_size, stop)  # shrank or grew: FileReader says which
    return tail


def copy_with_reader(
    target: Target, data: DataSource, fd: int, block_size: int, stop: threading.Event | None = None
) -> bytes:
    """Copy any data source through FileReader: every check, clear errors; return the tail."""
    with FileReader(data, target.path, target.size, stop) as reader:
        if target.nblocks:
            reader.copy_to(fd, target.startblk * block_size, target.size - target.tail_size)
        tail = reader.read(target.tail_size) if target.tail_size else b""
        reader.finish()
    return tail


def copy_range(src: int, src_offset: int, dst: int, dst_offset: int, length: int) -> None:
    """Copy bytes between two descriptors we own (a spool and the image), in the kernel when it can."""
    done = 0
    while done < length:
        step = min(length - done, KERNEL_COPY_CHUNK)
        try:
            n = os.copy_file_range(src, dst, step, src_offset + done, dst_offset + done)
        except OSError as exc:
            if exc.errno in _IMAGE_SIDE or exc.errno not in _NO_KERNEL_COPY:
                raise
            n = 0
        if n == 0:  # another file system, or none that can copy: through a buffer
            chunk = os.pread(src, min(step, COPY_CHUNK), src_offset + done)
            if not chunk:
                raise OSError(errno.EIO, "the spool ended early")
            n = os.pwrite(dst, chunk, dst_offset + done)
        done += n
