"""Durable file operations shared by the store, its stat cache and maintenance."""

from __future__ import annotations

import contextlib
import os
import tempfile

FILE_MODE = 0o644  # blobs, segments and the cache are readable by whoever may read the store


def fsync_dir(path: str) -> None:
    """Make a rename or unlink in directory `path` durable."""
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def temp_file(directory: str, kind: str) -> tuple[int, str]:
    """A new file `<kind>-<pid>-<random>.tmp` in `directory`, opened O_RDWR.

    The pid in the name tells maintenance whether the file's writer may still be alive.
    """
    fd, path = tempfile.mkstemp(prefix=f"{kind}-{os.getpid()}-", suffix=".tmp", dir=directory)
    os.fchmod(fd, FILE_MODE)
    return fd, path


def temp_pid(name: str) -> int | None:
    """The writer's pid in a temp file name made by `temp_file`, None if there is none."""
    parts = name.split("-")
    if len(parts) >= 3 and parts[1].isdigit():
        return int(parts[1])
    return None


def write_durably(data: bytes, tmp_dir: str, final: str, kind: str, *, sync: bool = True) -> None:
    """Write `data` to a temp file, fsync it, rename it to `final`, fsync the target directory.

    Without `sync` the rename is still atomic, but a crash may leave the old file, or a damaged
    new one: only for files that are checksummed and may be lost (the stat cache).
    """
    fd, tmp = temp_file(tmp_dir, kind)
    try:
        view = memoryview(data)
        while view:
            view = view[os.write(fd, view) :]
        if sync:
            os.fsync(fd)
        os.rename(tmp, final)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
    finally:
        os.close(fd)
    if sync:
        fsync_dir(os.path.dirname(final))


def remove_durably(path: str) -> None:
    """Unlink `path` (already gone: nothing) and fsync its directory."""
    with contextlib.suppress(FileNotFoundError):
        os.unlink(path)
    fsync_dir(os.path.dirname(path))


__all__ = ["FILE_MODE", "fsync_dir", "remove_durably", "temp_file", "temp_pid", "write_durably"]
