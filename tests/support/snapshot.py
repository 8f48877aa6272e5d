"""Snapshots: every path of a tree with the metadata a round trip must keep.

`snapshot` records a directory tree (a source, a kernel mount, an extraction); `image_snapshot`
records what an image holds through erofsgen's own reader (no mount, no root needed). Both key
paths the same way, so `tests.support.compare` can diff any two of them.
"""

from __future__ import annotations

import hashlib
import os
import stat
from collections.abc import Collection, Iterator, Mapping, Sequence
from dataclasses import dataclass, replace
from pathlib import Path

from erofsgen import open_image
from erofsgen.reader.image import Image


@dataclass(frozen=True)
class Entry:
    """Metadata of one path; None means "not applicable" or "ignored"."""

    kind: str  # file, dir, symlink, chr, blk, fifo, sock
    mode: int | None  # permission bits incl. setuid/setgid/sticky (S_IMODE)
    uid: int | None
    gid: int | None
    nlink: int | None
    size: int | None  # not for directories (their size is filesystem specific)
    mtime_ns: int | None
    rdev: tuple[int, int] | None  # (major, minor) for devices
    target: bytes | None  # symlink target
    sha256: str | None  # regular file content
    xattrs: tuple[tuple[str, bytes], ...]  # sorted by name; all namespaces


FIELDS = tuple(Entry.__dataclass_fields__)


@dataclass(frozen=True)
class TreeSnapshot:
    """Every path under a root, keyed by its fsdecoded relative path ('.' is the root)."""

    entries: Mapping[str, Entry]
    hardlinks: frozenset[frozenset[str]]  # groups of >= 2 non-directory paths sharing an inode

    def paths(self, kind: str | None = None) -> list[str]:
        return sorted((p for p, e in self.entries.items() if kind is None or e.kind == kind), key=os.fsencode)

    def normalized(
        self,
        *,
        ignore_root_meta: bool = False,
        ignore_mtime: bool = False,
        ignore_owner: bool = False,
        ignore_fields: Collection[str] = (),
    ) -> TreeSnapshot:
        """A copy with the ignored fields blanked (None, or () for xattrs)."""
        blank: dict[str, object] = {f: None for f in ignore_fields if f in FIELDS}
        if "xattrs" in blank:
            blank["xattrs"] = ()
        if ignore_mtime:
            blank["mtime_ns"] = None
        if ignore_owner:
            blank["uid"] = blank["gid"] = None
        entries = {p: replace(e, **blank) for p, e in self.entries.items()}  # type: ignore[arg-type]
        if ignore_root_meta and "." in entries:
            entries["."] = Entry("dir", None, None, None, None, None, None, None, None, None, ())
        hardlinks = frozenset() if "hardlinks" in ignore_fields else self.hardlinks
        return TreeSnapshot(entries, hardlinks)


KIND_OF_MODE = {  # stat.S_IFMT -> Entry.kind
    stat.S_IFREG: "file",
    stat.S_IFDIR: "dir",
    stat.S_IFLNK: "symlink",
    stat.S_IFCHR: "chr",
    stat.S_IFBLK: "blk",
    stat.S_IFIFO: "fifo",
    stat.S_IFSOCK: "sock",
}


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as f:
        while chunk := f.read(1 << 20):
            h.update(chunk)
    return h.hexdigest()


def _getxattr(path: Path, name: str) -> bytes:
    try:
        return os.getxattr(path, name, follow_symlinks=False)
    except OSError as e:
        # Listed but unreadable: Linux refuses user.* on anything but files and directories
        # (ENODATA), which only a tree that no real filesystem can hold would contain.
        raise OSError(e.errno, f"getxattr {name!r} of a listed xattr failed: {e.strerror}", str(path)) from e


def _xattrs_of(path: Path) -> tuple[tuple[str, bytes], ...]:
    names = os.listxattr(path, follow_symlinks=False)
    return tuple(sorted((n, _getxattr(path, n)) for n in names))


def _entry(path: Path, st: os.stat_result) -> Entry:
    kind = KIND_OF_MODE[stat.S_IFMT(st.st_mode)]
    is_dev = kind in ("chr", "blk")
    return Entry(
        kind=kind,
        mode=stat.S_IMODE(st.st_mode),
        uid=st.st_uid,
        gid=st.st_gid,
        nlink=st.st_nlink,
        size=None if kind == "dir" else st.st_size,
        mtime_ns=st.st_mtime_ns,
        rdev=(os.major(st.st_rdev), os.minor(st.st_rdev)) if is_dev else None,
        target=os.readlink(os.fsencode(path)) if kind == "symlink" else None,
        sha256=_sha256(path) if kind == "file" else None,
        xattrs=_xattrs_of(path),
    )


def _walk(root: Path) -> Iterator[tuple[str, Path, os.stat_result]]:
    yield ".", root, os.lstat(root)
    stack = [(root, "")]
    while stack:
        directory, prefix = stack.pop()
        with os.scandir(directory) as it:
            children = [(prefix + e.name, Path(e.path), e.stat(follow_symlinks=False)) for e in it]
        for rel, path, st in children:
            yield rel, path, st
            if stat.S_ISDIR(st.st_mode):
                stack.append((path, rel + "/"))


def snapshot(
    root: Path,
    *,
    ignore_root_meta: bool = False,
    ignore_mtime: bool = False,
    ignore_owner: bool = False,
) -> TreeSnapshot:
    """Record every path under `root` (not following symlinks).

    Root reads everything except below an inode whose owner the kernel cannot map (uid/gid
    4294967295 reads back as 65534 and costs root its DAC override): then this raises.
    """
    entries: dict[str, Entry] = {}
    inodes: dict[tuple[int, int], set[str]] = {}
    for rel, path, st in _walk(root):
        entries[rel] = _entry(path, st)
        if not stat.S_ISDIR(st.st_mode):
            inodes.setdefault((st.st_dev, st.st_ino), set()).add(rel)
    links = frozenset(frozenset(g) for g in inodes.values() if len(g) > 1)
    snap = TreeSnapshot(entries, links)
    return snap.normalized(
        ignore_root_meta=ignore_root_meta, ignore_mtime=ignore_mtime, ignore_owner=ignore_owner
    )


def _image_entry(img: Image, nid: int) -> Entry:
    st = img.stat_nid(nid)
    kind = KIND_OF_MODE[stat.S_IFMT(st.mode)]
    content = None
    if kind == "file":
        digest = hashlib.sha256()
        with img.open_nid(nid) as f:
            while chunk := f.read(1 << 20):
                digest.update(chunk)
        content = digest.hexdigest()
    return Entry(
        kind=kind,
        mode=stat.S_IMODE(st.mode),
        uid=st.uid,
        gid=st.gid,
        nlink=st.nlink,
        size=None if kind == "dir" else st.size,
        mtime_ns=st.mtime_ns,
        rdev=(st.major, st.minor) if kind in ("chr", "blk") else None,
        target=img.readlink_nid(nid) if kind == "symlink" else None,
        sha256=content,
        xattrs=tuple(sorted((os.fsdecode(k), v) for k, v in img.xattrs_nid(nid).items())),
    )


def image_snapshot(image: Path, devices: Sequence[Path] = ()) -> TreeSnapshot:
    """What the image holds, keyed like `snapshot` ('.' is the root)."""
    entries: dict[str, Entry] = {}
    by_nid: dict[int, list[str]] = {}
    with open_image(image, devices) as img:
        stack = [("", img.root_nid)]
        entries["."] = _image_entry(img, img.root_nid)
        while stack:
            prefix, dir_nid = stack.pop()
            for raw in img.scandir_nid(dir_nid):
                rel = prefix + os.fsdecode(raw.name)
                entry = _image_entry(img, raw.nid)
                entries[rel] = entry
                if entry.kind == "dir":
                    stack.append((rel + "/", raw.nid))
                else:
                    by_nid.setdefault(raw.nid, []).append(rel)
    links = frozenset(frozenset(paths) for paths in by_nid.values() if len(paths) > 1)
    return TreeSnapshot(entries, links)
