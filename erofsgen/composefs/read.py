"""Reading a composefs image back into the tree it was made from (what composefs-info shows).

As libcomposefs 1.0.8 reads an image: `trusted.overlay.redirect` becomes the payload and
`trusted.overlay.metacopy` the digest of a regular file; a regular file with the escaped
whiteout xattr is a whiteout (chr 0:0) again; the whiteout markers of directories and
`user.overlay.whiteout` are dropped, as are other unescaped `trusted.overlay.*`; escaped
`trusted.overlay.overlay.*` names are unescaped. Real whiteouts (the root's stubs) are skipped.
An inode met a second time is a hard link to the first name it was met under (depth first).
Inline xattrs come before shared ones, in image order.

libcomposefs reads the redirect one byte past its value (`/ab/cd` reads back as `ab/cd` plus
the next byte of the image, up to a NUL); that is reproduced, so `dump` prints what
composefs-info 1.0.8 prints. For the 66-byte redirects mkcomposefs writes the extra byte is
padding and the payload is exact.
"""

from __future__ import annotations

import stat
import struct
from collections.abc import Iterator

from ..errors import CorruptImageError
from ..format.constants import EROFS_SUPER_MAGIC_V1, EROFS_SUPER_OFFSET, DataLayout
from ..format.inode import INODE_COMPACT, INODE_EXTENDED
from .dump import DumpEntry
from .image import HEADER_VERSION, MAGIC
from .prepare import ESCAPED, METACOPY, OVERLAY, REDIRECT, USER_OVERLAY
from .tree import INLINE_CONTENT_MAX, S_IFMT, CfsNode

BLOCK = 4096
_PREFIX_NAMES = {1: b"user.", 2: b"system.posix_acl_access", 3: b"system.posix_acl_default",
                 4: b"trusted.", 5: b"lustre.", 6: b"security."}  # fmt: skip
_DROPPED = {ESCAPED + b"whiteouts", USER_OVERLAY + b"whiteout", USER_OVERLAY + b"whiteouts"}


class _Whiteout(Exception):
    """The inode is a real whiteout: not part of the tree."""


class ImageReader:
    """Builds the tree of a composefs image held in memory."""

    def __init__(self, image: bytes) -> None:
        if len(image) < BLOCK:
            raise CorruptImageError("too short for a composefs image")
        magic, version = struct.unpack_from("<II", image)
        if magic != MAGIC:
            raise CorruptImageError("no composefs header (wrong magic)", offset=0)
        if version != HEADER_VERSION:
            raise CorruptImageError(f"unsupported composefs header version {version}", offset=4)
        sb = EROFS_SUPER_OFFSET
        (sb_magic,) = struct.unpack_from("<I", image, sb)
        if sb_magic != EROFS_SUPER_MAGIC_V1:
            raise CorruptImageError("no EROFS superblock", offset=sb)
        self.image = image
        self.root_nid = struct.unpack_from("<H", image, sb + 14)[0]
        self.build_time: tuple[int, int] = struct.unpack_from("<QI", image, sb + 24)
        self.meta = struct.unpack_from("<I", image, sb + 40)[0] * BLOCK
        self.xattr_base = struct.unpack_from("<I", image, sb + 44)[0] * BLOCK
        self.seen: dict[int, CfsNode] = {}

    def _bytes(self, offset: int, size: int, what: str) -> bytes:
        if offset < 0 or offset + size > len(self.image):
            raise CorruptImageError(f"{what} beyond the end of the image", offset=offset)
        return self.image[offset : offset + size]

    def root(self) -> CfsNode:
        return self.node(self.root_nid)

    def node(self, nid: int) -> CfsNode:
        """The node of an inode (a link node if it was read before)."""
        first = self.seen.get(nid)
        if first is not None:
            return CfsNode(0, link_to=first)
        offset = self.meta + nid * 32
        (i_format,) = struct.unpack_from("<H", self._bytes(offset, 2, "inode"))
        compact = not i_format & 1
        if compact:
            c = INODE_COMPACT.unpack(self._bytes(offset, 32, "inode"))
            sec, nsec = self.build_time
            node = CfsNode(c.i_mode, c.i_uid, c.i_gid, c.i_nb, 0, sec, nsec, c.i_size)
            raw, icount, core = c.i_u, c.i_xattr_icount, 32
        else:
            e = INODE_EXTENDED.unpack(self._bytes(offset, 64, "inode"))
            node = CfsNode(e.i_mode, e.i_uid, e.i_gid, e.i_nlink, 0, e.i_mtime, e.i_mtime_nsec, e.i_size)
            raw, icount, core = e.i_u, e.i_xattr_icount, 64
        ftype = node.mode & S_IFMT
        if ftype in (stat.S_IFCHR, stat.S_IFBLK):
            node.rdev = raw
            if ftype == stat.S_IFCHR and raw == 0:
                raise _Whiteout
        self.seen[nid] = node
        layout = (i_format >> 1) & 7
        xattr_size = 0 if icount == 0 else 12 + 4 * (icount - 1)
        tail_at = offset + core + xattr_size
        tailpacked = layout == DataLayout.FLAT_INLINE
        size = node.size
        tail = size % BLOCK if tailpacked else 0
        full = -(-size // BLOCK) - (1 if tailpacked else 0)
        if ftype == stat.S_IFDIR:
            node.children = {}
            for block in range(full):
                length = BLOCK
                if not tailpacked and block + 1 == full and size % BLOCK:
                    length = size % BLOCK
                self._readdir(node, (raw + block) * BLOCK, length)
            if tailpacked:
                self._readdir(node, tail_at, tail)
        elif ftype == stat.S_IFLNK:
            where = tail_at if tailpacked else raw * BLOCK
            node.payload = self._bytes(where, size, "symlink target").split(b"\0")[0]
            node.size = len(node.payload)
        elif ftype == stat.S_IFREG and size and layout in (DataLayout.FLAT_PLAIN, DataLayout.FLAT_INLINE):
            if size > INLINE_CONTENT_MAX:
                raise CorruptImageError("inline file content larger than composefs allows", nid=nid)
            node.content = self._bytes(raw * BLOCK, full * BLOCK if tailpacked else size, "file data")
            if tailpacked:
                node.content += self._bytes(tail_at, tail, "file tail")
        elif ftype == stat.S_IFREG and size and layout != DataLayout.CHUNK_BASED:
            raise CorruptImageError(f"regular file with data layout {layout}", nid=nid)
        if icount:
            self._xattrs(node, offset + core, xattr_size)
        return node

    def _readdir(self, parent: CfsNode, at: int, length: int) -> None:
        block = self._bytes(at, length, "directory block")
        if not block:
            return
        (first_nameoff,) = struct.unpack_from("<H", block, 8)
        count = first_nameoff // 12
        if first_nameoff % 12 or count == 0:
            raise CorruptImageError("malformed directory block", offset=at)
        for i in range(count):
            nid, nameoff = struct.unpack_from("<QH", block, i * 12)
            if i + 1 < count:
                end = struct.unpack_from("<H", block, (i + 1) * 12 + 8)[0]
                name = block[nameoff:end]
            else:
                name = block[nameoff:].split(b"\0")[0]
            if name in (b".", b".."):
                continue
            try:
                child = self.node(nid)
            except _Whiteout:
                continue
            assert parent.children is not None
            parent.children[name] = child

    def _entry(self, at: int) -> tuple[bytes, int, int, int]:
        """(full name, value offset, value size, entry size) of the xattr entry at `at`."""
        name_len, index, value_size = struct.unpack_from("<BBH", self._bytes(at, 4, "xattr entry"))
        suffix = self._bytes(at + 4, name_len, "xattr name")
        name = _PREFIX_NAMES.get(index, b"") + suffix
        return name, at + 4 + name_len, value_size, (4 + name_len + value_size + 3) & ~3

    def _xattrs(self, node: CfsNode, at: int, size: int) -> None:
        shared_count = self._bytes(at + 4, 1, "xattr header")[0]
        entries = []
        pos = at + 12 + 4 * shared_count
        end = at + size
        while pos + 4 < end:
            name, value_at, value_size, step = self._entry(pos)
            entries.append((name, value_at, value_size))
            pos += step
        for i in range(shared_count):
            (index,) = struct.unpack_from("<I", self._bytes(at + 12 + 4 * i, 4, "shared xattr id"))
            name, value_at, value_size, _ = self._entry(self.xattr_base + 4 * index)
            entries.append((name, value_at, value_size))
        for name, value_at, value_size in entries:
            self._xattr(node, name, value_at, value_size)

    def _xattr(self, node: CfsNode, name: bytes, value_at: int, value_size: int) -> None:
        value = self._bytes(value_at, value_size, "xattr value")
        regular = node.mode & S_IFMT == stat.S_IFREG
        if name == REDIRECT:
            if regular:
                if value_size > 1 and value[:1] == b"/":
                    # libcomposefs's read-back of the redirect: one byte too far (see above)
                    value = self.image[value_at + 1 : value_at + 2 + value_size]
                node.payload = value.split(b"\0")[0]
            return
        if name == METACOPY:
            if regular and value_size == 36:
                node.digest = value[4:]
            return
        if name == ESCAPED + b"whiteout" and regular:
            node.mode = (node.mode & ~S_IFMT) | stat.S_IFCHR
            node.rdev = 0
            node.size = 0
            return
        if name in _DROPPED:
            return
        if name.startswith(OVERLAY):
            if not name.startswith(ESCAPED):
                return
            name = OVERLAY[: len(b"trusted.")] + name[len(OVERLAY) :]
        node.xattrs.pop(name, None)
        node.xattrs[name] = value


def read_image(image: bytes) -> CfsNode:
    """The tree of a composefs image (CorruptImageError if it is not one)."""
    try:
        return ImageReader(image).root()
    except _Whiteout:
        raise CorruptImageError("the root is a whiteout") from None
    except (struct.error, IndexError) as exc:
        raise CorruptImageError(f"truncated or malformed composefs image: {exc}") from None


def dump_entries(root: CfsNode) -> Iterator[DumpEntry]:
    """The dump lines of a tree, depth first, children bytewise (composefs-info dump's order).

    A hard link's line carries its target's fields and the target's path.
    """
    paths: dict[int, bytes] = {}
    stack: list[tuple[bytes, CfsNode]] = [(b"/", root)]
    pending: list[tuple[bytes, CfsNode]] = []
    order: list[tuple[bytes, CfsNode]] = []
    while stack:
        path, node = stack.pop()
        order.append((path, node))
        if node.link_to is None:
            paths[id(node)] = path
        pending = [
            (path.rstrip(b"/") + b"/" + name, child) for name, child in sorted((node.children or {}).items())
        ]
        stack.extend(reversed(pending))
    for path, node in order:
        target = node.target()
        link = node.link_to is not None
        yield DumpEntry(
            path,
            target.size,
            target.mode,
            target.nlink,
            target.uid,
            target.gid,
            target.rdev,
            target.mtime_sec,
            target.mtime_nsec,
            paths[id(target)] if link else target.payload,
            target.content,
            target.digest,
            tuple(target.xattrs.items()),
            link,
        )
