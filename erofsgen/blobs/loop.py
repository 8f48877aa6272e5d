"""Read-only loop devices that detach themselves (LO_FLAGS_AUTOCLEAR).

The fallback of `mount.mount_image` where the kernel cannot mount regular files: each file gets
a loop device configured in one LOOP_CONFIGURE call (Linux 5.8+). The device stays attached while
anyone holds it open; once its `LoopDevice` is closed, the mount is the only holder, so the
kernel detaches it at unmount, and at once if the mount never happened.
"""

from __future__ import annotations

import errno
import fcntl
import os
import struct
from types import TracebackType

from ..errors import ErofsgenError
from ..reader.names import escape_name

LOOP_CONTROL = "/dev/loop-control"
LOOP_CTL_GET_FREE = 0x4C82
LOOP_CONFIGURE = 0x4C0A
LO_FLAGS_READ_ONLY = 1
LO_FLAGS_AUTOCLEAR = 4
LO_NAME_SIZE = 64
_INFO64_FLAGS = 52  # offset of lo_flags in struct loop_info64 (232 bytes)
_INFO64_FILE_NAME = 56  # offset of lo_file_name
_INFO64_SIZE = 232
_CONFIG_RESERVED = 64  # struct loop_config ends in __u64 __reserved[8]
_ATTEMPTS = 16  # a free device may be taken by someone else between GET_FREE and CONFIGURE


class LoopError(ErofsgenError):
    """A loop device could not be set up; `errno` is the system's error number."""

    def __init__(self, message: str, code: int | None = None) -> None:
        super().__init__(message)
        self.errno = code


def loop_config(backing_fd: int, file_name: bytes) -> bytes:
    """struct loop_config for a read-only, self-detaching device over `backing_fd`."""
    info = bytearray(_INFO64_SIZE)
    struct.pack_into("=I", info, _INFO64_FLAGS, LO_FLAGS_READ_ONLY | LO_FLAGS_AUTOCLEAR)
    name = file_name[: LO_NAME_SIZE - 1]  # what `losetup -a` shows; NUL-terminated
    info[_INFO64_FILE_NAME : _INFO64_FILE_NAME + len(name)] = name
    return struct.pack("=II", backing_fd, 0) + bytes(info) + bytes(_CONFIG_RESERVED)


class LoopDevice:
    """An attached loop device (`path`, e.g. /dev/loop3) and the descriptor that keeps it."""

    def __init__(self, path: str, fd: int) -> None:
        self.path = path
        self._fd: int | None = fd

    def close(self) -> None:
        """Let go of the device: it detaches as soon as nothing else (a mount) holds it."""
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None

    def __enter__(self) -> LoopDevice:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()


def attach_loop(path: str | os.PathLike[str]) -> LoopDevice:
    """Attach `path` read-only to a free loop device that detaches itself once unused."""
    shown = escape_name(os.fspath(path))
    try:
        backing = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    except OSError as exc:
        raise LoopError(f"{shown}: {exc.strerror}", exc.errno) from exc
    try:
        config = loop_config(backing, os.fsencode(os.path.abspath(path)))
        return _configure_free_device(config, shown)
    finally:
        os.close(backing)  # the loop device holds its own reference to the file


def _configure_free_device(config: bytes, shown: str) -> LoopDevice:
    try:
        control = os.open(LOOP_CONTROL, os.O_RDWR | os.O_CLOEXEC)
    except OSError as exc:
        raise LoopError(
            f"cannot attach {shown} to a loop device: {LOOP_CONTROL}: {exc.strerror}", exc.errno
        ) from exc
    try:
        for _ in range(_ATTEMPTS):
            device = f"/dev/loop{fcntl.ioctl(control, LOOP_CTL_GET_FREE)}"
            fd = os.open(device, os.O_RDONLY | os.O_CLOEXEC)
            try:
                fcntl.ioctl(fd, LOOP_CONFIGURE, config)
            except OSError as exc:
                os.close(fd)
                if exc.errno == errno.EBUSY:
                    continue  # taken since GET_FREE: ask again
                raise LoopError(f"cannot attach {shown} to {device}: {exc.strerror}", exc.errno) from exc
            return LoopDevice(device, fd)
    except OSError as exc:
        raise LoopError(f"cannot attach {shown} to a loop device: {exc.strerror}", exc.errno) from exc
    finally:
        os.close(control)
    raise LoopError(f"cannot attach {shown}: no free loop device after {_ATTEMPTS} attempts", errno.EBUSY)
