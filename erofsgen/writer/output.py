"""Atomic output: write beside the destination, rename into place only on success."""

from __future__ import annotations

import os
import secrets
from collections.abc import Iterator
from contextlib import contextmanager, suppress

from ..errors import InvalidInputError


@contextmanager
def atomic_output(path: str | os.PathLike[str]) -> Iterator[int]:
    """Yield a descriptor of a new temporary file that becomes `path` if the body succeeds.

    On any exception, KeyboardInterrupt included, the temporary file is removed and `path` is
    left as it was.
    """
    target = os.path.abspath(os.fspath(path))
    if os.path.isdir(target):
        raise InvalidInputError("is a directory", os.fspath(path))
    directory, name = os.path.split(target)
    tmp = os.path.join(directory, f".{name}.{secrets.token_hex(4)}.tmp")
    try:
        fd = os.open(tmp, os.O_RDWR | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o666)
    except OSError as exc:
        raise InvalidInputError(f"cannot create the image: {exc.strerror}", os.fspath(path)) from None
    except BaseException:  # an interrupt as the file was being created: it must not stay behind
        with suppress(FileNotFoundError):
            os.unlink(tmp)
        raise
    try:
        try:
            yield fd
        finally:
            os.close(fd)
        os.replace(tmp, target)
    except BaseException:
        with suppress(FileNotFoundError):
            os.unlink(tmp)
        raise
