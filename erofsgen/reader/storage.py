"""Bounded byte access to an image's primary device and its extra (blob) devices.

Every read names what it was for, so a short read or an offset past the end of a device becomes a
`CorruptImageError` that says where. Block addresses of extra devices are resolved here, following
the kernel's `erofs_map_dev`: with devices given, device k holds chunk-index device_id k; without
them ("flat mode") every device lives in the primary at `uniaddr + blkaddr`.
"""

from __future__ import annotations

import errno
import io
import os
import stat
from collections.abc import Sequence
from dataclasses import dataclass
from typing import BinaryIO

from ..errors import CorruptImageError, InvalidInputError
from .names import escape_name

PathLike = str | os.PathLike[str]
SourceLike = str | os.PathLike[str] | BinaryIO

# How bytes go from a device to a destination file, best first: both in the kernel, then
# through Python (a file object without a descriptor, or a kernel that supports neither).
_COPY_FILE_RANGE, _SENDFILE, _PREAD = range(3)
# errnos meaning "this method does not work for this pair of files", not "the copy failed".
_UNSUPPORTED = {errno.EXDEV, errno.EINVAL, errno.ENOSYS, errno.EOPNOTSUPP, errno.ENOTSUP, errno.EBADF}
COPY_PIECE = 1 << 20  # bytes per pread/pwrite when copying through Python


@dataclass(frozen=True)
class DeviceSlotInfo:
    """One entry of the device table (slot `index` is chunk-index device_id `index + 1`)."""

    index: int
    tag: bytes
    blocks: int
    uniaddr: int
    offset: int  # absolute byte offset of the slot in the primary device

    @property
    def tag_text(self) -> str:
        """The NUL-terminated tag as text (undecodable bytes escaped)."""
        return self.tag.split(b"\0", 1)[0].decode("utf-8", "surrogateescape")

    @property
    def tag_shown(self) -> str:
        """The NUL-terminated tag escaped for messages."""
        return escape_name(self.tag.split(b"\0", 1)[0], spaces=False)


def _open_image_file(source: str | os.PathLike[str], what: str) -> BinaryIO:
    """Open a path for reading; only a regular file or a block device can hold an image.

    Opened without blocking first: a FIFO would otherwise wait for a writer forever.
    """
    try:
        fd = os.open(source, os.O_RDONLY | os.O_CLOEXEC | os.O_NONBLOCK)
    except OSError as exc:
        raise InvalidInputError(f"cannot open {what}: {exc.strerror}", escape_name(source)) from exc
    mode = os.fstat(fd).st_mode
    if not (stat.S_ISREG(mode) or stat.S_ISBLK(mode)):
        os.close(fd)
        kind = "Is a directory" if stat.S_ISDIR(mode) else "not a regular file or a block device"
        raise InvalidInputError(f"cannot open {what}: {kind}", escape_name(source))
    os.set_blocking(fd, True)
    return open(fd, "rb")


class _Handle:
    """A readable, seekable binary source: a file we opened, or one the caller gave us."""

    def __init__(self, source: SourceLike, what: str) -> None:
        self.what = what
        self.owned = False
        self.fd: int | None = None
        self.copy_method = _COPY_FILE_RANGE
        name = source if isinstance(source, str | os.PathLike) else getattr(source, "name", None)
        self.name = escape_name(name) if isinstance(name, str | bytes | os.PathLike) else None
        if isinstance(source, str | os.PathLike):
            self.file: BinaryIO = _open_image_file(source, what)
            self.owned = True
        elif callable(getattr(source, "read", None)) and callable(getattr(source, "seek", None)):
            self.file = source
        else:
            raise InvalidInputError(
                f"{what} must be a path or a binary file object, not {type(source).__name__}"
            )
        try:
            self.fd = self.file.fileno()
            os.fstat(self.fd)
        except (OSError, AttributeError, ValueError, io.UnsupportedOperation):
            self.fd = None
        try:
            self.size = self.file.seek(0, os.SEEK_END)
        except (OSError, ValueError) as exc:
            raise InvalidInputError(f"{what} is not seekable: {exc}") from exc

    def copy_to(self, offset: int, count: int, fd: int, fd_offset: int, positioned: bool) -> bool:
        """Copy `count` bytes at `offset` to `fd` at `fd_offset`, in the kernel when it can.

        sendfile writes at the file position of `fd`: `positioned` says it is `fd_offset`
        already (a file written front to back), which saves a seek. Returns whether the
        position is now just past the bytes copied.
        """
        while count > 0:
            method = self.copy_method if self.fd is not None else _PREAD
            try:
                if method == _COPY_FILE_RANGE:
                    assert self.fd is not None
                    done = os.copy_file_range(self.fd, fd, count, offset, fd_offset)
                    positioned = False  # explicit offsets leave the file position alone
                elif method == _SENDFILE:
                    assert self.fd is not None
                    if not positioned:
                        os.lseek(fd, fd_offset, os.SEEK_SET)
                    done = os.sendfile(fd, self.fd, offset, count)
                    positioned = True
                else:
                    done = self.pwrite_piece(offset, min(count, COPY_PIECE), fd, fd_offset)
                    positioned = False
            except OSError as exc:
                if method == _PREAD or exc.errno not in _UNSUPPORTED:
                    raise
                self.copy_method += 1  # this pair of files needs the next method
                continue
            if done <= 0:
                if method == _PREAD:
                    raise CorruptImageError(f"short read at {offset:#x}", offset=offset, area=self.what)
                self.copy_method += 1  # e.g. a source that reports no data in the kernel
                continue
            offset, fd_offset, count = offset + done, fd_offset + done, count - done
        return positioned

    def pwrite_piece(self, offset: int, count: int, fd: int, fd_offset: int) -> int:
        data = self.pread(offset, count)
        view = memoryview(data)
        while view:
            written = os.pwrite(fd, view, fd_offset)
            view, fd_offset = view[written:], fd_offset + written
        return len(data)

    def pread(self, offset: int, size: int) -> bytes:
        if self.fd is not None:
            try:
                return os.pread(self.fd, size, offset)
            except OSError:
                self.fd = None  # e.g. a pipe-like object; fall back to seek + read
        self.file.seek(offset)
        return self.file.read(size)

    def close(self) -> None:
        if self.owned:
            self.file.close()


class Storage:
    """The primary device plus the extra devices given by the caller (maybe none)."""

    def __init__(self, primary: SourceLike, devices: Sequence[SourceLike] = ()) -> None:
        self._handles: list[_Handle] = []
        try:
            self._handles.append(_Handle(primary, "image"))
            for i, dev in enumerate(devices):
                self._handles.append(_Handle(dev, f"device {i + 1}"))
        except BaseException:
            self.close()
            raise
        self.slots: tuple[DeviceSlotInfo, ...] = ()
        self.blksz = 4096

    @property
    def name(self) -> str | None:
        """The primary device's path (escaped for messages), None for an unnamed file object."""
        return self._handles[0].name if self._handles else None

    @property
    def primary_size(self) -> int:
        """Size in bytes of the primary device (the image file)."""
        return self._handles[0].size

    def device_size(self, device: int) -> int:
        """Size in bytes of storage device `device` (0 = primary, k = the k-th device given)."""
        if not 0 <= device < len(self._handles):
            raise ValueError(f"no storage device {device}")
        return self._handles[device].size

    @property
    def given_devices(self) -> int:
        """How many extra devices the caller passed."""
        return len(self._handles) - 1

    @property
    def flat_mode(self) -> bool:
        """True when extra devices are read from the primary at their unified address."""
        return self.given_devices == 0

    def close(self) -> None:
        """Close every file this object opened itself (never the caller's)."""
        for handle in self._handles:
            handle.close()
        self._handles = []

    def _bounded(self, device: int, offset: int, size: int, area: str, nid: int | None) -> _Handle:
        """The handle of `device`, once [offset, offset + size) is known to lie inside it."""
        if not self._handles:
            raise ValueError("I/O operation on a closed image")
        handle = self._handles[device]
        if size < 0 or offset < 0 or offset + size > handle.size:
            where = "image" if device == 0 else f"device {device}"
            raise CorruptImageError(
                f"{size} bytes at {offset:#x} run past the end of the {where} ({handle.size:#x} bytes)",
                offset=offset,
                nid=nid,
                area=area,
            )
        return handle

    def read(
        self,
        offset: int,
        size: int,
        *,
        area: str,
        nid: int | None = None,
        device: int = 0,
    ) -> bytes:
        """Exactly `size` bytes at `offset` of `device` (0 = primary) or a CorruptImageError."""
        handle = self._bounded(device, offset, size, area, nid)
        if size == 0:
            return b""
        data = handle.pread(offset, size)
        if len(data) != size:
            raise CorruptImageError(
                f"short read: {len(data)} of {size} bytes", offset=offset, nid=nid, area=area
            )
        return data

    def copy_to(
        self,
        offset: int,
        count: int,
        fd: int,
        fd_offset: int,
        *,
        area: str,
        nid: int | None = None,
        device: int = 0,
        positioned: bool = False,
    ) -> bool:
        """Copy exactly `count` bytes at `offset` of `device` into file descriptor `fd` at
        `fd_offset` (in the kernel where possible), or raise CorruptImageError like `read`.

        `positioned`: the file position of `fd` is `fd_offset` already; returns whether it is
        just past the copied bytes afterwards. Errors of the destination (ENOSPC, EFBIG, ...)
        are raised as the OSError they are.
        """
        handle = self._bounded(device, offset, count, area, nid)
        return handle.copy_to(offset, count, fd, fd_offset, positioned)

    def locate(self, device_id: int, blkaddr: int, *, nid: int | None = None) -> tuple[int, int]:
        """(device index, byte offset) of block `blkaddr` of chunk-index device `device_id`.

        device_id 0 is the primary; with extra devices given, a primary block inside a device's
        unified range is redirected to that device as the kernel does.
        """
        pos = blkaddr * self.blksz
        if device_id == 0:
            if self.flat_mode or not self.slots:
                return 0, pos
            for slot in self.slots:
                start = slot.uniaddr * self.blksz
                if slot.uniaddr and start <= pos < start + slot.blocks * self.blksz:
                    return slot.index + 1, pos - start
            return 0, pos
        if device_id > len(self.slots):
            raise CorruptImageError(
                f"device id {device_id} but the device table has {len(self.slots)} slots",
                nid=nid,
                area="chunk index",
            )
        slot = self.slots[device_id - 1]
        if not self.flat_mode:
            return device_id, pos
        flat = (slot.uniaddr + blkaddr) * self.blksz
        # uniaddr 0 would overlay the primary's own blocks (mkfs 1.5 writes no unified
        # addresses): such a device cannot be read in flat mode.
        if not slot.uniaddr or flat >= self.primary_size:
            raise InvalidInputError(
                f"nid {nid}: data lives on device slot {slot.index} (tag {slot.tag_shown}, "
                f"block {blkaddr}) which is not inside the primary image; pass the extra devices"
            )
        return 0, flat
