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
    FSCONFIG_CMD_CREATE,
    MountError,
    attach_mount,
    fs_config,
    fs_mount_readonly,
    fs_open,
    mount_image,
)
from ..errors import InvalidInputError
from ..reader.names import escape_name
from ..verity import fsverity_digest_path
from .image import MAGIC

MNT_DETACH = 2
_libc = ctypes.CDLL(None, use_errno=True)


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
            fs_fd = fs_open(b"overlay")
        except OSError as exc:
            raise MountError(f"cannot mount overlayfs: fsopen: {exc.strerror}", exc.errno) from exc
        held.callback(os.close, fs_fd)
        try:
            fs_config(fs_fd, b"source", b"composefs")
            fs_config(fs_fd, b"metacopy", b"on")
            fs_config(fs_fd, b"redirect_dir", b"on")
            if verity:
                fs_config(fs_fd, b"verity", b"require")
            fs_config(fs_fd, b"lowerdir+", os.fsencode(lower))
            for path in objects:
                fs_config(fs_fd, b"datadir+", os.fsencode(os.path.abspath(path)))
            fs_config(fs_fd, None, None, FSCONFIG_CMD_CREATE)
            mount_fd = fs_mount_readonly(fs_fd)
        except OSError as exc:
            raise MountError(
                f"cannot mount the composefs overlay (needs Linux 6.7+): {exc.strerror}", exc.errno
            ) from exc
        held.callback(os.close, mount_fd)
        try:
            attach_mount(mount_fd, mountpoint)
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
