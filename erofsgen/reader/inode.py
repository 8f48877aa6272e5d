"""Decode the inode at a NID into `InodeInfo`: every raw field plus the positions derived from it.

The rules follow the kernel's `erofs_read_inode`: unknown i_format bits and data layouts are
refused, a bogus file type or a negative size is corruption. Layout-specific problems (inline
tails crossing a block, broken indexes) are left to the data readers, so tools can still show an
inode whose data is damaged.
"""

from __future__ import annotations

import stat
from dataclasses import dataclass
from typing import Any, NamedTuple

from ..errors import CorruptImageError, UnsupportedFeatureError
from ..format.chunk import chunk_array_offset, chunk_entry_size
from ..format.constants import (
    CHUNK_FORMAT_ALL,
    EROFS_ISLOTBITS,
    EROFS_NULL_ADDR,
    ChunkFormat,
    DataLayout,
    FileType,
    InodeVersion,
)
from ..format.dirent import file_type_of_mode
from ..format.inode import (
    I_FORMAT_KNOWN_BITS,
    INODE_COMPACT,
    INODE_EXTENDED,
    InodeCompactRec,
    InodeExtendedRec,
    decode_rdev,
    i_format_layout,
    i_format_version,
    xattr_ibody_size,
)
from ..format.zmap import map_header_offset
from .storage import Storage
from .superblock import SuperblockInfo

COMPRESSED_LAYOUTS = (DataLayout.COMPRESSED_FULL, DataLayout.COMPRESSED_COMPACT)
FLAT_LAYOUTS = (DataLayout.FLAT_PLAIN, DataLayout.FLAT_INLINE)
_MAX_SIZE = (1 << 63) - 1


class InodeInfo(NamedTuple):
    """One decoded inode. Offsets are absolute bytes in the primary device.

    A NamedTuple, built positionally: extracting a tree decodes tens of thousands of these.
    """

    nid: int
    offset: int  # where the core starts
    raw: InodeCompactRec | InodeExtendedRec
    version: InodeVersion
    core_size: int  # 32 or 64
    i_format: int
    layout: DataLayout
    mode: int  # full st_mode
    file_type: FileType
    nlink: int
    size: int
    uid: int
    gid: int
    mtime: int  # seconds (compact inodes: the superblock epoch)
    mtime_nsec: int
    i_u: int
    i_ino: int
    xattr_icount: int
    xattr_offset: int  # start of the inline xattr body (== offset + core_size)
    xattr_size: int  # bytes of the xattr body (0 without xattrs)
    inode_end: int  # offset + core_size + xattr_size: inline tail / map header / chunk array follow
    rdev: int  # os.makedev form, 0 unless a device
    major: int
    minor: int
    startblk: int | None  # flat layouts: first data block (EROFS_NULL_ADDR = none)
    inline_offset: int | None  # FLAT_INLINE: where the tail bytes start
    inline_size: int  # FLAT_INLINE: bytes of the tail (0 otherwise)
    chunk_format: int | None  # CHUNK_BASED: i_u's format bits
    chunkbits: int | None  # CHUNK_BASED: log2 of the chunk size
    chunk_count: int  # CHUNK_BASED: entries in the chunk array
    chunk_entry_size: int  # 4 (block map) or 8 (chunk index), 0 if not chunk-based
    chunk_array_offset: int | None
    map_header_offset: int | None  # compressed layouts: the z_erofs_map_header
    compressed_blocks: int  # compressed layouts: i_u (blocks of pclusters, for st_blocks)

    @property
    def mtime_ns(self) -> int:
        """Modification time in integer nanoseconds."""
        return self.mtime * 1_000_000_000 + self.mtime_nsec

    @property
    def is_dir(self) -> bool:
        """Whether this is a directory."""
        return self.file_type == FileType.DIR

    @property
    def compressed(self) -> bool:
        """Whether the data uses compressed indexes (layout 1 or 3)."""
        return self.layout in COMPRESSED_LAYOUTS


def inode_offset(sb: SuperblockInfo, nid: int) -> int:
    """Absolute byte offset of the inode with this NID."""
    return sb.meta_blkaddr * sb.block_size + (nid << EROFS_ISLOTBITS)


_LAYOUTS = {int(layout): layout for layout in DataLayout}
_S_IFMT = 0o170000
_MODE_TO_FT = {kind: file_type_of_mode(kind) for kind in range(0, 0o200000, 0o10000)}
_VERSIONS = (InodeVersion.COMPACT, InodeVersion.EXTENDED)
_DEVICES = (FileType.CHRDEV, FileType.BLKDEV)


def _read_core(storage: Storage, nid: int, off: int) -> InodeCompactRec | InodeExtendedRec:
    if nid < 0 or off + INODE_COMPACT.size > storage.primary_size:
        raise CorruptImageError("inode lies outside the image", nid=nid, offset=off, area="inode")
    # One read covers an extended core too whenever the image is long enough.
    head = storage.read(off, min(INODE_EXTENDED.size, storage.primary_size - off), area="inode", nid=nid)
    fmt = head[0] | head[1] << 8
    if fmt & ~I_FORMAT_KNOWN_BITS:
        bits = fmt & ~I_FORMAT_KNOWN_BITS
        what = "NLINK_1/DOT_OMITTED (48-bit era)" if bits == 0x10 else f"unknown bits {bits:#x}"
        raise UnsupportedFeatureError(f"nid {nid}: i_format {fmt:#x} uses {what}")
    if i_format_version(fmt) == InodeVersion.EXTENDED:
        return INODE_EXTENDED.unpack(head, area="extended inode")
    return INODE_COMPACT.unpack(head, area="compact inode")


def decode_inode(storage: Storage, sb: SuperblockInfo, nid: int) -> InodeInfo:
    """Decode and sanity-check the inode at `nid` (see InodeInfo for what is derived)."""
    off = sb.meta_blkaddr * sb.block_size + (nid << EROFS_ISLOTBITS)  # inode_offset(), inlined
    rec = _read_core(storage, nid, off)
    fmt = rec.i_format
    layout = _LAYOUTS.get(i_format_layout(fmt))
    if layout is None:
        raise UnsupportedFeatureError(f"nid {nid}: unknown data layout {i_format_layout(fmt)}")
    ftype = _MODE_TO_FT.get(rec.i_mode & _S_IFMT, FileType.UNKNOWN)  # file_type_of_mode(), inlined
    if ftype == FileType.UNKNOWN:
        raise CorruptImageError(f"bogus i_mode {rec.i_mode:#o}", nid=nid, offset=off, area="inode")
    if isinstance(rec, InodeExtendedRec):
        core = INODE_EXTENDED.size
        nlink, mtime, nsec = rec.i_nlink, rec.i_mtime, rec.i_mtime_nsec
    else:
        core = INODE_COMPACT.size
        # Portable rule: every compact inode carries the build time (see format doc §6.3).
        nlink, mtime, nsec = rec.i_nb, sb.epoch, sb.fixed_nsec
    if rec.i_size > _MAX_SIZE:
        raise CorruptImageError(f"negative i_size {rec.i_size:#x}", nid=nid, offset=off, area="inode")
    xsize = xattr_ibody_size(rec.i_xattr_icount)
    end = off + core + xsize
    major = minor = rdev = 0
    if ftype in _DEVICES:
        major, minor = decode_rdev(rec.i_u)
        rdev = _makedev(major, minor)
    return InodeInfo(
        nid, off, rec, _VERSIONS[fmt & 1], core, fmt, layout, rec.i_mode, ftype, nlink, rec.i_size,
        rec.i_uid, rec.i_gid, mtime, nsec, rec.i_u, rec.i_ino, rec.i_xattr_icount, off + core, xsize,
        end, rdev, major, minor, *_layout_fields(sb, nid, layout, rec.i_u, rec.i_size, end),
    )  # fmt: skip


def _makedev(major: int, minor: int) -> int:
    # os.makedev's layout, computed here so absurd values cannot raise.
    return (
        ((major & 0xFFFFF000) << 32) | ((major & 0xFFF) << 8) | ((minor & 0xFFFFFF00) << 12) | (minor & 0xFF)
    )


_NO_LAYOUT_FIELDS = (None, None, 0, None, None, 0, 0, None, None, 0)


def _layout_fields(
    sb: SuperblockInfo, nid: int, layout: DataLayout, i_u: int, size: int, end: int
) -> tuple[Any, ...]:
    """startblk .. compressed_blocks of InodeInfo, in field order."""
    bs = sb.block_size
    if layout == DataLayout.FLAT_PLAIN or (layout == DataLayout.FLAT_INLINE and not size):
        return (i_u, *_NO_LAYOUT_FIELDS[1:])
    if layout == DataLayout.FLAT_INLINE:
        tail = size - (-(-size // bs) - 1) * bs
        return (i_u, end, tail, *_NO_LAYOUT_FIELDS[3:])
    if layout == DataLayout.CHUNK_BASED:
        cfmt = i_u & 0xFFFF
        if cfmt & ~int(CHUNK_FORMAT_ALL):
            raise UnsupportedFeatureError(f"nid {nid}: unsupported chunk format {cfmt:#x}")
        bits = sb.blkszbits + (cfmt & ChunkFormat.BLKBITS_MASK)
        chunks = (cfmt, bits, -(-size >> bits), chunk_entry_size(cfmt), chunk_array_offset(end, cfmt))
        return (None, None, 0, *chunks, None, 0)
    return (*_NO_LAYOUT_FIELDS[:8], map_header_offset(end), i_u)


def is_null_addr(blkaddr: int | None) -> bool:
    """Whether a 32-bit block address is the NULL (no block) marker."""
    return blkaddr == EROFS_NULL_ADDR


def st_blocks(info: InodeInfo, blkszbits: int) -> int:
    """st_blocks (512-byte units) the kernel reports for this inode."""
    if info.compressed:
        return info.compressed_blocks << (blkszbits - 9)
    return -(-info.size >> blkszbits) << (blkszbits - 9)


@dataclass(frozen=True)
class Stat:
    """What stat(2) on the mounted image reports for an inode, plus EROFS details."""

    nid: int
    ino: int  # the kernel reports the NID as st_ino
    mode: int  # full st_mode
    type: FileType
    uid: int
    gid: int
    size: int
    mtime: int  # seconds
    mtime_ns: int  # total nanoseconds
    nlink: int
    rdev: int  # os.makedev form
    major: int
    minor: int
    blocks: int  # st_blocks, 512-byte units
    blksize: int
    layout: DataLayout
    inode_version: InodeVersion
    xattr_count: int  # shared ids + inline entries with a known prefix
    i_ino: int  # the on-disk i_ino (used by userspace tools, not the kernel)

    @property
    def permissions(self) -> int:
        """The permission bits including setuid/setgid/sticky (stat.S_IMODE)."""
        return stat.S_IMODE(self.mode)


def make_stat(info: InodeInfo, sb: SuperblockInfo, xattr_count: int) -> Stat:
    """A Stat for a decoded inode."""
    return Stat(
        nid=info.nid,
        ino=info.nid,
        mode=info.mode,
        type=info.file_type,
        uid=info.uid,
        gid=info.gid,
        size=info.size,
        mtime=info.mtime,
        mtime_ns=info.mtime_ns,
        nlink=info.nlink,
        rdev=info.rdev,
        major=info.major,
        minor=info.minor,
        blocks=st_blocks(info, sb.blkszbits),
        blksize=sb.block_size,
        layout=info.layout,
        inode_version=info.version,
        xattr_count=xattr_count,
        i_ino=info.i_ino,
    )
