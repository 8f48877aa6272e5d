"""Tar archives (and stacks of OCI layers) into one tree, the way extraction would leave it.

Members are applied in archive order, layers in the order given, as `tar -x` or an OCI layer
unpacker would: a later member at the same path replaces the earlier one (a directory over a
directory only updates its metadata and keeps the children), missing parent directories are
made (0o755, owner 0, mtime 0, until a member names them), and a hard link shares the node its
target path holds at that moment (in this layer or below).

Whiteouts (OCI image spec, layer changesets), when enabled:

* ``DIR/.wh.NAME`` deletes DIR/NAME as the layers below left it;
* ``DIR/.wh..wh..opq`` makes DIR opaque: whatever the layers below put under it goes, while this
  layer's own entries stay, whichever side of the marker they come in the archive.

With ``overlay=True`` (``--aufs``) they are also kept in overlayfs's form: a whiteout becomes
a character device 0/0 named NAME and an opaque directory gets ``trusted.overlay.opaque=y``, so
the image can serve as an overlayfs layer over others.
"""

from __future__ import annotations

import os
import stat
from collections.abc import Iterable, Sequence
from typing import Any

from ..errors import InvalidInputError
from ..model import Device, Directory, Fifo, File, Metadata, Node, Symlink, gc_paused
from .archive_stream import ArchiveError
from .directory import PROGRESS_EVERY, ScanProgress
from .spool import Spool
from .tar import Member, TarReader

WHITEOUT_PREFIX = b".wh."
OPAQUE_MARKER = b".wh..wh..opq"
OVERLAY_OPAQUE = (b"trusted.overlay.opaque", b"y")

TarSource = str | bytes | os.PathLike[str] | os.PathLike[bytes] | Any  # a path, "-" or a binary file object


def tree_from_tar(
    source: TarSource,
    *,
    whiteouts: bool = False,
    overlay: bool = False,
    spool_dir: str | None = None,
    on_progress: ScanProgress | None = None,
    index: bool = False,
) -> Directory:
    """The tree one tar archive extracts to (plain, gzip, zstd, xz or bzip2, by content).

    `source` is a path, ``"-"`` (standard input) or a binary file object, read once without
    seeking. File data is spooled to an unnamed temporary file (in `spool_dir`, default
    `tempfile`'s) that the tree's files keep open. `whiteouts` applies OCI whiteout entries;
    `overlay` keeps them as overlayfs whiteouts. A truncated or corrupt archive raises
    `ArchiveError` (an `InvalidInputError`) naming the member or byte offset. `on_progress`
    is called as a directory scan calls it, with the number of members read.

    `index=True` (tar index mode): `source` must be the path of an uncompressed archive; its
    headers are read by seeking and every regular file's data is an `ArchiveExtent` of it,
    for `write_image` with ``WriteOptions(block_size=512, tar_index=source)``.
    """
    if index:
        return _build([source], whiteouts, overlay, None, on_progress)
    return tree_from_layers(
        [source], whiteouts=whiteouts, overlay=overlay, spool_dir=spool_dir, on_progress=on_progress
    )


def tree_from_layers(
    sources: Sequence[TarSource],
    *,
    whiteouts: bool = True,
    overlay: bool = False,
    spool_dir: str | None = None,
    on_progress: ScanProgress | None = None,
) -> Directory:
    """Several archives applied in order onto one tree (OCI layers: lowest first)."""
    if not sources:
        raise InvalidInputError("no tar archive given")
    return _build(sources, whiteouts, overlay, Spool(spool_dir), on_progress)


def _build(
    sources: Sequence[TarSource],
    whiteouts: bool,
    overlay: bool,
    spool: Spool | None,
    on_progress: ScanProgress | None,
) -> Directory:
    """The archives applied in order; without a spool, their data is left in place (index mode)."""
    assembler = _Assembler(whiteouts=whiteouts or overlay, overlay=overlay, on_progress=on_progress)
    with gc_paused():
        for source in sources:
            with TarReader(source, spool) as reader:
                assembler.apply_layer(reader.members(), reader.label)
    if spool is not None:
        spool.finish()
    if on_progress is not None:
        on_progress(assembler.count)
    return assembler.root


class _Assembler:
    """The tree being built and what the current layer has touched."""

    def __init__(self, *, whiteouts: bool, overlay: bool, on_progress: ScanProgress | None) -> None:
        self.whiteouts = whiteouts
        self.overlay = overlay
        self.on_progress = on_progress
        self.count = 0
        self.root = Directory(Metadata(0o755))
        self.layer_paths: set[bytes] = set()  # paths this layer created or replaced
        self.opaque: list[Directory] = []  # directories this layer made opaque
        self.label = ""

    def apply_layer(self, members: Iterable[Member], label: str) -> None:
        self.layer_paths = {b""}
        self.opaque = []
        self.label = label
        for member in members:
            self._apply(member)
            self.count += 1
            if self.on_progress is not None and self.count % PROGRESS_EVERY == 0:
                self.on_progress(self.count)
        # Marked once the layer is read: the directory's own member may follow the marker.
        for directory in self.opaque:
            directory.meta.xattrs[OVERLAY_OPAQUE[0]] = OVERLAY_OPAQUE[1]

    def _error(self, member: Member, message: str) -> ArchiveError:
        return ArchiveError(f"member {member.name!r}: {message}", self.label)

    def _apply(self, member: Member) -> None:
        parts = member.parts
        if self.whiteouts and parts and parts[-1].startswith(WHITEOUT_PREFIX):
            self._whiteout(member)
            return
        if not parts:
            if member.kind != stat.S_IFDIR:
                raise self._error(member, "the archive's root is not a directory")
            self.root.meta = member.meta
            return
        self._put(member, parts, self._node(member))

    def _node(self, member: Member) -> Node:
        kind = member.kind
        meta = member.meta
        if kind == stat.S_IFREG:
            assert member.data is not None
            return File(meta, member.data)
        if kind == stat.S_IFDIR:
            return Directory(meta)
        if kind == stat.S_IFLNK:
            return Symlink(meta, member.link)
        if kind in (stat.S_IFCHR, stat.S_IFBLK):
            return Device(meta, kind == stat.S_IFBLK, *member.rdev)
        if kind == stat.S_IFIFO:
            return Fifo(meta)
        assert member.link_parts is not None  # a hard link
        target = self._lookup(member.link_parts)
        if target is None:
            raise self._error(
                member, f"hard link to {os.fsdecode(member.link)!r}, which is not in the archive"
            )
        if isinstance(target, Directory):
            raise self._error(member, f"hard link to the directory {os.fsdecode(member.link)!r}")
        return target

    def _lookup(self, parts: list[bytes]) -> Node | None:
        node: Node = self.root
        for part in parts:
            if not isinstance(node, Directory):
                return None
            child = node.children.get(part)
            if child is None:
                return None
            node = child
        return node

    def _parent(self, member: Member, parts: list[bytes]) -> Directory:
        """The directory holding `parts[-1]`, made (and marked as this layer's) where missing."""
        directory = self.root
        for depth, part in enumerate(parts[:-1], 1):
            child = directory.children.get(part)
            if child is None:
                child = directory.children[part] = Directory(Metadata(0o755))
            elif not isinstance(child, Directory):
                raise self._error(member, f"/{os.fsdecode(b'/'.join(parts[:depth]))} is not a directory")
            if self.whiteouts:  # only whiteouts need to know what this layer touched
                self.layer_paths.add(b"/".join(parts[:depth]))
            directory = child
        return directory

    def _put(self, member: Member, parts: list[bytes], node: Node) -> None:
        parent = self._parent(member, parts)
        name = parts[-1]
        if self.whiteouts:
            self.layer_paths.add(b"/".join(parts))
        old = parent.children.get(name)
        if isinstance(old, Directory) and isinstance(node, Directory):
            old.meta = node.meta  # like extraction over an existing directory
            return
        parent.children[name] = node

    def _whiteout(self, member: Member) -> None:
        parts = member.parts
        name = parts[-1]
        parent = self._parent(member, parts)
        dir_path = b"/".join(parts[:-1])
        if name == OPAQUE_MARKER:
            self._prune(parent, dir_path)
            if self.overlay:
                self.opaque.append(parent)
            return
        hidden = name[len(WHITEOUT_PREFIX) :]
        if not hidden or hidden in (b".", b".."):
            raise self._error(member, "a whiteout that names nothing")
        path = dir_path + b"/" + hidden if dir_path else hidden
        parent.children.pop(hidden, None)
        if self.overlay:
            meta = Metadata(member.meta.mode, member.meta.uid, member.meta.gid, member.meta.mtime_ns)
            parent.children[hidden] = Device(meta, False, 0, 0)
            self.layer_paths.add(path)
        else:
            self.layer_paths.discard(path)

    def _prune(self, directory: Directory, path: bytes) -> None:
        """Drop what lower layers left below `directory`, keeping this layer's entries."""
        stack = [(directory, path)]
        while stack:
            current, current_path = stack.pop()
            for name in list(current.children):
                child_path = current_path + b"/" + name if current_path else name
                if child_path not in self.layer_paths:
                    del current.children[name]
                elif isinstance(current.children[name], Directory):
                    stack.append((current.children[name], child_path))  # type: ignore[arg-type]
