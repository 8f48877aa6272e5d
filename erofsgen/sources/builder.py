"""Build an image entry by entry, `tarfile`-style, and write it when the builder closes.

Example::

    import erofsgen
    from erofsgen import WriteOptions

    with erofsgen.ImageBuilder("out.img", options=WriteOptions(block_size=4096)) as b:
        b.mkdir("etc", mode=0o755, uid=0, gid=0, mtime=1700000000)  # parents are auto-created
        b.add_file("etc/hosts", data=b"127.0.0.1 localhost\\n", mode=0o644)
        b.add_file("bin/tool", path="/usr/bin/env")  # or fileobj=f (seekable; size= optional)
        b.symlink("lib", "usr/lib")  # "lib" -> "usr/lib"
        b.mknod("dev/null", "c", 1, 3)
        b.mkfifo("run/fifo")
        b.mksocket("run/sock")
        b.link("etc/hosts.bak", "etc/hosts")  # a hard link to an existing non-directory
        b.setxattr("etc/hosts", "user.origin", b"builder")
        b.add_tree("/srv/www", "var/www")  # a directory on disk grafted at a path
        b.tree  # the Directory being built

The image is written at `close()` (or `write()`), and only when the with-block did not raise.
Names are paths inside the image, `str` (encoded with surrogateescape) or `bytes`; a leading
``/`` is ignored and ``""`` or ``"/"`` is the root. Every call validates at once and raises
`InvalidInputError` naming the path, leaving the tree unchanged.

Every call accepts `mode`, `uid`, `gid`, `mtime` (seconds, int or float) or `mtime_ns`, and
`xattrs` (merged into the entry's). Unset values default to the builder's: owner 0:0, its
`mtime`/`mtime_ns` (0 unless given), mode 0o755 for directories, 0o777 for symlinks and 0o644
otherwise — except `add_file(path=...)`, whose mode defaults to the source file's. Directories
created implicitly as parents get the defaults and may be given metadata later by `mkdir`.
"""

from __future__ import annotations

import os
import stat
from collections.abc import Iterable, Mapping
from fractions import Fraction
from types import TracebackType
from typing import TYPE_CHECKING, BinaryIO, TypedDict, Unpack

from ..errors import InvalidInputError
from ..format.constants import EROFS_NAME_LEN, EROFS_PATH_MAX, XATTR_NAME_MAX
from ..model import (
    BytesData,
    DataSource,
    Device,
    Directory,
    Fifo,
    File,
    FileObjectData,
    Metadata,
    Node,
    PathData,
    Socket,
    Symlink,
)
from ..writer.options import ProgressCallback, WriteOptions
from .directory import tree_from_directory

if TYPE_CHECKING:
    from ..writer import ImageSummary

Name = str | bytes | os.PathLike[str] | os.PathLike[bytes]
ID_MAX = 2**32 - 1


class EntryOptions(TypedDict, total=False):
    """Metadata keywords every builder call accepts."""

    mode: int
    uid: int
    gid: int
    mtime: int | float
    mtime_ns: int
    xattrs: Mapping[str | bytes, bytes]


class ImageBuilder:
    """Collects a tree through `tarfile`-like calls and writes it as an EROFS image on close."""

    def __init__(
        self,
        output: str | os.PathLike[str] | None = None,
        *,
        options: WriteOptions | None = None,
        progress: ProgressCallback | None = None,
        mtime: int | float | None = None,
        mtime_ns: int | None = None,
    ) -> None:
        """`output` may be None to only build a tree (see `build_tree`); `mtime`/`mtime_ns` is
        the time of entries given none."""
        self.output = output
        self.options = options if options is not None else WriteOptions()
        self.progress = progress
        self._default_mtime_ns = _mtime_ns("/", mtime, mtime_ns, 0)
        self._tree = Directory(self._defaults(0o755))
        self._implicit: set[int] = {id(self._tree)}  # directories no call has given metadata yet
        self._closed = False

    @property
    def tree(self) -> Directory:
        """The root of the tree being built; changes to it go into the image."""
        return self._tree

    # -- context manager and finishing ------------------------------------------------------

    def __enter__(self) -> ImageBuilder:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if exc_type is None:
            self.close()
        else:
            self._closed = True  # the block failed: write nothing

    def build_tree(self) -> Directory:
        """Finish without writing and return the tree."""
        self._check_open()
        self._closed = True
        return self._tree

    def write(self) -> ImageSummary:
        """Write the image to `output` and close the builder."""
        self._check_open()
        if self.output is None:
            raise InvalidInputError("the builder has no output path to write to")
        from ..writer import write_image

        summary = write_image(self._tree, self.output, self.options, progress=self.progress)
        self._closed = True
        return summary

    def close(self) -> None:
        """Write the image if there is an output path and it has not been written yet."""
        if self._closed:
            return
        if self.output is None:
            self._closed = True
        else:
            self.write()

    # -- entries ----------------------------------------------------------------------------

    def mkdir(self, name: Name, **meta: Unpack[EntryOptions]) -> Directory:
        """Create a directory, or give metadata to one created implicitly as a parent."""
        where, parts = _split(name)
        existing = self._lookup_implicit(parts)
        if existing is not None:
            self._update(existing, where, meta)
            self._implicit.discard(id(existing))
            return existing
        directory = Directory(self._meta(where, meta, 0o755, stat.S_IFDIR))
        self._insert(where, parts, directory)
        return directory

    def add_file(
        self,
        name: Name,
        data: bytes | bytearray | memoryview | None = None,
        *,
        path: str | bytes | os.PathLike[str] | os.PathLike[bytes] | None = None,
        fileobj: BinaryIO | None = None,
        size: int | None = None,
        **meta: Unpack[EntryOptions],
    ) -> File:
        """Add a regular file whose bytes are `data`, the file at `path`, or `fileobj` from its
        current position (`size` bytes, default to its end). No source: an empty file."""
        where, parts = _split(name)
        if sum(source is not None for source in (data, path, fileobj)) > 1:
            raise InvalidInputError("give only one of data, path and fileobj", where)
        if size is not None and fileobj is None:
            raise InvalidInputError("size applies only to fileobj", where)
        default_mode = 0o644
        source: DataSource
        if path is not None:
            source, default_mode = _path_source(path, where)
        elif fileobj is not None:
            source = _fileobj_source(fileobj, size, where)
        else:
            source = BytesData(bytes(data or b""))
        node = File(self._meta(where, meta, default_mode, stat.S_IFREG), source)
        self._insert(where, parts, node)
        return node

    def symlink(self, name: Name, target: str | bytes, **meta: Unpack[EntryOptions]) -> Symlink:
        """Add a symlink `name` pointing at `target` (stored as given, not resolved)."""
        where, parts = _split(name)
        raw = os.fsencode(target)
        if not raw or len(raw) >= EROFS_PATH_MAX or b"\0" in raw:
            raise InvalidInputError(
                f"symlink target must be 1..{EROFS_PATH_MAX - 1} bytes without NUL", where
            )
        node = Symlink(self._meta(where, meta, 0o777, stat.S_IFLNK), raw)
        self._insert(where, parts, node)
        return node

    def mknod(self, name: Name, kind: str, major: int, minor: int, **meta: Unpack[EntryOptions]) -> Device:
        """Add a character (`kind` "c") or block ("b") device node."""
        where, parts = _split(name)
        if kind not in ("c", "b"):
            raise InvalidInputError(f"device kind {kind!r} is not 'c' or 'b'", where)
        if not (0 <= major < 4096 and 0 <= minor < 2**20):
            raise InvalidInputError(f"device number {major}:{minor} does not fit 12:20 bits", where)
        file_type = stat.S_IFBLK if kind == "b" else stat.S_IFCHR
        node = Device(self._meta(where, meta, 0o644, file_type), kind == "b", major, minor)
        self._insert(where, parts, node)
        return node

    def mkfifo(self, name: Name, **meta: Unpack[EntryOptions]) -> Fifo:
        """Add a named pipe."""
        where, parts = _split(name)
        node = Fifo(self._meta(where, meta, 0o644, stat.S_IFIFO))
        self._insert(where, parts, node)
        return node

    def mksocket(self, name: Name, **meta: Unpack[EntryOptions]) -> Socket:
        """Add a socket inode."""
        where, parts = _split(name)
        node = Socket(self._meta(where, meta, 0o644, stat.S_IFSOCK))
        self._insert(where, parts, node)
        return node

    def link(self, name: Name, target: Name, **meta: Unpack[EntryOptions]) -> Node:
        """Add `name` as a hard link to the existing non-directory `target`; metadata given here
        changes the shared inode."""
        where, parts = _split(name)
        target_where, target_parts = _split(target)
        node = self._lookup(target_parts, target_where)
        if isinstance(node, Directory):
            raise InvalidInputError(f"cannot hard-link to directory {target_where}", where)
        self._check_free(where, parts)
        self._update(node, where, meta)
        self._insert(where, parts, node)
        return node

    def setxattr(self, name: Name, key: str | bytes, value: bytes) -> None:
        """Set the extended attribute `key` (full name with its prefix) of an existing entry."""
        where, parts = _split(name)
        node = self._lookup(parts, where)
        self._update(node, where, {"xattrs": {key: value}})

    def set_metadata(self, name: Name, **meta: Unpack[EntryOptions]) -> Node:
        """Change metadata of an existing entry (the root is ``""``)."""
        where, parts = _split(name)
        node = self._lookup(parts, where)
        self._update(node, where, meta)
        self._implicit.discard(id(node))
        return node

    def add_tree(
        self,
        source: str | bytes | os.PathLike[str] | os.PathLike[bytes],
        name: Name = "",
        *,
        exclude_paths: Iterable[str | bytes] = (),
        exclude_regexes: Iterable[str | bytes] = (),
        read_xattrs: bool = True,
        **meta: Unpack[EntryOptions],
    ) -> Directory:
        """Graft the directory `source` on disk at `name`: a new path, or the root or a directory
        created implicitly, which then takes the source's metadata and gains its children."""
        where, parts = _split(name)
        self._check_open()
        walked = tree_from_directory(
            source, exclude_paths=exclude_paths, exclude_regexes=exclude_regexes, read_xattrs=read_xattrs
        )
        self._update(walked, where, meta)
        existing = self._lookup_implicit(parts) if parts else self._tree
        if existing is None:
            self._insert(where, parts, walked)
            return walked
        for child in walked.children:
            if child in existing.children:
                raise InvalidInputError("already exists", _join(where, child))
        existing.meta = walked.meta
        existing.children.update(walked.children)
        self._implicit.discard(id(existing))
        return existing

    # -- internals --------------------------------------------------------------------------

    def _check_open(self) -> None:
        if self._closed:
            raise InvalidInputError("the builder is closed")

    def _defaults(self, mode: int) -> Metadata:
        return Metadata(mode=mode, mtime_ns=self._default_mtime_ns)

    def _meta(self, where: str, meta: EntryOptions, default_mode: int, file_type: int) -> Metadata:
        result = self._defaults(default_mode)
        _apply(result, where, meta, file_type)
        return result

    def _update(self, node: Node, where: str, meta: EntryOptions) -> None:
        self._check_open()
        _apply(node.meta, where, meta, node.file_type)

    def _lookup(self, parts: list[bytes], where: str) -> Node:
        node: Node = self._tree
        for part in parts:
            if not isinstance(node, Directory) or part not in node.children:
                raise InvalidInputError("no such entry in the image", where)
            node = node.children[part]
        return node

    def _lookup_implicit(self, parts: list[bytes]) -> Directory | None:
        """The implicit directory at `parts`, if there is one."""
        node: Node = self._tree
        for part in parts:
            if not isinstance(node, Directory) or part not in node.children:
                return None
            node = node.children[part]
        return node if isinstance(node, Directory) and id(node) in self._implicit else None

    def _check_free(self, where: str, parts: list[bytes]) -> None:
        """Raise unless `parts` names a path that could be inserted."""
        if not parts:
            raise InvalidInputError("already exists", where)
        node: Node = self._tree
        for i, part in enumerate(parts):
            if not isinstance(node, Directory):
                raise InvalidInputError(f"parent /{_show(parts[:i])} is not a directory", where)
            if part not in node.children:
                return
            node = node.children[part]
        raise InvalidInputError("already exists", where)

    def _insert(self, where: str, parts: list[bytes], node: Node) -> None:
        self._check_open()
        self._check_free(where, parts)
        directory = self._tree
        for part in parts[:-1]:
            child = directory.children.get(part)
            if child is None:
                child = directory.children[part] = Directory(self._defaults(0o755))
                self._implicit.add(id(child))
            assert isinstance(child, Directory)  # _check_free made sure
            directory = child
        directory.children[parts[-1]] = node


def _split(name: Name) -> tuple[str, list[bytes]]:
    """The display path ("/a/b") and validated components of an image path."""
    raw = os.fsencode(name).lstrip(b"/")
    where = "/" + os.fsdecode(raw)
    if not raw:
        return where, []
    parts = raw.split(b"/")
    for part in parts:
        if not part or part in (b".", b".."):
            raise InvalidInputError(f"invalid path component {part!r}", where)
        if b"\0" in part:
            raise InvalidInputError("path contains NUL", where)
        if len(part) > EROFS_NAME_LEN:
            raise InvalidInputError(f"name is {len(part)} bytes, longer than {EROFS_NAME_LEN}", where)
    return where, parts


def _show(parts: list[bytes]) -> str:
    return os.fsdecode(b"/".join(parts))


def _join(where: str, child: bytes) -> str:
    return where.rstrip("/") + "/" + os.fsdecode(child)


def _apply(meta: Metadata, where: str, options: EntryOptions, file_type: int) -> None:
    """Validate every given value first, then set them, so a bad value changes nothing."""
    mode = _mode(where, options["mode"], file_type) if "mode" in options else meta.mode
    uid = _owner(where, "uid", options.get("uid", meta.uid))
    gid = _owner(where, "gid", options.get("gid", meta.gid))
    mtime_ns = _mtime_ns(where, options.get("mtime"), options.get("mtime_ns"), meta.mtime_ns)
    xattrs = _xattrs(where, options.get("xattrs", {}))
    meta.mode, meta.uid, meta.gid, meta.mtime_ns = mode, uid, gid, mtime_ns
    meta.xattrs.update(xattrs)


def _mode(where: str, mode: int, file_type: int) -> int:
    # Accept st_mode values too, as long as their type bits agree with the entry.
    if mode < 0 or (mode & ~0o7777 and mode & ~0o7777 != file_type):
        raise InvalidInputError(f"mode {mode:#o} is not permission bits of this entry", where)
    return mode & 0o7777


def _owner(where: str, what: str, value: int) -> int:
    if not isinstance(value, int) or not 0 <= value <= ID_MAX:
        raise InvalidInputError(f"{what} {value!r} is outside 0..{ID_MAX}", where)
    return value


def _mtime_ns(where: str, mtime: int | float | None, mtime_ns: int | None, default: int) -> int:
    if mtime is not None and mtime_ns is not None:
        raise InvalidInputError("give mtime or mtime_ns, not both", where)
    if mtime_ns is not None:
        return int(mtime_ns)
    if mtime is not None:
        return round(Fraction(mtime) * 1_000_000_000)  # exact for the float given
    return default


def _xattrs(where: str, xattrs: Mapping[str | bytes, bytes]) -> dict[bytes, bytes]:
    result: dict[bytes, bytes] = {}
    for key, value in xattrs.items():
        raw = os.fsencode(key)
        if not raw or len(raw) > XATTR_NAME_MAX or b"\0" in raw:
            raise InvalidInputError(f"xattr name {key!r} is empty, too long or contains NUL", where)
        if not isinstance(value, bytes | bytearray | memoryview):
            raise InvalidInputError(f"xattr {key!r} value must be bytes", where)
        result[raw] = bytes(value)
    return result


def _path_source(
    path: str | bytes | os.PathLike[str] | os.PathLike[bytes], where: str
) -> tuple[PathData, int]:
    """The data of the file at `path` (symlinks followed) and its permission bits."""
    try:
        st = os.stat(path)
    except OSError as exc:
        raise InvalidInputError(f"cannot stat {os.fsdecode(path)}: {exc.strerror}", where) from None
    if not stat.S_ISREG(st.st_mode):
        raise InvalidInputError(f"{os.fsdecode(path)} is not a regular file", where)
    # The writer opens without following symlinks, so hand it the file the link leads to.
    return PathData(os.path.realpath(os.fspath(path)), st.st_size), st.st_mode & 0o7777


def _fileobj_source(fileobj: BinaryIO, size: int | None, where: str) -> FileObjectData:
    try:
        offset = fileobj.tell()
        end = fileobj.seek(0, os.SEEK_END)
        fileobj.seek(offset)
    except (OSError, ValueError) as exc:
        raise InvalidInputError(f"fileobj must be seekable: {exc}", where) from None
    available = end - offset
    if size is None:
        size = available
    elif not 0 <= size <= available:
        raise InvalidInputError(f"size {size} is beyond the {available} bytes left in fileobj", where)
    label = getattr(fileobj, "name", None)
    return FileObjectData(fileobj, offset, size, label if isinstance(label, str) else "<file object>")
