"""The composefs object store: file contents named by fs-verity digest, shared across images.

`objects/XX/YYYY...` (the store directory given to mkcomposefs --digest-store and to the mount's
basedir). An object is written once: if its name exists it is left alone; otherwise the data
goes to a temporary file in the store root (a reflink when the file system can, else
copy_file_range, else plain reads and writes), is made world-readable, synced, given fs-verity
when the file system supports it (best effort, as mkcomposefs does), and renamed into place,
so a reader never sees a partial object.
"""

from __future__ import annotations

import errno
import fcntl
import os
import struct
import tempfile
from collections.abc import Iterable
from concurrent.futures import ThreadPoolExecutor

from ..errors import InvalidInputError
from .scan import digest_path

FICLONE = 0x40049409
FS_IOC_ENABLE_VERITY = 0x40806685
_VERITY_ARG = struct.Struct("<IIIIQIIQ11Q")  # struct fsverity_enable_arg (128 bytes)
_COPY_CHUNK = 1 << 30


def object_path(store: str | bytes, digest: bytes) -> bytes:
    return os.path.join(os.fsencode(store), digest_path(digest))


def _copy(src: int, dst: int, size: int) -> None:
    try:
        fcntl.ioctl(dst, FICLONE, src)
        return
    except OSError:
        pass
    copied = 0
    try:
        while copied < size:
            n = os.copy_file_range(src, dst, min(size - copied, _COPY_CHUNK))
            if n == 0:
                break
            copied += n
    except OSError as exc:
        if exc.errno not in (errno.EXDEV, errno.ENOSYS, errno.EOPNOTSUPP, errno.EINVAL):
            raise
        os.lseek(src, copied, os.SEEK_SET)
        os.lseek(dst, copied, os.SEEK_SET)
        while chunk := os.read(src, 1 << 20):
            os.write(dst, chunk)
        return
    if copied != size:
        raise OSError(errno.EIO, "source file changed size while copied into the object store")


def _enable_verity(path: str) -> None:
    try:
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    except OSError:
        return
    try:
        fcntl.ioctl(fd, FS_IOC_ENABLE_VERITY, _VERITY_ARG.pack(1, 1, 4096, 0, 0, 0, 0, 0, *[0] * 11))
    except OSError:
        pass  # only an attempt: most file systems have no fs-verity
    finally:
        os.close(fd)


def store_object(store: str | bytes, digest: bytes, source: str | bytes) -> bool:
    """Put `source`'s data into the store under `digest`; False if it was already there."""
    store_text = os.fsdecode(store)
    final = os.fsdecode(object_path(store, digest))
    os.makedirs(os.path.dirname(final), mode=0o755, exist_ok=True)
    if os.path.lexists(final):
        return False
    src = os.open(source, os.O_RDONLY | os.O_CLOEXEC)
    try:
        fd, tmp = tempfile.mkstemp(prefix=".tmp", dir=store_text)
        try:
            _copy(src, fd, os.fstat(src).st_size)
            os.fchmod(fd, 0o644)
            os.fsync(fd)
        except BaseException:
            os.close(fd)
            os.unlink(tmp)
            raise
        os.close(fd)
    finally:
        os.close(src)
    try:
        _enable_verity(tmp)
        os.rename(tmp, final)
    except BaseException:
        os.unlink(tmp)
        raise
    return True


def fill_store(store: str | bytes, files: Iterable[tuple[bytes, bytes]], threads: int = 1) -> int:
    """Store (digest, source path) pairs, each digest once; returns how many objects were new."""
    if os.path.lexists(store) and not os.path.isdir(store):
        raise InvalidInputError("the digest store is not a directory", os.fsdecode(store))
    os.makedirs(store, exist_ok=True)
    unique: dict[bytes, bytes] = {}
    for digest, path in files:
        unique.setdefault(digest, path)
    items = list(unique.items())
    if threads <= 1:
        return sum(store_object(store, d, p) for d, p in items)
    with ThreadPoolExecutor(max_workers=threads) as pool:
        return sum(pool.map(lambda item: store_object(store, *item), items))
