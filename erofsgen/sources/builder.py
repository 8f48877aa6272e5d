"""Build an image entry by entry, `tarfile`-style, and write it when the builder closes.

Example::

    import erofsgen
    from erofsgen import WriteOptions

    with erofsgen.ImageBuilder("out.img", options=WriteOptions(block_size=4096)) as b:
        b.mkdir("etc", mode=0o755, uid=0, gid=0, mtime=1700000000)  # parents are auto-created
        b.add_file("etc/hosts", data=b"127.0.0.1 localhost\\n", mode=0o644)
        b.add_file("bin/tool", path="/usr/bin/env")  # or fileobj=f (seekable; size= optional)
        b.symlink("lib", target="usr/lib")  # the link "lib" points at "usr/lib" (ln -s usr/lib lib)
        b.mknod("dev/null", "c", 1, 3)
        b.mkfifo("run/fifo")
        b.mksocket("run/sock")
        b.link("etc/hosts.bak", target="etc/hosts")  # a hard link to an existing non-directory
        b.setxattr("etc/hosts", "user.origin", b"builder")
        b.add_tree("/srv/www", "var/www")  # a directory on disk grafted at a path
        b.tree  # the Directory being built
    print(b.summary.size)  # the ImageSummary of the image written when the block ended

The image is written at `close()` (or `write()`), and only when the with-block did not raise.
Names are paths inside the image, `str` (encoded with surrogateescape) or `bytes`; a leading
``/`` is ignored and ``""`` or ``"/"`` is the root.

The rules every call follows are in `ImageBuilder`'s docstring.
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from types import TracebackType
from typing import TYPE_CHECKING, BinaryIO, TypeVar

from ..errors import InvalidInputError
from ..format.constants import EROFS_PATH_MAX
from ..model import DataSource, Device, Directory, Fifo, File, Metadata, Node, Socket, Symlink, iter_tree
from ..writer.options import ProgressCallback, WriteOptions
from .arguments import (
    EntryMeta,
    Name,
    Xattrs,
    apply_entry,
    bytes_source,
    check_bool,
    check_fileobjs_open,
    check_int,
    check_output,
    check_times,
    fileobj_source,
    fs_bytes,
    fs_path,
    name_list,
    path_source,
    split_name,
    xattr_name,
    xattr_value,
)
from .directory import tree_from_directory

if TYPE_CHECKING:
    from ..writer import ImageSummary

__all__ = ["EntryMeta", "ImageBuilder", "Name", "Xattrs"]

_N = TypeVar("_N", bound=Node)
_ORDER = "the new entry's name comes first, then target=: the reverse of os.{}'s order"


class ImageBuilder:
    """Collects a tree through `tarfile`-like calls and writes it as an EROFS image on close.

    `symlink` and `link` take the new entry's name first and what it points at second, the
    reverse of `os.symlink(src, dst)`'s positional order: ``b.symlink("lib", target="usr/lib")``
    is ``os.symlink(src="usr/lib", dst="lib")`` (``ln -s usr/lib lib``). Passing `target=` by
    keyword makes the order plain.

    Every call validates all its arguments at once and raises `InvalidInputError` naming the path,
    leaving the tree unchanged; a value of the wrong type is refused, never converted (`True` is
    not a uid). Every entry call takes these keyword-only metadata arguments; None (the default)
    means "not given":

    - `mode`: permission bits (an st_mode is accepted when its file type is the entry's);
    - `uid`, `gid`: an int in 0..2**32-2 (`erofsgen.limits.MAX_ID`; (uid_t)-1 owns nothing);
    - `mtime`: seconds since the epoch, an int or a finite float (exact: 1.5 is 1.5 s), or
      `mtime_ns`: an int of nanoseconds; not both;
    - `xattrs`: a mapping merged into the entry's, full names with their prefix (``user.x``) as
      `str` (os.fsencode: UTF-8 with surrogateescape) or `bytes`, values bytes-like (`bytes`,
      `bytearray`, `memoryview`; a `str` value is refused). A name must have something after its
      namespace (``user.`` alone is refused, as Linux refuses it) and a prefix EROFS can store.

    Unset values default to the builder's: owner 0:0, its `mtime`/`mtime_ns` (0 unless given),
    mode 0o755 for directories, 0o777 for symlinks and 0o644 otherwise — except
    `add_file(path=...)`, whose mode defaults to the source file's. Directories created
    implicitly as parents get the defaults and may be given metadata later by `mkdir`.
    """

    def __init__(
        self,
        output: str | os.PathLike[str] | None = None,
        *,
        options: WriteOptions | None = None,
        progress: ProgressCallback | None = None,
        mtime: float | None = None,
        mtime_ns: int | None = None,
    ) -> None:
        """`output` may be None to only build a tree (see `build_tree`); `mtime` (int or float
        seconds) or `mtime_ns` is the time of entries given none."""
        self.output = check_output(output)
        if options is not None and not isinstance(options, WriteOptions):
            raise InvalidInputError(f"options must be a WriteOptions, not {type(options).__name__}")
        if progress is not None and not callable(progress):
            raise InvalidInputError(f"progress must be callable, not {type(progress).__name__}")
        self.options = options if options is not None else WriteOptions()
        self.progress = progress
        self._default_mtime_ns = check_times(mtime, mtime_ns, 0, "/")
        self._tree = Directory(self._defaults(0o755))
        self._implicit: set[int] = {id(self._tree)}  # directories no call has given metadata yet
        self._closed = False
        self._summary: ImageSummary | None = None

    @property
    def tree(self) -> Directory:
        """The root of the tree being built; changes to it go into the image."""
        return self._tree

    @property
    def summary(self) -> ImageSummary:
        """The `ImageSummary` of the written image, kept after a with-block or `close()`.

        Raises `InvalidInputError` while nothing has been written: before closing, without an
        output path, or after a with-block that raised.
        """
        if self._summary is None:
            raise InvalidInputError("no image has been written by this builder (yet)")
        return self._summary

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
        """Write the image to `output`, close the builder and return (and keep) the summary."""
        self._check_open()
        if self.output is None:
            raise InvalidInputError("the builder has no output path to write to")
        check_fileobjs_open(self._tree)
        from ..writer import write_image

        summary = write_image(self._tree, self.output, self.options, progress=self.progress)
        self._closed = True
        self._summary = summary
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

    def mkdir(
        self,
        name: Name,
        *,
        mode: int | None = None,
        uid: int | None = None,
        gid: int | None = None,
        mtime: float | None = None,
        mtime_ns: int | None = None,
        xattrs: Xattrs | None = None,
    ) -> Directory:
        """Create a directory, or give metadata to one created implicitly as a parent."""
        entry = EntryMeta(mode, uid, gid, mtime, mtime_ns, xattrs)
        where, parts = split_name(name)
        existing = self._lookup_implicit(parts)
        if existing is not None:
            self._update(existing, where, entry)
            self._implicit.discard(id(existing))
            return existing
        return self._add(where, parts, Directory(self._defaults(0o755)), entry)

    def add_file(
        self,
        name: Name,
        data: bytes | bytearray | memoryview | None = None,
        *,
        path: str | bytes | os.PathLike[str] | os.PathLike[bytes] | None = None,
        fileobj: BinaryIO | None = None,
        size: int | None = None,
        mode: int | None = None,
        uid: int | None = None,
        gid: int | None = None,
        mtime: float | None = None,
        mtime_ns: int | None = None,
        xattrs: Xattrs | None = None,
    ) -> File:
        """Add a regular file. Its bytes are one of: `data` (bytes-like: bytes, bytearray,
        memoryview; not str), the file at `path` on disk (read when the image is written), or
        `fileobj`, an open binary file object read from its current position (`size` bytes,
        default to its end; it must stay open until the image is written). No source: empty."""
        entry = EntryMeta(mode, uid, gid, mtime, mtime_ns, xattrs)
        where, parts = split_name(name)
        if sum(source is not None for source in (data, path, fileobj)) > 1:
            raise InvalidInputError("give only one of data, path and fileobj", where)
        if size is not None and fileobj is None:
            raise InvalidInputError("size applies only to fileobj", where)
        default_mode = 0o644
        source: DataSource
        if path is not None:
            source, default_mode = path_source(path, where)
        elif fileobj is not None:
            source = fileobj_source(fileobj, size, where)
        else:
            source = bytes_source(b"" if data is None else data, where)
        return self._add(where, parts, File(self._defaults(default_mode), source), entry)

    def symlink(
        self,
        name: Name,
        target: Name,
        *,
        mode: int | None = None,
        uid: int | None = None,
        gid: int | None = None,
        mtime: float | None = None,
        mtime_ns: int | None = None,
        xattrs: Xattrs | None = None,
    ) -> Symlink:
        """Add the symlink `name` pointing at `target` (stored as given, never resolved).

        ``b.symlink("lib", target="usr/lib")`` makes "lib" -> "usr/lib", like
        ``ln -s usr/lib lib`` or ``os.symlink(src="usr/lib", dst="lib")``: the name comes
        first, the reverse of os.symlink's positional order.
        """
        entry = EntryMeta(mode, uid, gid, mtime, mtime_ns, xattrs)
        where, parts = split_name(name)
        raw = fs_bytes(fs_path(target, "symlink target", where), "symlink target", where)
        if not 0 < len(raw) < EROFS_PATH_MAX:
            raise InvalidInputError(f"symlink target must be 1..{EROFS_PATH_MAX - 1} bytes", where)
        node = Symlink(self._defaults(0o777), raw)
        return self._add(where, parts, node, entry, hint=_ORDER.format("symlink"))

    def mknod(
        self,
        name: Name,
        kind: str,
        major: int,
        minor: int,
        *,
        mode: int | None = None,
        uid: int | None = None,
        gid: int | None = None,
        mtime: float | None = None,
        mtime_ns: int | None = None,
        xattrs: Xattrs | None = None,
    ) -> Device:
        """Add a character (`kind` "c") or block ("b") device node `major`:`minor`."""
        entry = EntryMeta(mode, uid, gid, mtime, mtime_ns, xattrs)
        where, parts = split_name(name)
        if not isinstance(kind, str) or kind not in ("c", "b"):
            raise InvalidInputError(f"device kind {kind!r} is not 'c' or 'b'", where)
        major, minor = check_int(major, "major", where), check_int(minor, "minor", where)
        if not (0 <= major < 4096 and 0 <= minor < 2**20):
            raise InvalidInputError(f"device number {major}:{minor} does not fit 12:20 bits", where)
        node = Device(self._defaults(0o644), kind == "b", major, minor)
        return self._add(where, parts, node, entry)

    def mkfifo(
        self,
        name: Name,
        *,
        mode: int | None = None,
        uid: int | None = None,
        gid: int | None = None,
        mtime: float | None = None,
        mtime_ns: int | None = None,
        xattrs: Xattrs | None = None,
    ) -> Fifo:
        """Add a named pipe."""
        entry = EntryMeta(mode, uid, gid, mtime, mtime_ns, xattrs)
        where, parts = split_name(name)
        return self._add(where, parts, Fifo(self._defaults(0o644)), entry)

    def mksocket(
        self,
        name: Name,
        *,
        mode: int | None = None,
        uid: int | None = None,
        gid: int | None = None,
        mtime: float | None = None,
        mtime_ns: int | None = None,
        xattrs: Xattrs | None = None,
    ) -> Socket:
        """Add a socket inode."""
        entry = EntryMeta(mode, uid, gid, mtime, mtime_ns, xattrs)
        where, parts = split_name(name)
        return self._add(where, parts, Socket(self._defaults(0o644)), entry)

    def link(
        self,
        name: Name,
        target: Name,
        *,
        mode: int | None = None,
        uid: int | None = None,
        gid: int | None = None,
        mtime: float | None = None,
        mtime_ns: int | None = None,
        xattrs: Xattrs | None = None,
    ) -> Node:
        """Add `name` as a hard link to the existing non-directory `target`; metadata given here
        changes the shared inode. ``b.link("etc/hosts.bak", target="etc/hosts")`` is
        ``os.link(src="etc/hosts", dst="etc/hosts.bak")``: the new name comes first."""
        entry = EntryMeta(mode, uid, gid, mtime, mtime_ns, xattrs)
        where, parts = split_name(name)
        target_where, target_parts = split_name(target)
        if not self._exists(target_parts) and self._exists(parts):
            raise InvalidInputError(f"no such entry in the image ({_ORDER.format('link')})", target_where)
        node = self._lookup(target_parts, target_where)
        if isinstance(node, Directory):
            raise InvalidInputError(f"cannot hard-link to directory {target_where}", where)
        self._check_free(where, parts)
        self._update(node, where, entry)
        self._insert(where, parts, node)
        return node

    def setxattr(self, name: Name, key: str | bytes, value: bytes | bytearray | memoryview) -> None:
        """Set the extended attribute `key` (full name with its prefix, str or bytes) of an
        existing entry to `value` (bytes-like; str is refused)."""
        where, parts = split_name(name)
        raw = xattr_name(key, where)  # checked before it is hashed into a dict
        xattrs: Xattrs = {raw: xattr_value(key, value, where)}
        node = self._lookup(parts, where)
        self._update(node, where, EntryMeta(xattrs=xattrs))

    def set_metadata(
        self,
        name: Name,
        *,
        mode: int | None = None,
        uid: int | None = None,
        gid: int | None = None,
        mtime: float | None = None,
        mtime_ns: int | None = None,
        xattrs: Xattrs | None = None,
    ) -> Node:
        """Change metadata of an existing entry (the root is ``""``)."""
        entry = EntryMeta(mode, uid, gid, mtime, mtime_ns, xattrs)
        where, parts = split_name(name)
        node = self._lookup(parts, where)
        self._update(node, where, entry)
        self._implicit.discard(id(node))
        return node

    def add_tree(
        self,
        source: str | bytes | os.PathLike[str] | os.PathLike[bytes] | BinaryIO,
        name: Name = "",
        *,
        exclude_paths: Iterable[str | bytes] = (),
        exclude_regexes: Iterable[str | bytes] = (),
        read_xattrs: bool = True,
        mode: int | None = None,
        uid: int | None = None,
        gid: int | None = None,
        mtime: float | None = None,
        mtime_ns: int | None = None,
        xattrs: Xattrs | None = None,
    ) -> Directory:
        """Graft the directory `source` on disk at `name`: a new path, or the root or a directory
        created implicitly, which then takes the source's metadata and gains its children.
        `exclude_paths` and `exclude_regexes` are lists, as `tree_from_directory` takes them;
        the metadata keywords apply to the grafted directory itself.

        `source` may also be a tar archive (plain, gzip, zstd, xz or bzip2, by content): a path
        to one, or a binary file object read once from where it stands (see `tree_from_tar`);
        exclusions do not apply to archives."""
        entry = EntryMeta(mode, uid, gid, mtime, mtime_ns, xattrs)
        where, parts = split_name(name)
        self._check_open()
        keep_xattrs = check_bool(read_xattrs, "read_xattrs", where)
        if hasattr(source, "read"):
            walked = _tar_tree(source, keep_xattrs, exclude_paths, exclude_regexes, where)
        else:
            path = fs_path(source, "source", where)
            if os.path.isfile(path):
                walked = _tar_tree(path, keep_xattrs, exclude_paths, exclude_regexes, where)
            else:
                walked = tree_from_directory(
                    path,
                    exclude_paths=name_list(exclude_paths, "exclude_paths", where),
                    exclude_regexes=name_list(exclude_regexes, "exclude_regexes", where, patterns=True),
                    read_xattrs=keep_xattrs,
                )
        self._update(walked, where, entry)
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

    def _add(self, where: str, parts: list[bytes], node: _N, entry: EntryMeta, hint: str = "") -> _N:
        """Give a new node its metadata and insert it; nothing changes if either fails."""
        self._check_open()
        self._check_free(where, parts, hint)
        self._update(node, where, entry)
        self._insert(where, parts, node)
        return node

    def _update(self, node: Node, where: str, entry: EntryMeta) -> None:
        self._check_open()
        apply_entry(node, entry, where)

    def _exists(self, parts: list[bytes]) -> bool:
        try:
            self._lookup(parts, "")
        except InvalidInputError:
            return False
        return True

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

    def _check_free(self, where: str, parts: list[bytes], hint: str = "") -> None:
        """Raise unless `parts` names a path that could be inserted."""
        exists = f"already exists ({hint})" if hint else "already exists"
        if not parts:
            raise InvalidInputError(exists, where)
        node: Node = self._tree
        for i, part in enumerate(parts):
            if not isinstance(node, Directory):
                raise InvalidInputError(f"parent /{_show(parts[:i])} is not a directory", where)
            if part not in node.children:
                return
            node = node.children[part]
        raise InvalidInputError(exists, where)

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


def _tar_tree(
    source: object,
    keep_xattrs: bool,
    exclude_paths: Iterable[str | bytes],
    exclude_regexes: Iterable[str | bytes],
    where: str,
) -> Directory:
    """The tree of a tar archive, for `add_tree`."""
    if list(exclude_paths) or list(exclude_regexes):
        raise InvalidInputError(
            "exclude_paths and exclude_regexes apply to directories, not tar archives", where
        )
    from .tar_tree import tree_from_tar  # tarfile and the decompressors: only when needed

    tree = tree_from_tar(source)
    if not keep_xattrs:
        for _path, node in iter_tree(tree):
            node.meta.xattrs.clear()
    return tree


def _show(parts: list[bytes]) -> str:
    return os.fsdecode(b"/".join(parts))


def _join(where: str, child: bytes) -> str:
    return where.rstrip("/") + "/" + os.fsdecode(child)
