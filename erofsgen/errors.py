"""Exception hierarchy: every error says whose fault it is."""

from __future__ import annotations

import errno


class ErofsgenError(Exception):
    """Base class of every error erofsgen raises on purpose."""


class InvalidInputError(ErofsgenError, ValueError):
    """The caller's input (a tree, a path, an option) cannot be turned into an image."""

    def __init__(self, message: str, path: str | None = None) -> None:
        self.message = message  # without the path
        self.path = path
        super().__init__(f"{path}: {message}" if path is not None else message)


class ImageWriteError(ErofsgenError, OSError):
    """Writing the image failed on the output's side: a full disk, a read-only file system, ...

    Also an OSError: `errno` is the system's error number (None if there is none), `strerror`
    the reason and `filename` the image path; the original exception is the `__cause__`.
    """

    def __init__(self, message: str, path: str, code: int | None = None) -> None:
        super().__init__(code, message, path)

    def __str__(self) -> str:
        return f"{self.filename}: {self.strerror}"

    def __reduce__(self) -> tuple[type[ImageWriteError], tuple[str, str, int | None]]:
        return type(self), (str(self.strerror), self.filename, self.errno)


class CorruptImageError(ErofsgenError):
    """The image breaks a rule of the format; names where (offset, nid, area)."""

    def __init__(
        self,
        message: str,
        *,
        offset: int | None = None,
        nid: int | None = None,
        area: str | None = None,
    ) -> None:
        self.offset = offset
        self.nid = nid
        self.area = area
        where = []
        if area is not None:
            where.append(area)
        if nid is not None:
            where.append(f"nid {nid}")
        if offset is not None:
            where.append(f"offset {offset:#x}")
        prefix = f"{' '.join(where)}: " if where else ""
        super().__init__(prefix + message)


class UnsupportedFeatureError(ErofsgenError):
    """The image uses a format feature this version of erofsgen cannot handle."""


class NotFoundError(ErofsgenError, FileNotFoundError):
    """A path looked up in an image does not exist.

    Like the `FileNotFoundError` of `open()`: `errno` is ENOENT, `strerror` the reason and
    `filename` the path looked up (None when there is none); str() is one line, "path: reason".
    """

    def __init__(self, message: str, path: str | None = None) -> None:
        super().__init__(errno.ENOENT, message, path)

    def __str__(self) -> str:
        return f"{self.filename}: {self.strerror}" if self.filename is not None else str(self.strerror)

    def __reduce__(self) -> tuple[type[NotFoundError], tuple[str, str | None]]:
        return type(self), (str(self.strerror), self.filename)
