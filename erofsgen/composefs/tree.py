"""The tree a composefs image is made from, as libcomposefs holds it.

Unlike erofsgen's general model (erofsgen.model), a composefs node keeps what composefs
dump files carry verbatim: the link count, the backing-file payload (redirect path), the
fs-verity digest of the external content, and seconds and nanoseconds of the mtime apart.
A hard link is a node of its own in its parent's children whose `link_to` is the target.
"""

from __future__ import annotations

import stat
from dataclasses import dataclass, field

S_IFMT = 0o170000
VALID_TYPES = frozenset(
    {stat.S_IFREG, stat.S_IFDIR, stat.S_IFLNK, stat.S_IFBLK, stat.S_IFCHR, stat.S_IFSOCK, stat.S_IFIFO}
)
MAX_NAME = 255  # LCFS_MAX_NAME_LENGTH
PATH_MAX = 4096  # payloads (symlink targets, backing paths) are shorter than this
INLINE_CONTENT_MAX = 5000  # LCFS_INLINE_CONTENT_MAX: inline content a dump may give
DIGEST_SIZE = 32


@dataclass(eq=False, slots=True)
class CfsNode:
    """One inode (or one hard-link name, when `link_to` is set)."""

    mode: int  # st_mode with the file type bits
    uid: int = 0
    gid: int = 0
    nlink: int = 1
    rdev: int = 0
    mtime_sec: int = 0
    mtime_nsec: int = 0
    size: int = 0
    payload: bytes | None = None  # symlink target, or backing path `XX/YYYY...` of external data
    content: bytes | None = None  # inline file content (held in the image)
    digest: bytes | None = None  # fs-verity digest of the external content (32 bytes)
    xattrs: dict[bytes, bytes] = field(default_factory=dict)
    children: dict[bytes, CfsNode] | None = None  # directories only
    link_to: CfsNode | None = None  # a hard-link name: the node it names

    @property
    def file_type(self) -> int:
        return self.mode & S_IFMT

    @property
    def is_dir(self) -> bool:
        return self.mode & S_IFMT == stat.S_IFDIR

    def target(self) -> CfsNode:
        """The inode this name stands for (itself unless a hard link)."""
        node = self
        while node.link_to is not None:
            node = node.link_to
        return node


def split_path(path: bytes) -> list[bytes]:
    """The names of a dump path, as mkcomposefs walks it: runs of `/` separate names."""
    return [name for name in path.split(b"/") if name]
