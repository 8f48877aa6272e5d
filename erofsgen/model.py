"""A typed filesystem tree that knows nothing about EROFS.

Sources (a directory walk, the builder API) produce it; the writer validates it, plans a layout
and emits an image. A hard link is the same non-directory node reachable under several names,
so link counts are derived from the tree rather than stored.
"""

from __future__ import annotations

import gc
import io
import os
import stat
import threading
from collections import deque
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import BinaryIO, Protocol, cast


@dataclass(slots=True)
class Metadata:
    """What every inode carries besides its type and payload."""

    mode: int = 0o644  # permission bits incl. setuid/setgid/sticky (no file type bits)
    uid: int = 0
    gid: int = 0
    mtime_ns: int = 0  # nanoseconds since the epoch; may be negative
    xattrs: dict[bytes, bytes] = field(default_factory=dict)  # full name (with prefix) -> value


class DataSource(Protocol):
    """Where a regular file's bytes come from; read once, by the writer's data stage or emitter."""

    @property
    def size(self) -> int: ...

    def describe(self) -> str:
        """A path or label naming the data in error messages."""
        ...

    def open(self) -> BinaryIO:
        """A binary file positioned at the data's first byte."""
        ...


@dataclass(frozen=True, slots=True)
class BytesData:
    """File data held in memory (small files from the API)."""

    data: bytes

    @property
    def size(self) -> int:
        return len(self.data)

    def describe(self) -> str:
        return f"<{len(self.data)} bytes>"

    def open(self) -> BinaryIO:
        return io.BytesIO(self.data)


@dataclass(frozen=True, slots=True)
class PathData:
    """File data read from a path when emitted; `size` is what the source had when scanned."""

    path: bytes | str
    size: int

    def describe(self) -> str:
        return os.fsdecode(self.path)

    def open(self) -> BinaryIO:
        return open(self.path, "rb", buffering=0)


class EntryData:
    """File data at `prefix + name`, read when emitted (a directory walk's files).

    Like `PathData`, but `prefix` (the directory's path with its trailing slash) is one object
    shared by all files of the directory and the name is the one the tree already holds, so a
    large tree does not keep every path twice.
    """

    __slots__ = ("name", "prefix", "size")

    def __init__(self, prefix: bytes, name: bytes, size: int) -> None:
        self.prefix = prefix
        self.name = name
        self.size = size

    @property
    def path(self) -> bytes:
        return self.prefix + self.name

    def describe(self) -> str:
        return os.fsdecode(self.path)

    def open(self) -> BinaryIO:
        return open(self.path, "rb", buffering=0)


@dataclass(frozen=True, slots=True)
class FileObjectData:
    """A window of a seekable binary file object owned by the caller.

    Several windows may share one file object (tar-like use), and the writer reads files on
    more than one thread, so each read seeks and reads under one lock, by explicit offset.
    """

    fileobj: BinaryIO
    offset: int
    size: int
    label: str = "<file object>"

    def describe(self) -> str:
        return self.label

    def open(self) -> BinaryIO:
        return cast(BinaryIO, _Window(self.fileobj, self.offset, self.size))


class StreamData:
    """Data of a forward-only stream (a pipe, a tar member read from stdin), consumed exactly once.

    The writer's data stage reads it into a spool before the layout is planned; `size` is the
    length the stream promises, and a stream that ends early or runs on is refused.
    """

    __slots__ = ("_taken", "label", "size", "stream")

    def __init__(self, stream: BinaryIO, size: int, label: str = "<stream>") -> None:
        self.stream = stream
        self.size = size
        self.label = label
        self._taken = False

    def describe(self) -> str:
        return self.label

    def open(self) -> BinaryIO:
        """The stream itself, once; a second reader would see none of its data."""
        if self._taken:
            raise OSError(f"{self.label} was already read")
        self._taken = True
        return self.stream


_FILEOBJ_LOCK = threading.Lock()


class _Window(io.RawIOBase):
    """Reads [offset, offset + size) of a shared file object; closing it leaves the object open."""

    def __init__(self, inner: BinaryIO, offset: int, size: int) -> None:
        super().__init__()
        self._inner = inner
        self._pos = offset
        self._end = offset + size

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: bytearray | memoryview) -> int:  # type: ignore[override]
        want = min(len(buffer), self._end - self._pos)
        if want <= 0:
            return 0
        with _FILEOBJ_LOCK:
            self._inner.seek(self._pos)
            data = self._inner.read(want)
        buffer[: len(data)] = data
        self._pos += len(data)
        return len(data)

    def fileno(self) -> int:
        raise io.UnsupportedOperation("no file descriptor")


@dataclass(eq=False, slots=True)
class Node:
    """Base of every tree node. Identity matters: one node under two names is a hard link."""

    meta: Metadata

    @property
    def file_type(self) -> int:
        """The stat.S_IF* constant of this node."""
        raise NotImplementedError


@dataclass(eq=False, slots=True)
class File(Node):
    data: DataSource = field(default_factory=lambda: BytesData(b""))

    @property
    def file_type(self) -> int:
        return stat.S_IFREG


@dataclass(eq=False, slots=True)
class Directory(Node):
    children: dict[bytes, Node] = field(default_factory=dict)

    @property
    def file_type(self) -> int:
        return stat.S_IFDIR


@dataclass(eq=False, slots=True)
class Symlink(Node):
    target: bytes = b""

    @property
    def file_type(self) -> int:
        return stat.S_IFLNK


@dataclass(eq=False, slots=True)
class Device(Node):
    """A character (`block=False`) or block device node."""

    block: bool = False
    major: int = 0
    minor: int = 0

    @property
    def file_type(self) -> int:
        return stat.S_IFBLK if self.block else stat.S_IFCHR


@dataclass(eq=False, slots=True)
class Fifo(Node):
    @property
    def file_type(self) -> int:
        return stat.S_IFIFO


@dataclass(eq=False, slots=True)
class Socket(Node):
    @property
    def file_type(self) -> int:
        return stat.S_IFSOCK


def iter_tree(root: Directory, path: bytes = b"") -> Iterator[tuple[bytes, Node]]:
    """Every (path, node) pair below and including root, breadth first, names sorted bytewise.

    A hard-linked node appears once per name. Paths are relative, b"" for the root.
    """
    yield path, root
    queue: deque[tuple[bytes, Directory]] = deque([(path, root)])
    while queue:
        dir_path, directory = queue.popleft()
        for name in sorted(directory.children):
            child = directory.children[name]
            child_path = dir_path + b"/" + name if dir_path else name
            yield child_path, child
            if isinstance(child, Directory):
                queue.append((child_path, child))


def full_mode(node: Node) -> int:
    """st_mode: file type bits plus permission bits."""
    return node.file_type | (node.meta.mode & 0o7777)


@contextmanager
def gc_paused() -> Iterator[None]:
    """No cyclic garbage collection inside the block (restored after, as it was).

    Building and planning a tree creates objects by the hundred thousand and frees none, so the
    collector's passes over them find nothing; on large trees they cost seconds.
    """
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was_enabled:
            gc.enable()
