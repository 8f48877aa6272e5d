"""Read a tar archive once, front to back, into tree entries; member data goes to a spool.

Headers are parsed by `tarfile` in stream mode (``r|``), which never seeks backwards and
understands ustar, GNU (long names, old sparse members) and PAX (long names, sizes, owners,
global headers, GNU sparse 0.0/0.1/1.0). Where it is not enough, this module goes further:

* `tarfile` ends an archive silently at a header with a bad checksum or at a short read; a
  `TarInfo` subclass turns both into an `ArchiveError` naming the byte offset, and an archive
  must end with its zero block;
* member data is read straight from the stream into the spool (`tarfile`'s sparse file object
  would feed every hole through Python as zeros): the stored segments of a sparse member are
  written at their offsets, and its holes stay holes;
* times, xattrs and ACLs come from `tar_meta` (nanoseconds, SCHILY/LIBARCHIVE xattrs, ACL text);
* `tarfile` keeps every `TarInfo` of a stream; the list is emptied as we go, so memory grows
  with the tree, not with the headers.
"""

from __future__ import annotations

import io
import os
import stat
import tarfile
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any, BinaryIO, cast

from ..limits import MAX_ID
from ..model import Metadata
from .archive_stream import READ_SIZE, ArchiveError, ArchiveStream, describe_source
from .spool import Spool, SpoolData
from .tar_index import ArchiveExtent, Segment, open_indexable
from .tar_meta import MetaError, mtime_ns, raw, xattrs

_FILE_TYPES = frozenset((tarfile.REGTYPE, tarfile.AREGTYPE, tarfile.CONTTYPE, tarfile.GNUTYPE_SPARSE))
_GNU_DUMPDIR = b"D"  # a directory whose data lists its contents (incremental dumps)
_GNU_VOLUME = b"V"  # a volume label, no file
# Header errors tarfile raises but does not export in its stubs.
_EOF_HEADER: type[Exception] = tarfile.EOFHeaderError  # type: ignore[attr-defined]
_EMPTY_HEADER: type[Exception] = tarfile.EmptyHeaderError  # type: ignore[attr-defined]


@dataclass(slots=True)
class Member:
    """One archive entry as the tree builder needs it.

    `kind` is a stat.S_IF* constant, or 0 for a hard link (then `link` is its target's path).
    `data` is set for regular files; `link` holds a symlink's target or a hard link's target.
    """

    name: str  # as in the archive, for messages
    parts: list[bytes]  # normalised path components; [] is the root
    kind: int
    meta: Metadata
    data: SpoolData | ArchiveExtent | None = None
    link: bytes = b""
    link_parts: list[bytes] | None = None
    rdev: tuple[int, int] = (0, 0)


def split_member_name(name: bytes) -> list[bytes]:
    """Path components as GNU tar extracts them: leading ``/`` dropped, ``.`` and empty parts
    skipped; ``..`` is refused (GNU tar skips such members; we refuse the archive)."""
    parts = [part for part in name.split(b"/") if part and part != b"."]
    if b".." in parts:
        raise MetaError("the path contains '..'")
    return parts


def _read(stream: Any, size: int) -> bytes:
    """`size` bytes of member data from tarfile's stream, taken from our buffered reader whole.

    tarfile's stream reads `bufsize` bytes at a time and keeps what is over by slicing, which
    costs a copy of the remainder per header when `bufsize` is large. It is left at one block
    (headers and padding come exactly) and raised to the size wanted only for a data read.
    """
    stream.bufsize = max(size, tarfile.BLOCKSIZE)
    try:
        data: bytes = stream.read(size)
    finally:
        stream.bufsize = tarfile.BLOCKSIZE
    return data


class _Unlabelled(Exception):
    """A header error raised inside tarfile, where the archive's name is not known."""


class _StrictInfo(tarfile.TarInfo):
    """A TarInfo whose header errors stop the archive with an error, not a silent end."""

    @classmethod
    def fromtarfile(cls, tar: tarfile.TarFile) -> _StrictInfo:
        fileobj: Any = tar.fileobj
        offset = fileobj.tell()
        try:
            return super().fromtarfile(tar)
        except _EOF_HEADER:
            raise  # a zero block: the end of the archive (refused after a PAX or GNU header)
        except _EMPTY_HEADER:
            if offset == 0:
                raise _Unlabelled("empty input: not a tar archive") from None
            raise _Unlabelled(
                f"truncated: the archive ends at byte {offset} without its end-of-archive block"
            ) from None
        except tarfile.HeaderError as exc:
            what = "not a tar archive" if offset == 0 else f"corrupt header at byte {offset}"
            raise _Unlabelled(f"{what} ({exc})") from None


class TarReader:
    """Iterates over the members of one archive; a context manager owning the stream.

    With a spool, the archive is streamed and member data copied to the spool. Without one
    (tar index mode), the archive must be an uncompressed regular file: tarfile seeks from
    header to header and member data stays where it is, as `ArchiveExtent`s.
    """

    def __init__(self, source: Any, spool: Spool | None) -> None:
        self.spool = spool
        self._tar: tarfile.TarFile | None = None
        self._indexed: BinaryIO | None = None
        if spool is None:
            self.label = describe_source(source)
            self._indexed, self._identity, self._archive_size = open_indexable(source, self.label)
            self._path = os.fsdecode(source)
        else:
            self.archive = ArchiveStream(source)
            self.label = self.archive.label

    def __enter__(self) -> TarReader:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        if self._tar is not None:
            self._tar.fileobj = None  # type: ignore[assignment]  # ours to close, not tarfile's
            self._tar = None
        if self._indexed is not None:
            self._indexed.close()
            self._indexed = None
        else:
            self.archive.close()

    def members(self) -> Iterator[Member]:
        """Every member in archive order; the archive must end properly."""
        try:
            yield from self._members()
        except _Unlabelled as exc:
            raise ArchiveError(str(exc), self.label) from None

    def _members(self) -> Iterator[Member]:
        try:
            if self._indexed is not None:  # seeking past the data: it is never read
                tar = tarfile.open(  # noqa: SIM115 (closed by close())
                    fileobj=self._indexed,
                    mode="r:",
                    tarinfo=_StrictInfo,
                    encoding="utf-8",
                    errors="surrogateescape",
                )
            else:
                tar = tarfile.open(  # noqa: SIM115 (a stream read member by member; closed by close())
                    fileobj=io.BufferedReader(self.archive.stream, READ_SIZE),
                    mode="r|",
                    tarinfo=_StrictInfo,
                    bufsize=tarfile.BLOCKSIZE,
                    encoding="utf-8",
                    errors="surrogateescape",
                )
        except tarfile.ReadError as exc:
            raise ArchiveError(f"not a tar archive ({exc})", self.label) from None
        self._tar = tar
        while True:
            try:
                info = tar.next()
            except tarfile.ReadError as exc:
                raise ArchiveError(f"corrupt archive near byte {tar.offset}: {exc}", self.label) from None
            except tarfile.StreamError as exc:
                raise ArchiveError(f"corrupt archive near byte {tar.offset}: {exc}", self.label) from None
            if info is None:
                break
            cast(Any, tar).members.clear()  # tarfile keeps every TarInfo of a stream
            member = self._member(tar, info)
            if member is not None:
                yield member
        if self._indexed is None:
            self.archive.drain()

    def _member(self, tar: tarfile.TarFile, info: tarfile.TarInfo) -> Member | None:
        name = info.name
        try:
            parts = split_member_name(raw(name))
            meta = self._metadata(info)
        except MetaError as exc:
            raise ArchiveError(f"member {name!r} at byte {info.offset}: {exc}", self.label) from None
        kind = info.type
        member = Member(name, parts, 0, meta)
        if kind in _FILE_TYPES:
            member.kind = stat.S_IFREG
            if self.spool is None:
                member.data = self._extent(info)
            else:
                member.data = self._spool(tar, info, parts, self.spool)
        elif kind == tarfile.DIRTYPE or kind == _GNU_DUMPDIR:
            member.kind = stat.S_IFDIR
        elif kind == tarfile.SYMTYPE:
            member.kind = stat.S_IFLNK
            member.link = raw(info.linkname)
        elif kind == tarfile.LNKTYPE:
            member.link = raw(info.linkname)
            try:
                member.link_parts = split_member_name(member.link)
            except MetaError as exc:
                raise ArchiveError(f"member {name!r}: hard link target {exc}", self.label) from None
        elif kind in (tarfile.CHRTYPE, tarfile.BLKTYPE):
            member.kind = stat.S_IFCHR if kind == tarfile.CHRTYPE else stat.S_IFBLK
            member.rdev = (info.devmajor, info.devminor)
        elif kind == tarfile.FIFOTYPE:
            member.kind = stat.S_IFIFO
        elif kind == _GNU_VOLUME:
            return None
        else:
            raise ArchiveError(
                f"member {name!r} at byte {info.offset}: unsupported member type {kind!r}", self.label
            )
        return member

    def _metadata(self, info: tarfile.TarInfo) -> Metadata:
        for what, value in (("uid", info.uid), ("gid", info.gid)):
            if not 0 <= value <= MAX_ID:
                raise MetaError(f"{what} {value} is outside 0..{MAX_ID}")
        return Metadata(info.mode & 0o7777, info.uid, info.gid, mtime_ns(info), xattrs(info.pax_headers))

    def _extent(self, info: tarfile.TarInfo) -> ArchiveExtent:
        """Where the member's data lies in the archive (segments of a sparse member, in order)."""
        size = info.size
        sparse: list[tuple[int, int]] | None = getattr(info, "sparse", None)
        runs = [(0, size)] if sparse is None else [(off, n) for off, n in sparse if n]
        segments: list[Segment] = []
        at = info.offset_data
        end = 0
        for offset, length in runs:
            if offset < end or offset + length > size:
                raise ArchiveError(
                    f"member {info.name!r}: sparse segment {offset}+{length} is out of order or outside "
                    f"its size {size}",
                    self.label,
                )
            segments.append((offset, at, length))
            at += length
            end = offset + length
        if at > self._archive_size:
            raise ArchiveError(
                f"truncated: member {info.name!r} ends at byte {self._archive_size}, "
                f"{at - self._archive_size} bytes short of its data",
                self.label,
            )
        return ArchiveExtent(self._path, self._identity, tuple(segments), size, info.name)

    def _spool(
        self, tar: tarfile.TarFile, info: tarfile.TarInfo, parts: list[bytes], spool: Spool
    ) -> SpoolData:
        """Copy the member's data to the spool, holes of a sparse member left unwritten."""
        stream: Any = tar.fileobj
        stream.seek(info.offset_data)
        size = info.size
        sparse: list[tuple[int, int]] | None = getattr(info, "sparse", None)
        segments = [(0, size)] if sparse is None else [(off, n) for off, n in sparse if n]
        base = spool.reserve(size)
        for offset, length in segments:
            if offset < 0 or offset + length > size:
                raise ArchiveError(
                    f"member {info.name!r}: sparse segment {offset}+{length} is outside its size {size}",
                    self.label,
                )
            done = 0
            while done < length:
                chunk = _read(stream, min(READ_SIZE, length - done))
                if not chunk:
                    raise ArchiveError(
                        f"truncated: member {info.name!r} ends at byte {stream.tell()}, "
                        f"{length - done} bytes short of its data",
                        self.label,
                    )
                spool.write_at(chunk, base + offset + done)
                done += len(chunk)
        label = f"{self.label}:{os.fsdecode(b'/'.join(parts))}"
        return SpoolData(spool, base, size, label)
