"""The public reader: `open_image()` and `Image` (list, stat, read, xattrs, extract).

Paths are str (encoded with os.fsencode, so surrogate-escaped non-UTF-8 names round-trip) or
bytes, absolute or relative to the root. Components are looked up in the image's own dirents,
"." and ".." included, and symlinks are never followed (stat is lstat). Every method also
exists by NID (`stat_nid`, `open_nid`, ...) for tools that walk the image themselves.
"""

from __future__ import annotations

import os
from collections.abc import Iterator, Sequence
from types import TracebackType
from typing import NamedTuple

from ..errors import CorruptImageError, InvalidInputError, NotFoundError
from ..format.constants import EROFS_PATH_MAX, FileType
from . import dirs, xattrs
from .data import ImageFile, InodeData, Run, copy_segments, copy_uncompressed, plan_uncompressed
from .datamap import Segment, iter_segments, map_uncompressed
from .extract import ExtractResult, extract_tree
from .inode import InodeInfo, Stat, decode_inode, make_stat
from .names import escape_name
from .storage import SourceLike, Storage
from .superblock import SuperblockInfo, read_superblock
from .walk import walk_dirs
from .zmap import Extent

PathArg = str | bytes | os.PathLike[str] | os.PathLike[bytes]
_INODE_CACHE_MAX = 4096


class DirEntry(NamedTuple):
    """An entry yielded by `Image.scandir`."""

    name: str
    nid: int
    type: FileType


def _path_bytes(path: PathArg) -> bytes:
    raw = os.fspath(path)
    return raw if isinstance(raw, bytes) else os.fsencode(raw)


def _components(path: bytes) -> list[bytes]:
    return [part for part in path.split(b"/") if part]


def open_image(
    source: SourceLike, devices: Sequence[SourceLike] = (), *, strict_checksum: bool = True
) -> Image:
    """Open an EROFS image for reading.

    `source` is a path or a readable, seekable binary file object (left open on close).
    `devices` are the extra devices in device-table order (like `mount -o device=`). If any
    are given their number must equal the table's, or InvalidInputError is raised at once (as
    the kernel refuses the mount). With none given, extra-device data is read from the primary
    at `uniaddr + blkaddr` (the kernel's flat mode); if it is not there, reading it raises
    InvalidInputError naming the device slot. `strict_checksum=False` opens an image whose
    superblock checksum fails (SuperblockInfo.checksum_verified says so).
    """
    storage = Storage(source, devices)
    try:
        sb = read_superblock(storage, strict_checksum=strict_checksum)
    except BaseException:
        storage.close()
        raise
    return Image(storage, sb)


class Image:
    """An open EROFS image. Use as a context manager or call `close()`."""

    def __init__(self, storage: Storage, superblock: SuperblockInfo) -> None:
        self._storage = storage
        self._sb = superblock
        self._inodes: dict[int, InodeInfo] = {}

    # -- lifecycle ------------------------------------------------------------------------

    def close(self) -> None:
        """Close the files this image opened (never caller-provided file objects)."""
        self._storage.close()

    def __enter__(self) -> Image:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    @property
    def superblock(self) -> SuperblockInfo:
        """The decoded superblock (with device slots, compression configs, long prefixes)."""
        return self._sb

    @property
    def storage(self) -> Storage:
        """Raw byte access to the primary and extra devices (for check/dump tools)."""
        return self._storage

    @property
    def root_nid(self) -> int:
        """NID of the root directory."""
        return self._sb.root_nid

    # -- by NID ---------------------------------------------------------------------------

    def inode(self, nid: int) -> InodeInfo:
        """The decoded inode at `nid` (cached)."""
        info = self._inodes.get(nid)
        if info is None:
            info = decode_inode(self._storage, self._sb, nid)
            if len(self._inodes) >= _INODE_CACHE_MAX:
                self._inodes.clear()
            self._inodes[nid] = info
        return info

    def data_nid(self, nid: int) -> InodeData:
        """Random-access reader of the inode's data (any layout)."""
        return InodeData(self._storage, self._sb, self.inode(nid))

    def stat_nid(self, nid: int) -> Stat:
        """stat of the inode at `nid`."""
        info = self.inode(nid)
        return make_stat(info, self._sb, xattrs.count_entries(self._storage, self._sb, info))

    def copy_nid(self, nid: int, fd: int) -> None:
        """Write the inode's data into the empty regular file open (writable) at `fd`.

        Holes stay holes; uncompressed data is copied in the kernel (see InodeData.copy_to).
        """
        info = self.inode(nid)
        if info.compressed:
            InodeData(self._storage, self._sb, info).copy_to(fd)
        else:
            copy_uncompressed(self._storage, self._sb, info, fd)

    def copy_plan_nid(self, nid: int) -> list[Run] | None:
        """The data runs `copy_planned` copies for an uncompressed inode (None if compressed).

        Planning reads and checks the mapping; the copy is then system calls only, so it can
        run on another thread.
        """
        info = self.inode(nid)
        return None if info.compressed else plan_uncompressed(self._storage, self._sb, info)

    def copy_planned(self, nid: int, size: int, segments: list[Run], fd: int) -> None:
        """Copy the runs of `copy_plan_nid` into the new, empty file at `fd` (`size` bytes)."""
        copy_segments(self._storage, nid, size, segments, fd)

    def open_nid(self, nid: int, name: str = "") -> ImageFile:
        """A read-only file object over the inode's data (any file type with data)."""
        return ImageFile(self.data_nid(nid), name or f"nid:{nid}")

    def _dir_data(self, nid: int, path: bytes | None = None) -> InodeData:
        info = self.inode(nid)
        if not info.is_dir:
            shown = escape_name(path) if path is not None else f"nid {nid}"
            raise NotFoundError("not a directory", shown)
        return InodeData(self._storage, self._sb, info)

    def scandir_nid(self, nid: int) -> Iterator[dirs.RawDirEntry]:
        """Entries of the directory at `nid` in on-disk order, without "." and ".."."""
        for entry in dirs.iter_entries(self._dir_data(nid), self._sb.block_size):
            if entry.name not in (b".", b".."):
                yield entry

    def listdir_nid(self, nid: int) -> list[bytes]:
        """Names in the directory at `nid` (bytes, without "." and "..")."""
        return [entry.name for entry in self.scandir_nid(nid)]

    def lookup_nid(self, dir_nid: int, name: bytes) -> int | None:
        """The NID of `name` in directory `dir_nid` (kernel lookup rules), None if absent."""
        entry = dirs.lookup(self._dir_data(dir_nid), self._sb.block_size, name)
        return None if entry is None else entry.nid

    def readlink_nid(self, nid: int) -> bytes:
        """The raw target of the symlink at `nid`."""
        info = self.inode(nid)
        if info.file_type != FileType.SYMLINK:
            raise InvalidInputError(f"nid {nid} is not a symlink")
        if info.size >= EROFS_PATH_MAX:
            raise CorruptImageError(f"symlink target of {info.size} bytes", nid=nid, area="symlink")
        return InodeData(self._storage, self._sb, info).read(0, info.size)

    def xattrs_nid(self, nid: int) -> dict[bytes, bytes]:
        """Full xattr name -> raw value of the inode at `nid`."""
        return xattrs.xattr_dict(self._storage, self._sb, self.inode(nid))

    def xattr_records_nid(self, nid: int) -> list[xattrs.XattrRecord]:
        """Every stored xattr entry (shared and inline) with offsets, for check/dump tools."""
        return xattrs.records(self._storage, self._sb, self.inode(nid))

    def extents_nid(self, nid: int) -> list[Segment] | list[Extent]:
        """The data mapping of an inode: Segments (uncompressed) or Extents (compressed)."""
        data = self.data_nid(nid)
        if data.zmap is not None:
            return data.zmap.extents()
        segments: list[Segment] = []
        pos = 0
        while pos < data.size:
            seg = map_uncompressed(self._storage, self._sb, data.inode, pos)
            if seg.end <= pos:
                raise CorruptImageError("mapping makes no progress", nid=nid, area="file data")
            segments.append(seg)
            pos = seg.end
        return segments

    def segments_nid(self, nid: int) -> Iterator[Segment]:
        """Where an uncompressed inode's bytes are: maximal runs in file order, holes included
        (device None). Compressed inodes have extents instead (see `extents_nid`)."""
        info = self.inode(nid)
        if info.compressed:
            raise InvalidInputError(f"nid {nid} is compressed: it has extents, not segments")
        InodeData(self._storage, self._sb, info)  # refuses runs beyond the image
        return iter_segments(self._storage, self._sb, info)

    # -- by path --------------------------------------------------------------------------

    def lookup(self, path: PathArg) -> int:
        """NID of `path`; NotFoundError if a component is missing or not a directory."""
        raw = _path_bytes(path)
        parts = _components(raw)
        nid = self.root_nid
        for depth, part in enumerate(parts):
            data = self._dir_data(nid, b"/" + b"/".join(parts[:depth]))
            entry = dirs.lookup(data, self._sb.block_size, part)
            if entry is None:
                raise NotFoundError("no such file or directory", escape_name(raw))
            nid = entry.nid
        return nid

    def stat(self, path: PathArg) -> Stat:
        """lstat of `path`."""
        return self.stat_nid(self.lookup(path))

    def exists(self, path: PathArg) -> bool:
        """Whether `path` resolves (without following symlinks)."""
        try:
            self.lookup(path)
        except NotFoundError:
            return False
        return True

    def listdir(self, path: PathArg = "/") -> list[str]:
        """Names in the directory (str via os.fsdecode; no "." or "..")."""
        return [os.fsdecode(name) for name in self.listdir_nid(self._dir_nid(path))]

    def scandir(self, path: PathArg = "/") -> Iterator[DirEntry]:
        """(name, nid, FileType) for each entry of the directory, in on-disk order."""
        for entry in self.scandir_nid(self._dir_nid(path)):
            yield DirEntry(os.fsdecode(entry.name), entry.nid, entry.file_type)

    def _dir_nid(self, path: PathArg) -> int:
        nid = self.lookup(path)
        self._dir_data(nid, _path_bytes(path))
        return nid

    def walk(self, top: PathArg = "/") -> Iterator[tuple[str, list[str], list[str]]]:
        """Like os.walk (top-down; prune by editing dirnames): (dirpath, dirnames, filenames).

        Directory symlinks are listed in filenames and never followed. A directory reached twice
        (a loop, or a hard-linked directory) raises CorruptImageError.
        """
        start = _path_bytes(top) or b"/"
        for visit in walk_dirs(self._listing, self._dir_nid(top), start):
            dirnames: list[str] = []
            filenames: list[str] = []
            children: dict[str, int] = {}
            for entry in visit.entries:
                name = os.fsdecode(entry.name)
                if entry.file_type == FileType.DIR:
                    dirnames.append(name)
                    children[name] = entry.nid
                else:
                    filenames.append(name)
            yield os.fsdecode(visit.path), dirnames, filenames
            visit.descend = [(os.fsencode(name), children[name]) for name in dirnames if name in children]

    def _listing(self, nid: int) -> list[dirs.RawDirEntry]:
        return list(self.scandir_nid(nid))

    def readlink(self, path: PathArg) -> str:
        """The target of a symlink (os.fsdecode of the stored bytes)."""
        return os.fsdecode(self.readlink_nid(self.lookup(path)))

    def xattrs(self, path: PathArg) -> dict[str, bytes]:
        """Full xattr names (str) -> raw values, e.g. {"user.foo": b"bar"}."""
        return {os.fsdecode(k): v for k, v in self.xattrs_nid(self.lookup(path)).items()}

    def open(self, path: PathArg) -> ImageFile:
        """A read-only, seekable binary file object over the data of `path`."""
        raw = _path_bytes(path)
        nid = self.lookup(raw)
        if self.inode(nid).is_dir:
            raise InvalidInputError("is a directory", escape_name(raw))
        return self.open_nid(nid, os.fsdecode(raw))

    def read_bytes(self, path: PathArg) -> bytes:
        """The whole content of a file (materialised: use open() for large files)."""
        with self.open(path) as f:
            return f.read()

    def extract(
        self, dest: str | os.PathLike[str], path: PathArg = "/", *, parallel: bool = False
    ) -> ExtractResult:
        """Recreate `path` (a directory tree or a single entry) at `dest`; see reader.extract.

        `parallel`: create files in a forked process while this one decodes the image (two
        cores do it in about half the time; ignored when other threads run).
        """
        return extract_tree(self, os.fspath(dest), self.lookup(path), parallel=parallel)
