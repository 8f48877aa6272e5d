"""Tar index mode (`mkfs.erofs --tar=i`): member data left in the archive, found by offset.

The archive must be an uncompressed tar in a regular file: the image's chunk indexes name its
512-byte blocks (it is the image's extra device 1), so it is read by seeking from header to
header and its data is never copied. A regular member's data becomes an `ArchiveExtent`, a
`DataSource` that records where the member's bytes lie in the archive (several segments and
holes for a sparse member); the writer turns that into chunk indexes (writer/tarindex.py), and
any other use reads the bytes from the archive.
"""

from __future__ import annotations

import bisect
import io
import os
import stat
from typing import BinaryIO, cast

from .archive_stream import ArchiveError, compression_of

# (offset in the file, offset in the archive, length): one stored run of a member's data.
Segment = tuple[int, int, int]


class ArchiveExtent:
    """A regular member's data where it lies in its archive (a `DataSource`).

    `identity` is the archive's (st_dev, st_ino), so the writer can check a file's data is in
    the archive the image refers to. Bytes of the file outside every segment are zeros (holes).
    """

    __slots__ = ("archive", "identity", "name", "segments", "size")

    def __init__(
        self, archive: str, identity: tuple[int, int], segments: tuple[Segment, ...], size: int, name: str
    ) -> None:
        self.archive = archive
        self.identity = identity
        self.segments = segments
        self.size = size
        self.name = name  # the member's name, for messages (the label is made only when needed)

    @property
    def label(self) -> str:
        return f"{self.archive}:{self.name}"

    def describe(self) -> str:
        return self.label

    def open(self) -> BinaryIO:
        return cast(BinaryIO, _ExtentView(self))


class _ExtentView(io.RawIOBase):
    """Sequential reads of an extent: its segments from the archive, zeros in between."""

    def __init__(self, extent: ArchiveExtent) -> None:
        super().__init__()
        self._extent = extent
        self._starts = [seg[0] for seg in extent.segments]
        self._pos = 0
        self._fd = os.open(extent.archive, os.O_RDONLY | os.O_CLOEXEC)

    def readable(self) -> bool:
        return True

    def close(self) -> None:
        if not self.closed:
            os.close(self._fd)
        super().close()

    def readinto(self, buffer: bytearray | memoryview) -> int:  # type: ignore[override]
        pos, size = self._pos, self._extent.size
        want = min(len(buffer), size - pos)
        if want <= 0:
            return 0
        i = bisect.bisect_right(self._starts, pos) - 1
        segments = self._extent.segments
        if i >= 0 and pos < segments[i][0] + segments[i][2]:
            start, at, length = segments[i]
            data = os.pread(self._fd, min(want, start + length - pos), at + pos - start)
            if not data:
                raise OSError(f"{self._extent.archive}: the archive ended inside {self._extent.label}")
        else:  # a hole up to the next segment
            following = segments[i + 1][0] if i + 1 < len(segments) else size
            data = bytes(min(want, following - pos))
        buffer[: len(data)] = data
        self._pos += len(data)
        return len(data)


def open_indexable(source: object, label: str) -> tuple[BinaryIO, tuple[int, int], int]:
    """The archive opened for index mode, its identity and size; refused unless it is an
    uncompressed tar in a regular file."""
    if source == "-" or not isinstance(source, str | bytes | os.PathLike):
        raise ArchiveError(
            "tar index mode needs the archive as a file: the image refers to its data by offset "
            "(save standard input to a file and index that)",
            label,
        )
    try:
        archive = open(source, "rb")  # noqa: SIM115 (the reader closes it)
    except OSError as exc:
        raise ArchiveError(f"cannot open: {exc.strerror or exc}", label) from None
    try:
        st = os.fstat(archive.fileno())
        if not stat.S_ISREG(st.st_mode):
            raise ArchiveError("tar index mode needs a regular file: the image refers to it by offset", label)
        compression = compression_of(archive.read(8))
        if compression is not None:
            raise ArchiveError(
                f"a {compression}-compressed archive cannot be indexed: the image must point at plain "
                "tar data (decompress it first, or pack it without --tar=i)",
                label,
            )
        archive.seek(0)
    except BaseException:
        archive.close()
        raise
    return archive, (st.st_dev, st.st_ino), st.st_size
