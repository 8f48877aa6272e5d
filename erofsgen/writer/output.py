"""Where the image goes: a regular file is replaced atomically, anything else is written in place.

A regular file (new, or reached through symbolic links) is built in a temporary file beside it,
synced and renamed over it: readers see the old image or the whole new one, never a part, and a
crash cannot leave a renamed but empty image. The temporary file is unnamed (O_TMPFILE) until
just before the rename where the file system allows, so not even SIGKILL leaves it behind.
The new file keeps the old one's permissions and owner, as a file written in place
(mkfs.erofs, a shell's `>`) would. The directory must be
writable for that; an existing image in a read-only directory is refused rather than overwritten
in place.

Block devices, character devices and FIFOs (a disk, /dev/null, /dev/stdout on a pipe) are never
replaced. The emitter writes at offsets and sizes the file up front, which a pipe cannot take,
so the image is built in an unnamed temporary file under $TMPDIR and then streamed into the
target from its start. Until the build is complete the target is not written at all.
"""

from __future__ import annotations

import errno
import os
import secrets
import stat
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager, suppress

from ..errors import ErofsgenError, ImageWriteError, InvalidInputError

STREAM_CHUNK = 8 << 20  # bytes per sendfile call: an interrupt is never far off
_NO_SENDFILE = {errno.EINVAL, errno.ENOSYS, errno.EOPNOTSUPP}
_NOT_WRITABLE = {errno.EACCES, errno.EPERM, errno.EROFS}
_NO_ROOM = {errno.ENOSPC, errno.EDQUOT, errno.EFBIG}
_CANNOT_SYNC_DIRECTORY = {errno.EINVAL, errno.EOPNOTSUPP}  # file systems without directory fsync
_NO_TMPFILE = {errno.EOPNOTSUPP, errno.EISDIR, errno.EINVAL}  # file systems or kernels without O_TMPFILE
_PROC_FDS = os.path.isdir("/proc/self/fd")  # an unnamed file is given its name through /proc


@contextmanager
def atomic_output(
    path: str | os.PathLike[str], size: int | None = None, *, sync: bool = True
) -> Iterator[int]:
    """Yield a descriptor of a new, empty, seekable file whose content becomes the image at `path`.

    A regular file at `path` (or at the end of a symlink chain there, a dangling one included)
    is replaced when the body succeeds. A block or character device or a FIFO is written in
    place, from offset 0; a block device must hold `size` bytes (the image size, if known).
    An existing regular file in a directory that is not writable is refused, not overwritten. On
    any exception, KeyboardInterrupt included, the temporary file is removed and a regular file
    at `path` is left as it was. With `sync`, the image (and the directory after the rename) is
    flushed to stable storage before returning. An OSError while writing becomes an
    ImageWriteError naming `path`.
    """
    shown = os.fspath(path)
    found = _inspect(shown)
    if found is None or stat.S_ISREG(found.st_mode):
        with _replacing(shown, found, size, sync) as fd:
            yield fd
    else:
        with _streaming(shown, found, size, sync) as fd:
            yield fd


def builds_in_place(path: str | os.PathLike[str]) -> bool:
    """Whether atomic_output's descriptor for `path` becomes the image file itself (a regular
    file, renamed into place) rather than a temporary file streamed into a device or FIFO."""
    found = _inspect(os.fspath(path))
    return found is None or stat.S_ISREG(found.st_mode)


def _inspect(shown: str) -> os.stat_result | None:
    """What `shown` names, following symlinks: None if nothing (yet); refuses what cannot be one."""
    if not shown:
        raise InvalidInputError("the image path is empty")
    if shown.endswith(os.sep):
        raise InvalidInputError("ends in '/': IMAGE must name a file, not a directory", shown)
    try:
        found = os.stat(shown)
    except FileNotFoundError:
        return None  # a new file, or a dangling symlink's target, created as `>` in a shell would
    except OSError as exc:
        raise InvalidInputError(f"cannot create the image: {exc.strerror}", shown) from exc
    if stat.S_ISDIR(found.st_mode):
        raise InvalidInputError("is a directory", shown)
    if stat.S_ISSOCK(found.st_mode):
        raise InvalidInputError("is a socket, not a file, a device or a FIFO", shown)
    return found


@contextmanager
def _replacing(shown: str, old: os.stat_result | None, size: int | None, sync: bool) -> Iterator[int]:
    target = os.path.realpath(shown)  # a symlink stays; the file it leads to is replaced
    directory, name = os.path.split(target)
    tmp = os.path.join(directory, f".{name}.{secrets.token_hex(4)}.tmp")
    fd, anonymous = _create_temporary(directory, tmp, shown, target)
    try:
        try:
            if old is not None:
                _keep_mode_and_owner(fd, old)
            yield fd
            if sync:
                os.fsync(fd)  # before the rename: never a renamed but empty image after a crash
            if anonymous:  # named only now, an instant before the rename
                _link_unnamed(fd, tmp)
        finally:
            os.close(fd)
        os.replace(tmp, target)
    except BaseException as exc:
        with suppress(FileNotFoundError):
            os.unlink(tmp)
        if isinstance(exc, OSError) and not isinstance(exc, ErofsgenError):
            raise _write_error(exc, shown, size) from exc
        raise
    if sync:
        _sync_directory(directory, shown)


def _link_unnamed(fd: int, path: str) -> None:
    """Give an O_TMPFILE file the name `path`: linkat(2) of /proc/self/fd/FD, following it.

    (os.link without a directory descriptor calls link(2), which would not follow.)
    """
    fds = os.open("/proc/self/fd", os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        os.link(str(fd), path, src_dir_fd=fds, follow_symlinks=True)
    finally:
        os.close(fds)


def _create_temporary(directory: str, tmp: str, shown: str, target: str) -> tuple[int, bool]:
    """A new file in `directory`: unnamed (O_TMPFILE) where the file system can, so even a
    SIGKILL leaves nothing behind; else named `tmp`. Returns it and whether it is unnamed."""
    if _PROC_FDS:
        try:
            return os.open(directory or ".", os.O_TMPFILE | os.O_RDWR | os.O_CLOEXEC, 0o666), True
        except OSError as exc:
            if exc.errno not in _NO_TMPFILE:
                raise _create_error(exc, shown, target) from exc
    try:
        return os.open(tmp, os.O_RDWR | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o666), False
    except OSError as exc:
        raise _create_error(exc, shown, target) from exc
    except BaseException:  # an interrupt as the file was being created: it must not stay behind
        with suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


def _keep_mode_and_owner(fd: int, old: os.stat_result) -> None:
    """Give the new image the replaced file's permissions and owner, as writing in place would.

    Without this a private (0600) image would come back world-readable after a rebuild.
    """
    with suppress(PermissionError):  # not root: a file of another owner cannot be given away
        os.fchown(fd, old.st_uid, old.st_gid)
    os.fchmod(fd, stat.S_IMODE(old.st_mode))  # after the chown, which clears set-id bits


def _create_error(exc: OSError, shown: str, target: str) -> InvalidInputError:
    if exc.errno in _NOT_WRITABLE and os.path.exists(target):
        directory = os.path.dirname(target) or "."
        return InvalidInputError(
            f"cannot create the image: directory {directory} is not writable ({exc.strerror}); "
            "the new image is written beside the old one and renamed over it",
            shown,
        )
    return InvalidInputError(f"cannot create the image: {exc.strerror}", shown)


def _write_error(exc: OSError, shown: str, size: int | None, where: str = "") -> ImageWriteError:
    reason = exc.strerror or str(exc)
    if exc.errno in _NO_ROOM and size is not None:
        reason += f" (the image needs {size} bytes)"
    return ImageWriteError(f"cannot write the image{where}: {reason}", shown, exc.errno)


def _sync_directory(directory: str, shown: str) -> None:
    """Make the rename durable, where the directory can be opened and its file system syncs it."""
    try:
        dfd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    except OSError:
        return  # e.g. not readable: the image itself is synced, its name may lag
    try:
        os.fsync(dfd)
    except OSError as exc:
        if exc.errno not in _CANNOT_SYNC_DIRECTORY:
            raise ImageWriteError(f"cannot sync the directory: {exc.strerror}", shown, exc.errno) from exc
    finally:
        os.close(dfd)


@contextmanager
def _streaming(shown: str, found: os.stat_result, size: int | None, sync: bool) -> Iterator[int]:
    device = stat.S_ISBLK(found.st_mode)
    # O_EXCL on a block device: refused while it is mounted. Opening a FIFO waits for a reader.
    flags = os.O_WRONLY | os.O_CLOEXEC | os.O_NOCTTY | (os.O_EXCL if device else 0)
    try:
        out = os.open(shown, flags)
    except OSError as exc:
        hint = " (is it mounted?)" if device and exc.errno == errno.EBUSY else ""
        raise InvalidInputError(f"cannot open the output: {exc.strerror}{hint}", shown) from exc
    try:
        if device and size is not None:
            _check_fits(out, size, shown)
        tmpdir = tempfile.gettempdir()
        try:
            # Unnamed where the system allows, so nothing can be left behind; closed by `with` below.
            build = tempfile.TemporaryFile(dir=tmpdir)  # noqa: SIM115
        except OSError as exc:
            raise InvalidInputError(
                f"cannot create a temporary file in {tmpdir}: {exc.strerror}", shown
            ) from exc
        with build:
            try:
                yield build.fileno()
            except OSError as exc:
                if isinstance(exc, ErofsgenError):
                    raise
                raise _write_error(
                    exc, shown, size, f" to a temporary file in {tmpdir} (see TMPDIR)"
                ) from exc
            _stream(build.fileno(), out, shown, device)
        if sync and device:
            try:
                os.fsync(out)
            except OSError as exc:
                raise _write_error(exc, shown, size) from exc
    finally:
        os.close(out)


def _check_fits(out: int, size: int, shown: str) -> None:
    capacity = os.lseek(out, 0, os.SEEK_END)
    os.lseek(out, 0, os.SEEK_SET)
    if size > capacity:
        raise InvalidInputError(f"the image needs {size} bytes but the device holds only {capacity}", shown)


def _stream(src: int, out: int, shown: str, device: bool) -> None:
    """Copy the whole of `src` to `out` sequentially, in the kernel where it can."""
    total = os.fstat(src).st_size
    if device:
        _check_fits(out, total, shown)
    done = 0
    kernel = True
    try:
        while done < total:
            step = min(STREAM_CHUNK, total - done)
            if kernel:
                try:
                    n = os.sendfile(out, src, done, step)
                except OSError as exc:
                    if exc.errno not in _NO_SENDFILE:
                        raise
                    kernel = False
                    continue
            else:
                n = os.write(out, os.pread(src, step, done))
            if n == 0:
                raise OSError(errno.EIO, "the output took no more data")
            done += n
    except OSError as exc:
        reason = "the reader closed the pipe" if exc.errno == errno.EPIPE else exc.strerror or str(exc)
        raise ImageWriteError(
            f"cannot write the image: {reason} after {done} of {total} bytes", shown, exc.errno
        ) from exc
