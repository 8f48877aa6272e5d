"""The tree rewrite mkcomposefs 1.0.8 does before laying an image out.

On a copy of the tree: source `trusted.overlay.*` xattrs are escaped, external regular files
get `trusted.overlay.metacopy` and `trusted.overlay.redirect`, whiteouts (chr 0:0) become
regular files marked with escaped whiteout xattrs (and their directories with the `whiteouts`
and, from format version 1, escaped `opaque=x` markers), the root gets a real
`trusted.overlay.opaque=y` and 256 whiteout stubs `00`..`ff` hiding the object store's fan-out
directories. Every xattr goes through libcomposefs's per-inode size accounting, so an inode
whose xattrs leave no room for composefs's own is refused as mkcomposefs refuses it.
"""

from __future__ import annotations

import stat
from dataclasses import dataclass, field

from ..errors import InvalidInputError
from .tree import S_IFMT, CfsNode

VERSION_MAX = 1  # LCFS_VERSION_MAX
OVERLAY = b"trusted.overlay."
ESCAPED = b"trusted.overlay.overlay."
METACOPY = OVERLAY + b"metacopy"
REDIRECT = OVERLAY + b"redirect"
OPAQUE = OVERLAY + b"opaque"
USER_OVERLAY = b"user.overlay."
FS_VERITY_HASH_ALG_SHA256 = 1
MAX_CHUNK_FORMAT = 31  # EROFS_CHUNK_FORMAT_BLKBITS_MASK
MAX_CHUNKS = 1024  # LCFS_MAX_NONINLINE_CHUNKS
BLOCK_BITS = 12
_XATTR_LIMIT = 0xFFFF // 2  # LCFS_INODE_EXTERNAL_XATTR_MAX
_ENTRY_OVERHEAD = 7  # 2 * LCFS_INODE_XATTRMETA_SIZE - 1
_HEADER = 12
_SIZE_T = 2**64


@dataclass(eq=False, slots=True)
class Inode:
    """One inode of the image as mkcomposefs sees it after the rewrite."""

    mode: int
    uid: int
    gid: int
    nlink: int
    rdev: int
    mtime_sec: int
    mtime_nsec: int
    size: int
    payload: bytes | None
    content: bytes | None
    xattrs: dict[bytes, bytes]
    xattr_used: int  # libcomposefs's running estimate of the xattrs' size (for its limit)
    path: str  # for error messages
    entries: list[tuple[bytes, Inode | Link]] | None = None  # directories: name -> inode/link
    parent: Inode | None = None

    @property
    def file_type(self) -> int:
        return self.mode & S_IFMT

    def set_xattr(self, name: bytes, value: bytes) -> None:
        """Add or replace an xattr, with libcomposefs's accounting and limit.

        The estimate is a size_t there, and escaping renames xattrs without updating it, so
        replacing an escaped xattr can take it below zero; it then wraps, as here, and the
        next addition fails unless it wraps back (what mkcomposefs 1.0.8 does).
        """
        if name in self.xattrs:
            old = self.xattrs.pop(name)
            used = self.xattr_used - (_ENTRY_OVERHEAD + len(name) + len(old)) if self.xattrs else 0
        else:
            used = self.xattr_used
        used = (used + _ENTRY_OVERHEAD + len(name) + len(value) + (0 if self.xattrs else _HEADER)) % _SIZE_T
        if used > _XATTR_LIMIT:
            raise InvalidInputError(
                f"no room for xattr {name.decode(errors='replace')}: the inode's xattrs would "
                f"take more than {_XATTR_LIMIT} bytes",
                self.path,
            )
        self.xattrs[name] = value
        self.xattr_used = used % _SIZE_T


@dataclass(eq=False, slots=True)
class Link:
    """A hard-link name: the directory entry points at `target`'s inode."""

    target: Inode


@dataclass(slots=True)
class Prepared:
    root: Inode
    version: int
    inodes: list[Inode] = field(default_factory=list)  # filled by the layout (BFS order)


def chunking(size: int) -> tuple[int, int]:
    """(chunk bits, chunk count) of an external file: the fewest chunks, at least a block each."""
    bits = max((size - 1).bit_length(), BLOCK_BITS)
    bits = min(bits, MAX_CHUNK_FORMAT + BLOCK_BITS)
    return bits, -(-size // (1 << bits))


def choose_version(root: CfsNode, min_version: int, max_version: int) -> int:
    """The format version: `min_version`, raised to 1 (if allowed) when there is a whiteout."""
    if not 0 <= min_version <= VERSION_MAX or not 0 <= max_version <= VERSION_MAX:
        raise InvalidInputError(f"format versions go from 0 to {VERSION_MAX}")
    max_version = max(max_version, min_version)
    if min_version >= 1 or max_version < 1:
        return min_version
    stack = [root]
    while stack:
        node = stack.pop()
        if node.file_type == stat.S_IFCHR and node.rdev == 0:
            return 1
        if node.children:
            stack.extend(c for c in node.children.values() if c.link_to is None)
    return min_version


def _copy(node: CfsNode, path: str) -> Inode:
    return Inode(
        node.mode,
        node.uid,
        node.gid,
        node.nlink,
        node.rdev,
        node.mtime_sec,
        node.mtime_nsec,
        node.size,
        node.payload,
        node.content,
        dict(node.xattrs),
        0,  # libcomposefs's clone does not carry the estimate over: it starts again from 0
        path,
    )


def _add_overlay_xattrs(inode: Inode, node: CfsNode, version: int) -> None:
    """Escape source overlay xattrs, mark external files and whiteouts (add_overlayfs_xattrs)."""
    if any(name.startswith(OVERLAY) for name in inode.xattrs):
        # In place: a name that would collide is itself renamed, so none do.
        inode.xattrs = {
            (ESCAPED + name[len(OVERLAY) :] if name.startswith(OVERLAY) else name): value
            for name, value in inode.xattrs.items()
        }
    ftype = inode.file_type
    if ftype == stat.S_IFREG and inode.size > 0 and inode.content is None:
        metacopy = b""
        if node.digest is not None:
            metacopy = bytes((0, 4 + len(node.digest), 0, FS_VERITY_HASH_ALG_SHA256)) + node.digest
        inode.set_xattr(METACOPY, metacopy)
        if inode.payload:
            inode.set_xattr(REDIRECT, b"/" + inode.payload)
    if ftype == stat.S_IFCHR and inode.rdev == 0:
        parent = inode.parent
        assert parent is not None
        inode.size = 0
        inode.mode = stat.S_IFREG | (inode.mode & ~S_IFMT)
        inode.set_xattr(ESCAPED + b"whiteout", b"")
        inode.set_xattr(USER_OVERLAY + b"whiteout", b"")
        parent.set_xattr(ESCAPED + b"whiteouts", b"")
        parent.set_xattr(USER_OVERLAY + b"whiteouts", b"")
        if version >= 1:
            parent.set_xattr(ESCAPED + b"opaque", b"x")
            parent.set_xattr(USER_OVERLAY + b"opaque", b"x")


def _check(node: CfsNode, path: str) -> None:
    """lcfs_node_validate: an external file's chunk map must fit LCFS_MAX_NONINLINE_CHUNKS."""
    external = node.file_type == stat.S_IFREG and node.size > 0 and node.content is None
    if external and chunking(node.size)[1] > MAX_CHUNKS:
        raise InvalidInputError(f"file of {node.size} bytes is too large for composefs", path)


def prepare(root: CfsNode, min_version: int = 0, max_version: int = 1) -> Prepared:
    """The rewritten copy of the tree, with its format version (the input is not changed)."""
    version = choose_version(root, min_version, max_version)
    top = _copy(root, "/")
    top.parent = top
    copies: dict[int, Inode] = {id(root): top}
    links: list[tuple[list[tuple[bytes, Inode | Link]], int, CfsNode]] = []
    stack: list[tuple[CfsNode, Inode, str]] = [(root, top, "")]
    while stack:  # depth first, pre-order, like rewrite_tree_node_for_erofs
        node, inode, path = stack.pop()
        _check(node, path or "/")
        _add_overlay_xattrs(inode, node, version)
        if node.children is None:
            continue
        entries: list[tuple[bytes, Inode | Link]] = []
        pending = []
        for name in sorted(node.children):
            child = node.children[name]
            child_path = f"{path}/{name.decode(errors='replace')}"
            if child.link_to is not None:
                links.append((entries, len(entries), child.target()))
                entries.append((name, Link(top)))  # placeholder until every inode exists
                continue
            copy = _copy(child, child_path)
            copy.parent = inode
            copies[id(child)] = copy
            entries.append((name, copy))
            pending.append((child, copy, child_path))
        inode.entries = entries
        stack.extend(reversed(pending))
    for entries, index, target in links:
        entries[index] = (entries[index][0], Link(copies[id(target)]))
    top.set_xattr(OPAQUE, b"y")
    _add_root_stubs(top)
    for inode in copies.values():
        if inode.entries is not None:
            _add_dots(inode)
    return Prepared(top, version)


def _add_root_stubs(root: Inode) -> None:
    """Whiteouts 00..ff in the root where no entry has that name (add_overlay_whiteouts)."""
    assert root.entries is not None
    taken = {name for name, _ in root.entries}
    selinux = root.xattrs.get(b"security.selinux")
    for i in range(256):
        name = b"%02x" % i
        if name in taken:
            continue
        stub = Inode(
            stat.S_IFCHR | 0o644,
            root.uid,
            root.gid,
            1,
            0,
            root.mtime_sec,
            root.mtime_nsec,
            0,
            None,
            None,
            {},
            0,
            "/" + name.decode(),
        )
        stub.parent = root
        if selinux is not None:
            stub.set_xattr(b"security.selinux", selinux)
        root.entries.append((name, stub))
    root.entries.sort(key=_entry_name)


def _add_dots(directory: Inode) -> None:
    assert directory.entries is not None and directory.parent is not None
    directory.entries += [(b".", Link(directory)), (b"..", Link(directory.parent))]
    directory.entries.sort(key=_entry_name)


def _entry_name(entry: tuple[bytes, Inode | Link]) -> bytes:
    return entry[0]
