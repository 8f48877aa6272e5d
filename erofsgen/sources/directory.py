"""Build a tree from a directory on disk, the way `mkfs.erofs IMAGE SOURCE` reads its source.

The walk uses bytes paths throughout (names need not be UTF-8), never follows symlinks, and costs
one `lstat` and one `llistxattr` per entry (plus a `getxattr` per attribute and a `readlink` per
symlink). File data is not read here: a file becomes `EntryData(prefix, name, size)` (a path
whose directory part is shared), read when the image is emitted. Entries sharing (st_dev, st_ino)
become one node under several names (hard links).

The source root itself is taken with `lstat` too, so a symlink to a directory is refused unless
given with a trailing slash (``src/``), which the kernel resolves.
"""

from __future__ import annotations

import errno
import os
import re
import stat
from collections import deque
from collections.abc import Callable, Iterable

from ..errors import InvalidInputError
from ..model import Device, Directory, EntryData, Fifo, File, Metadata, Node, Socket, Symlink, gc_paused

# Called as on_progress(entries) with the number of entries scanned so far, every
# PROGRESS_EVERY entries and once at the end.
ScanProgress = Callable[[int], None]
PROGRESS_EVERY = 1024

# listxattr errors that mean "this filesystem or inode has no xattrs", not a failure.
_NO_XATTRS = frozenset({errno.ENOTSUP, errno.EOPNOTSUPP, errno.ENOSYS})

_S_IFMT = 0o170000


def tree_from_directory(
    path: str | bytes | os.PathLike[str] | os.PathLike[bytes],
    *,
    exclude_paths: Iterable[str | bytes] = (),
    exclude_regexes: Iterable[str | bytes | re.Pattern[bytes]] = (),
    read_xattrs: bool = True,
    on_progress: ScanProgress | None = None,
    on_file: Callable[[EntryData], None] | None = None,
) -> Directory:
    """Walk the directory at `path` into a tree whose root carries the directory's own metadata.

    `exclude_paths` are paths relative to `path` (a leading ``/`` is allowed) matched exactly;
    `exclude_regexes` are searched (`re.search`) in the relative path. An excluded directory is
    skipped whole. Unreadable entries and a source that is not a directory raise
    `InvalidInputError` naming the path. The walk is breadth first, names in bytewise order
    (the writer's inode order); `on_file` is given each regular file's data as it is found
    (once per inode), so a writer can start on it while the walk goes on.
    """
    if on_file is not None and not callable(on_file):
        raise InvalidInputError(f"on_file must be callable, not {type(on_file).__name__}")
    root_path = os.fsencode(path)
    st = _lstat(root_path)
    if st.st_mode & _S_IFMT != stat.S_IFDIR:
        raise InvalidInputError("not a directory", path=os.fsdecode(root_path))
    walker = _Walker(
        excluded=_exclude_set(exclude_paths),
        regexes=_compile_regexes(exclude_regexes),
        read_xattrs=read_xattrs,
        on_progress=on_progress,
        on_file=on_file,
    )
    root = Directory(walker.metadata(root_path, st))
    with gc_paused():
        walker.walk(root_path, root)
    if on_progress is not None:
        on_progress(walker.count)
    return root


def _exclude_set(paths: Iterable[str | bytes]) -> frozenset[bytes]:
    # mkfs.erofs compares the path relative to the source root; tolerate "/a/b" and "a/b/".
    return frozenset(os.fsencode(p).strip(b"/") for p in paths)


def _compile_regexes(regexes: Iterable[str | bytes | re.Pattern[bytes]]) -> tuple[re.Pattern[bytes], ...]:
    compiled = []
    for regex in regexes:
        if isinstance(regex, re.Pattern):
            compiled.append(regex)
            continue
        try:
            compiled.append(re.compile(os.fsencode(regex)))
        except re.error as exc:
            raise InvalidInputError(f"invalid exclude regex {regex!r}: {exc}") from None
    return tuple(compiled)


class _Walker:
    """State of one walk: exclusions, the hard-link map and the entry count."""

    __slots__ = (
        "_check_read",
        "_euid",
        "_filtering",
        "_groups",
        "_ints",
        "_links",
        "count",
        "excluded",
        "on_file",
        "on_progress",
        "read_xattrs",
        "regexes",
    )

    def __init__(
        self,
        *,
        excluded: frozenset[bytes],
        regexes: tuple[re.Pattern[bytes], ...],
        read_xattrs: bool,
        on_progress: ScanProgress | None,
        on_file: Callable[[EntryData], None] | None = None,
    ) -> None:
        self.excluded = excluded
        self.regexes = regexes
        self.read_xattrs = read_xattrs
        self.on_progress = on_progress
        self.on_file = on_file
        self.count = 0
        self._links: dict[tuple[int, int], Node] = {}
        self._ints: dict[int, int] = {}
        self._euid = os.geteuid()
        self._check_read = self._euid != 0
        self._filtering = bool(excluded or regexes)
        self._groups = frozenset(os.getgroups()) | {os.getegid()}

    def walk(self, root_path: bytes, root: Directory) -> None:
        """Fill `root` and every directory below it; iterative so depth is not limited.

        Each directory's path is built once, with its trailing slash, and shared by the data
        sources of its files; entries' own paths are made only while they are looked at.
        Breadth first with sorted names: files are found in the writer's inode order.
        """
        queue: deque[tuple[bytes, bytes, Directory]] = deque([(root_path, b"", root)])
        filtering = self._filtering
        while queue:
            dir_path, rel_dir, directory = queue.popleft()
            prefix = dir_path if dir_path.endswith(b"/") else dir_path + b"/"
            children = directory.children
            try:
                with os.scandir(dir_path) as entries:
                    names = sorted(entry.name for entry in entries)
            except OSError as exc:
                raise _error("cannot read directory", dir_path, exc) from None
            for name in names:
                rel = b""  # only exclusions need the relative path
                if filtering:
                    rel = rel_dir + b"/" + name if rel_dir else name
                    if self._is_excluded(rel):
                        continue
                node = self._node(prefix, name)
                children[name] = node
                if type(node) is Directory:
                    queue.append((prefix + name, rel, node))

    def _is_excluded(self, rel: bytes) -> bool:
        return rel in self.excluded or any(regex.search(rel) for regex in self.regexes)

    def _node(self, prefix: bytes, name: bytes) -> Node:
        path = prefix + name
        st = _lstat(path)
        self.count += 1
        if self.on_progress is not None and self.count % PROGRESS_EVERY == 0:
            self.on_progress(self.count)
        kind = st.st_mode & _S_IFMT
        if kind == stat.S_IFDIR:
            return Directory(self.metadata(path, st))
        if st.st_nlink > 1:
            key = (st.st_dev, st.st_ino)
            node = self._links.get(key)
            if node is None:
                node = self._links[key] = self._leaf(prefix, name, st, kind)
            return node
        return self._leaf(prefix, name, st, kind)

    def _leaf(self, prefix: bytes, name: bytes, st: os.stat_result, kind: int) -> Node:
        path = prefix + name
        meta = self.metadata(path, st)
        if kind == stat.S_IFREG:
            if self._check_read and not self._readable(path, st):
                raise InvalidInputError("cannot read file: permission denied", path=os.fsdecode(path))
            data = EntryData(prefix, name, st.st_size)
            if self.on_file is not None:
                self.on_file(data)
            return File(meta, data)
        if kind == stat.S_IFLNK:
            try:
                return Symlink(meta, os.readlink(path))
            except OSError as exc:
                raise _error("cannot read symlink", path, exc) from None
        if kind == stat.S_IFCHR or kind == stat.S_IFBLK:
            rdev = st.st_rdev
            return Device(meta, kind == stat.S_IFBLK, os.major(rdev), os.minor(rdev))
        if kind == stat.S_IFIFO:
            return Fifo(meta)
        if kind == stat.S_IFSOCK:
            return Socket(meta)
        raise InvalidInputError(f"unsupported file type {kind:#o}", path=os.fsdecode(path))

    def metadata(self, path: bytes, st: os.stat_result) -> Metadata:
        """The node metadata of the entry at `path` whose lstat result is `st`."""
        xattrs = _xattrs(path) if self.read_xattrs else {}
        ints = self._ints  # one object per distinct mode, uid and gid, not one per inode
        mode = st.st_mode & 0o7777
        uid = st.st_uid
        gid = st.st_gid
        return Metadata(
            ints.setdefault(mode, mode),
            ints.setdefault(uid, uid),
            ints.setdefault(gid, gid),
            st.st_mtime_ns,
            xattrs,
        )

    def _readable(self, path: bytes, st: os.stat_result) -> bool:
        # Decide from the mode bits; only when they deny ask the kernel (ACLs may still allow).
        if st.st_uid == self._euid:
            bit = 0o400
        elif st.st_gid in self._groups:
            bit = 0o040
        else:
            bit = 0o004
        return bool(st.st_mode & bit) or os.access(path, os.R_OK, follow_symlinks=False)


def _lstat(path: bytes) -> os.stat_result:
    try:
        return os.lstat(path)
    except OSError as exc:
        raise _error("cannot stat", path, exc) from None


def _xattrs(path: bytes) -> dict[bytes, bytes]:
    try:
        names = os.listxattr(path, follow_symlinks=False)
    except OSError as exc:
        if exc.errno in _NO_XATTRS:
            return {}
        raise _error("cannot list xattrs", path, exc) from None
    xattrs: dict[bytes, bytes] = {}
    for name in names:
        try:
            xattrs[os.fsencode(name)] = os.getxattr(path, name, follow_symlinks=False)
        except OSError as exc:
            if exc.errno == errno.ENODATA:
                continue  # removed between listing and reading
            raise _error(f"cannot read xattr {name}", path, exc) from None
    return xattrs


def _error(what: str, path: bytes, exc: OSError) -> InvalidInputError:
    return InvalidInputError(f"{what}: {exc.strerror or exc}", path=os.fsdecode(path))
