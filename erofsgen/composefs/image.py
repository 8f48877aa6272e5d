"""Writing a composefs image byte for byte as mkcomposefs 1.0.8 does.

Areas in order: the 32-byte composefs header, zeros to 1024, the superblock, the inode
records (layout.py decided where), the shared xattr table, zeros to a block boundary, then
the data blocks in inode order: each directory's full blocks, then each file's or symlink's
block. After each area the position is checked against the layout.
"""

from __future__ import annotations

import stat
import struct
from collections.abc import Callable
from typing import BinaryIO

from ..errors import InvalidInputError
from ..format.constants import EROFS_NULL_ADDR, EROFS_SUPER_OFFSET, DataLayout, FeatureCompat
from ..format.dirent import DIRENT, file_type_of_mode
from ..format.dirent import DirentRec as Dirent
from ..format.inode import INODE_COMPACT, INODE_EXTENDED, InodeCompactRec, InodeExtendedRec
from ..format.superblock import SUPERBLOCK, SuperBlockRec
from ..verity import FsVerityHasher
from .layout import BLOCK, Layout, Record, filter_bit, name_index, plan
from .prepare import Inode, Link, prepare
from .tree import CfsNode

MAGIC = 0xD078629A  # LCFS_EROFS_MAGIC
HEADER_VERSION = 1  # LCFS_EROFS_VERSION
FLAG_HAS_ACL = 1
_HEADER = struct.Struct("<IIII16x")


class _Out:
    """The image bytes as they are written, hashed for the fs-verity digest on the way."""

    def __init__(self, sink: Callable[[bytes], object] | None) -> None:
        self.sink = sink
        self.pos = 0
        self.hasher = FsVerityHasher()
        self.pending: list[bytes] = []
        self.pending_size = 0

    def write(self, data: bytes) -> None:
        self.pending.append(data)
        self.pending_size += len(data)
        self.pos += len(data)
        if self.pending_size >= 1 << 20:
            self.flush()

    def pad(self, n: int) -> None:
        if n:
            self.write(bytes(n))

    def align(self, alignment: int) -> None:
        self.pad(-self.pos % alignment)

    def at(self, offset: int, area: str) -> None:
        if self.pos != offset:
            raise AssertionError(f"{area} at {self.pos:#x}, planned at {offset:#x}")

    def flush(self) -> None:
        data = b"".join(self.pending)
        self.pending.clear()
        self.pending_size = 0
        self.hasher.update(data)
        if self.sink is not None:
            self.sink(data)


def _xattr_entry(name: bytes, value: bytes) -> bytes:
    index, suffix = name_index(name)
    raw = struct.pack("<BBH", len(suffix), index, len(value)) + suffix + value
    return raw + bytes(-len(raw) % 4)


def _xattr_body(rec: Record, layout: Layout) -> bytes:
    if not rec.xattrs:
        return b""
    present = 0
    for name, _ in rec.xattrs:
        present |= filter_bit(name)
    name_filter = 0xFFFFFFFF & ~present
    base = layout.inodes_end % BLOCK
    parts = [struct.pack("<IB7x", name_filter, len(rec.shared))]
    parts += [struct.pack("<I", (base + offset) // 4) for offset in rec.shared]
    parts += [_xattr_entry(name, value) for name, value in rec.inline]
    body = b"".join(parts)
    return body + bytes(-len(body) % 4)


def _core(rec: Record, layout: Layout, blkaddr: int) -> bytes:
    inode = rec.inode
    ftype = inode.file_type
    if rec.chunk_format >= 0:
        data_layout = DataLayout.CHUNK_BASED
    elif rec.tail > 0:
        data_layout = DataLayout.FLAT_INLINE
    else:
        data_layout = DataLayout.FLAT_PLAIN
    i_format = (int(data_layout) << 1) | (0 if rec.compact else 1)
    icount = 0 if rec.xattr_size == 0 else (rec.xattr_size - 12) // 4 + 1
    if icount > 0xFFFF:
        raise InvalidInputError("too many xattrs for one inode", inode.path)
    i_u = 0
    if ftype in (stat.S_IFCHR, stat.S_IFBLK):
        i_u = inode.rdev
    elif rec.n_blocks > 0:
        i_u = blkaddr
    if rec.chunk_format >= 0:
        # i_u is a union: mkcomposefs stores the chunk format over the low half of the
        # block address it may have just set there.
        i_u = (i_u & 0xFFFF0000) | rec.chunk_format
    mode = inode.mode & 0xFFFF
    if rec.compact:
        return INODE_COMPACT.pack(
            InodeCompactRec(
                i_format, icount, mode, inode.nlink, rec.size, 0, i_u, rec.ino, inode.uid, inode.gid, bytes(4)
            )
        )
    return INODE_EXTENDED.pack(
        InodeExtendedRec(
            i_format,
            icount,
            mode,
            0,
            rec.size,
            i_u,
            rec.ino,
            inode.uid,
            inode.gid,
            inode.mtime_sec & 0xFFFFFFFFFFFFFFFF,
            inode.mtime_nsec,
            inode.nlink,
            bytes(16),
        )
    )


def _dirent_chunks(rec: Record, layout: Layout) -> list[bytes]:
    """A directory's dirent blocks (unpadded), the last one possibly its inline tail."""
    if rec.dirents is not None:
        return rec.dirents
    inode = rec.inode
    assert inode.entries is not None
    groups: list[list[tuple[bytes, Inode | Link]]] = [[]]
    used = 0
    for name, child in inode.entries:
        size = 12 + len(name)
        if used + size > BLOCK:
            groups.append([])
            used = 0
        used += size
        groups[-1].append((name, child))
    chunks = []
    for group in groups:
        nameoff = 12 * len(group)
        heads = []
        for name, child in group:
            target = layout.record_of(child)
            ftype = int(file_type_of_mode(target.inode.mode))
            heads.append(DIRENT.pack(Dirent(target.nid, nameoff, ftype, 0)))
            nameoff += len(name)
        chunks.append(b"".join(heads) + b"".join(name for name, _ in group))
    rec.dirents = chunks
    return chunks


def _tail(rec: Record, layout: Layout) -> bytes:
    inode = rec.inode
    ftype = inode.file_type
    if ftype == stat.S_IFDIR:
        return _dirent_chunks(rec, layout)[-1] if rec.tail else b""
    if ftype == stat.S_IFLNK:
        assert inode.payload is not None
        return inode.payload if rec.n_blocks == 0 else b""
    if ftype == stat.S_IFREG and rec.tail:
        if inode.content is not None:
            return inode.content[inode.size - rec.tail :]
        return struct.pack("<I", EROFS_NULL_ADDR) * rec.chunk_count
    return b""


def _data_blocks(rec: Record, layout: Layout) -> list[bytes]:
    inode = rec.inode
    ftype = inode.file_type
    if ftype == stat.S_IFDIR:
        return _dirent_chunks(rec, layout)[: rec.n_blocks]
    if not rec.n_blocks:
        return []
    if ftype == stat.S_IFREG:
        if inode.content is None:
            return [struct.pack("<I", EROFS_NULL_ADDR) * (BLOCK // 4)]
        return [inode.content[:BLOCK]]  # mkcomposefs writes the first block only (n_blocks <= 1)
    assert ftype == stat.S_IFLNK and inode.payload is not None
    return [inode.payload[:BLOCK]]


def _superblock(layout: Layout) -> bytes:
    root = layout.records[0]
    return SUPERBLOCK.pack(
        SuperBlockRec(
            magic=0xE0F5E1E2,
            checksum=0,
            feature_compat=int(FeatureCompat.MTIME | FeatureCompat.XATTR_FILTER),
            blkszbits=12,
            sb_extslots=0,
            root_nid=root.nid,
            inos=len(layout.records),
            epoch=layout.build_time[0] & 0xFFFFFFFFFFFFFFFF,
            fixed_nsec=layout.build_time[1],
            blocks=layout.data_start // BLOCK + layout.n_data_blocks,
            meta_blkaddr=0,
            xattr_blkaddr=layout.inodes_end // BLOCK,
            uuid=bytes(16),
            volume_name=bytes(16),
            feature_incompat=0,
            u1=0,
            extra_devices=0,
            devt_slotoff=0,
            dirblkbits=0,
            xattr_prefix_count=0,
            xattr_prefix_start=0,
            packed_nid=0,
            xattr_filter_reserved=0,
            ishare_xattr_prefix_id=0,
            reserved=bytes(2),
            build_time=0,
            rootnid_8b=0,
            reserved2=bytes(8),
        )
    )


def emit(layout: Layout, sink: Callable[[bytes], object] | None = None) -> tuple[int, bytes]:
    """Write the image to `sink` (None: only measure it); returns (size, fs-verity digest)."""
    out = _Out(sink)
    flags = FLAG_HAS_ACL if layout.has_acl else 0
    out.write(_HEADER.pack(MAGIC, HEADER_VERSION, flags, layout.version))
    out.pad(EROFS_SUPER_OFFSET - out.pos)
    out.write(_superblock(layout))
    block = layout.data_start // BLOCK
    for rec in layout.records:
        out.pad(rec.pad)
        out.at(rec.offset, f"inode {rec.ino}")
        out.write(_core(rec, layout, block))
        block += rec.n_blocks
        out.write(_xattr_body(rec, layout))
        out.write(_tail(rec, layout))
    out.align(32)
    out.at(layout.inodes_end, "shared xattrs")
    for name, value in layout.shared:
        out.write(_xattr_entry(name, value))
    out.align(BLOCK)
    out.at(layout.data_start, "data blocks")
    for rec in layout.records:
        for data in _data_blocks(rec, layout):
            out.write(data)
            out.align(BLOCK)
    out.at(layout.data_start + layout.n_data_blocks * BLOCK, "image end")
    out.flush()
    return out.pos, out.hasher.digest()


def write_image(
    root: CfsNode,
    output: BinaryIO | None = None,
    *,
    min_version: int = 0,
    max_version: int = 1,
) -> bytes:
    """Write the composefs image of `root` to `output`; returns its fs-verity digest.

    `min_version`/`max_version` are mkcomposefs's: the image has format `min_version`, raised
    to 1 within `max_version` when the tree has a whiteout. Without `output` the image is only
    measured (what `--print-digest-only` needs).
    """
    layout = lay_out(root, min_version=min_version, max_version=max_version)
    return emit(layout, output.write if output is not None else None)[1]


def lay_out(root: CfsNode, *, min_version: int = 0, max_version: int = 1) -> Layout:
    """Everything about the image but its bytes; raises InvalidInputError for what cannot be written.

    A caller that passes the only reference to `root` (`lay_out(load_source(...))`) lets the
    source tree go once its rewritten copy exists, before the layout is planned: a lower peak.
    """
    prepared = prepare(root, min_version, max_version)
    del root
    return plan(prepared)


def image_bytes(root: CfsNode, *, min_version: int = 0, max_version: int = 1) -> bytes:
    """The whole image in memory (tests, small trees)."""
    parts: list[bytes] = []
    layout = plan(prepare(root, min_version, max_version))
    emit(layout, parts.append)
    return b"".join(parts)
