"""Stored forms: how one inode's data is kept in the image, one small class per kind.

The data stage (datastage.py) gives every inode exactly one stored form; planning and emitting
then ask the form, never the model type: its size, how it splits into whole blocks and an inline
tail (`shape`, which also sets `plan.extra`, the room it needs in its inode record after the
xattrs: a chunk index, a zmap header), the `i_u` its inode core carries, and how it writes
itself. A new kind (compressed, composefs external) is a new class with the same methods;
chunked data (chunks.py) is one.

Kinds today: `PlainData` (a path or re-readable source, copied kernel-side at emit, the data
never entering Python), `SpooledData` (a stream consumed once into a spool by the data stage),
`InlineBytes` (small in-memory data), `SymlinkTarget`, `DirectoryData`, `DeviceNumber`, `NO_DATA`.
"""

from __future__ import annotations

import os
import threading
from typing import TYPE_CHECKING, ClassVar

from ..format.constants import EROFS_NULL_ADDR, DataLayout, FileType
from ..format.inode import encode_rdev
from ..model import DataSource, EntryData, PathData
from .dirs import DirectoryShape, directory_block
from .filecopy import copy_path, copy_range, copy_with_reader

if TYPE_CHECKING:
    from .plan import PlannedInode


class Stored:
    """Base of every stored form: no data at all (FIFOs, sockets, empty files)."""

    __slots__ = ()
    file_data: ClassVar[bool] = False  # a regular file's data: obeys inline_data, counts for progress
    background: ClassVar[bool] = False  # written by the copier thread (I/O that releases the GIL)

    @property
    def size(self) -> int:
        """i_size."""
        return 0

    def shape(self, plan: PlannedInode, block_size: int, may_inline: bool) -> None:
        """Set the inode's layout, whole blocks and tail: the tail goes inline when it fits.

        FLAT_INLINE when core + xattr body + tail fit in one block, else FLAT_PLAIN.
        """
        size = self.size
        tail = size % block_size
        if tail and may_inline and plan.core_size + len(plan.xattr_body) + tail <= block_size:
            plan.layout = DataLayout.FLAT_INLINE
            plan.tail_size = tail
            plan.nblocks = size // block_size
        else:
            plan.layout = DataLayout.FLAT_PLAIN
            plan.tail_size = 0
            plan.nblocks = -(-size // block_size)

    def i_u(self, plan: PlannedInode) -> int:
        """The core's union: the first block, or NULL_ADDR when only an inline tail exists."""
        if plan.nblocks:
            return plan.startblk
        return EROFS_NULL_ADDR if plan.tail_size else 0

    def write(
        self, fd: int, plan: PlannedInode, block_size: int, stop: threading.Event | None = None
    ) -> bytes:
        """Write the whole blocks at the planned address; return the inline tail.

        Once `stop` is set (the build failed elsewhere) a long copy ends at its next chunk.
        """
        return b""


NO_DATA = Stored()


class DeviceNumber(Stored):
    """A character or block device: no data, the device number in i_u."""

    __slots__ = ("rdev",)

    def __init__(self, major: int, minor: int) -> None:
        self.rdev = encode_rdev(major, minor)

    def i_u(self, plan: PlannedInode) -> int:
        return self.rdev


class InlineBytes(Stored):
    """Small file data held in memory."""

    __slots__ = ("data",)
    file_data = True

    def __init__(self, data: bytes) -> None:
        self.data = data

    @property
    def size(self) -> int:
        return len(self.data)

    def write(
        self, fd: int, plan: PlannedInode, block_size: int, stop: threading.Event | None = None
    ) -> bytes:
        full = self.size - plan.tail_size
        if plan.nblocks and full:
            os.pwrite(fd, self.data[:full], plan.startblk * block_size)
        return self.data[full:]


class SymlinkTarget(InlineBytes):
    """A symlink's target: stored like file data, but not a regular file's."""

    __slots__ = ()
    file_data = False


class PlainData(Stored):
    """A file read at emit: a path copied kernel-side, or any re-readable source through a reader."""

    __slots__ = ("source",)
    file_data = True
    background = True

    def __init__(self, source: DataSource) -> None:
        self.source = source

    @property
    def size(self) -> int:
        return self.source.size

    def write(
        self, fd: int, plan: PlannedInode, block_size: int, stop: threading.Event | None = None
    ) -> bytes:
        source = self.source
        if type(source) is EntryData or type(source) is PathData:
            return copy_path(source.path, plan, source, fd, block_size, stop)
        return copy_with_reader(plan, source, fd, block_size, stop)


class SpooledData(Stored):
    """Data the data stage consumed once from a stream into the spool file at `offset`."""

    __slots__ = ("_size", "offset", "spool_fd")
    file_data = True
    background = True

    def __init__(self, spool_fd: int, offset: int, size: int) -> None:
        self.spool_fd = spool_fd
        self.offset = offset
        self._size = size

    @property
    def size(self) -> int:
        return self._size

    def write(
        self, fd: int, plan: PlannedInode, block_size: int, stop: threading.Event | None = None
    ) -> bytes:
        full = self._size - plan.tail_size
        if plan.nblocks and full:
            copy_range(self.spool_fd, self.offset, fd, plan.startblk * block_size, full)
        if not plan.tail_size:
            return b""
        tail = os.pread(self.spool_fd, plan.tail_size, self.offset + full)
        if len(tail) != plan.tail_size:
            raise AssertionError("the spool is shorter than the data written to it")
        return tail


class DirectoryData(Stored):
    """Directory entries; their blocks are encoded at emit, once every child has its nid."""

    __slots__ = ("dir_shape",)

    def __init__(self, shape: DirectoryShape) -> None:
        self.dir_shape = shape

    @property
    def size(self) -> int:
        return self.dir_shape.size

    def write(
        self, fd: int, plan: PlannedInode, block_size: int, stop: threading.Event | None = None
    ) -> bytes:
        shape = self.dir_shape
        assert plan.parent is not None and plan.children is not None
        # Both lists are in bytewise order; "." and ".." slot in among the children.
        dots = {b".": plan.nid, b"..": plan.parent.nid}
        children = iter(plan.children)
        entries = []
        for name in shape.names:
            nid = dots.get(name)
            if nid is None:
                child = next(children)
                entries.append((name, child.nid, child.ftype))
            else:
                entries.append((name, nid, FileType.DIR))
        blocks = len(shape.splits)
        whole = blocks if plan.layout is DataLayout.FLAT_PLAIN else blocks - 1
        addr = plan.startblk * block_size
        for b in range(whole):
            os.pwrite(fd, directory_block(shape, b, entries, block_size, block_size), addr + b * block_size)
        if whole == blocks:
            return b""
        return directory_block(shape, blocks - 1, entries, block_size, plan.tail_size)
