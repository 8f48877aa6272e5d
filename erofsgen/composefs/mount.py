"""Mounting a composefs image: EROFS metadata under overlayfs with data-only object layers.

As mount.composefs does it: the image is mounted read-only as EROFS at a private temporary
directory; an overlay (source `composefs`) is created with `metacopy=on`, `redirect_dir=on`,
that EROFS mount as its only lower layer and each object directory as a data-only layer
(`datadir+`, Linux 6.7+), optionally `verity=require` (every object's fs-verity digest must match
its metacopy xattr); the EROFS mount is then detached lazily, kept alive by the overlay, and the
temporary directory removed. `expected_digest` checks the image's own fs-verity digest first.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import struct
import tempfile
from collections.abc import Sequence

from ..blobs.mount import (
    AT_FDCWD,
    FSCONFIG_SET_STRING,
    FSMOUNT_CLOEXEC,
    FSOPEN_CLOEXEC,
    MOUNT_ATTR_RDONLY,
    MOVE_MOUNT_F_EMPTY_PATH,
    SYS_FSCONFIG,
    SYS_FSMOUNT,
    SYS_FSOPEN,
    SYS_MOVE_MOUNT,
    MountError,
    mount_image,
)
from ..errors import InvalidInputError
from ..reader.names import escape_name
from ..verity import fsverity_digest_path
from .image import MAGIC

FSCONFIG_CMD_CREATE = 6
MNT_DETACH = 2
_libc = ctypes.CDLL(None, use_errno=True)


def _syscall(number: int, *args: object) -> int:
    result = int(_libc.syscall(ctypes.c_long(number), *args))
    if result < 0:
        code = ctypes.get_errno()
        raise OSError(code, os.strerror(code))
    return result


def _check_image(image: str, expected_digest: str | None) -> None:
    with open(image, "rb") as f:
        head = f.read(4)
    if len(head) < 4 or struct.unpack("<I", head)[0] != MAGIC:
        raise InvalidInputError("not a composefs image (no composefs header)", escape_name(image))
    if expected_digest is not None:
        actual = fsverity_digest_path(image).hex()
        if actual != expected_digest.lower():
            raise InvalidInputError(
                f"fs-verity digest {actual} is not the expected {expected_digest}", escape_name(image)
            )


def _overlay(lower: str, objects: Sequence[str], mountpoint: str, verity: bool) -> None:
    with contextlib.ExitStack() as held:
        try:
            fs_fd = _syscall(SYS_FSOPEN, b"overlay", ctypes.c_uint(FSOPEN_CLOEXEC))
        except OSError as exc:
            raise MountError(f"cannot mount overlayfs: fsopen: {exc.strerror}", exc.errno) from exc
        held.callback(os.close, fs_fd)

        def config(key: bytes | None, value: bytes | None, cmd: int = FSCONFIG_SET_STRING) -> None:
            _syscall(SYS_FSCONFIG, ctypes.c_int(fs_fd), ctypes.c_uint(cmd), key, value, ctypes.c_int(0))

        try:
            config(b"source", b"composefs")
            config(b"metacopy", b"on")
            config(b"redirect_dir", b"on")
            if verity:
                config(b"verity", b"require")
            config(b"lowerdir+", os.fsencode(lower))
            for path in objects:
                config(b"datadir+", os.fsencode(os.path.abspath(path)))
            config(None, None, FSCONFIG_CMD_CREATE)
            mount_fd = _syscall(
                SYS_FSMOUNT,
                ctypes.c_int(fs_fd),
                ctypes.c_uint(FSMOUNT_CLOEXEC),
                ctypes.c_uint(MOUNT_ATTR_RDONLY),
            )
        except OSError as exc:
            raise MountError(
                f"cannot mount the composefs overlay (needs Linux 6.7+): {exc.strerror}", exc.errno
            ) from exc
        held.callback(os.close, mount_fd)
        try:
            _syscall(
                SYS_MOVE_MOUNT,
                ctypes.c_int(mount_fd),
                b"",
                ctypes.c_int(AT_FDCWD),
                os.fsencode(mountpoint),
                ctypes.c_uint(MOVE_MOUNT_F_EMPTY_PATH),
            )
        except OSError as exc:
            raise MountError(f"{escape_name(mountpoint)}: cannot mount: {exc.strerror}", exc.errno) from exc


def mount_composefs(
    image: str,
    mountpoint: str,
    objects: Sequence[str],
    *,
    verity: bool = False,
    expected_digest: str | None = None,
) -> None:
    """Mount the composefs `image` read-only at `mountpoint` over the object directories."""
    if not objects:
        raise InvalidInputError("a composefs mount needs at least one object directory")
    for path in objects:
        if not os.path.isdir(path):
            raise InvalidInputError("object directory is not a directory", escape_name(path))
    if not os.path.isdir(mountpoint):
        raise InvalidInputError("mount point is not a directory", escape_name(mountpoint))
    _check_image(image, expected_digest)
    lower = tempfile.mkdtemp(prefix=".composefs.")
    try:
        mount_image(image, lower)
        try:
            _overlay(lower, objects, mountpoint, verity)
        finally:
            _libc.umount2(os.fsencode(lower), MNT_DETACH)  # the overlay keeps it alive
    finally:
        os.rmdir(lower)
