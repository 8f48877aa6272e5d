"""Compact (32-byte) and extended (64-byte) inode cores, i_format and rdev helpers."""

from __future__ import annotations

from typing import NamedTuple

import construct as cs

from .codec import FixedCodec
from .constants import DataLayout, InodeVersion

# struct erofs_inode_compact. i_u: startblk_lo (flat), blocks_lo (compressed),
# chunk format (chunk-based), rdev (devices).
InodeCompact = cs.Struct(
    "i_format" / cs.Int16ul,
    "i_xattr_icount" / cs.Int16ul,
    "i_mode" / cs.Int16ul,
    "i_nb" / cs.Int16ul,  # nlink
    "i_size" / cs.Int32ul,
    "i_mtime" / cs.Int32ul,  # 6.15+: seconds after sb.epoch; we write 0
    "i_u" / cs.Int32ul,
    "i_ino" / cs.Int32ul,
    "i_uid" / cs.Int16ul,
    "i_gid" / cs.Int16ul,
    "i_reserved" / cs.Bytes(4),
)

# struct erofs_inode_extended
InodeExtended = cs.Struct(
    "i_format" / cs.Int16ul,
    "i_xattr_icount" / cs.Int16ul,
    "i_mode" / cs.Int16ul,
    "i_nb" / cs.Int16ul,  # reserved before 48BIT; write 0
    "i_size" / cs.Int64ul,
    "i_u" / cs.Int32ul,
    "i_ino" / cs.Int32ul,
    "i_uid" / cs.Int32ul,
    "i_gid" / cs.Int32ul,
    "i_mtime" / cs.Int64sl,
    "i_mtime_nsec" / cs.Int32ul,
    "i_nlink" / cs.Int32ul,
    "i_reserved2" / cs.Bytes(16),
)


class InodeCompactRec(NamedTuple):
    i_format: int
    i_xattr_icount: int
    i_mode: int
    i_nb: int
    i_size: int
    i_mtime: int
    i_u: int
    i_ino: int
    i_uid: int
    i_gid: int
    i_reserved: bytes


class InodeExtendedRec(NamedTuple):
    i_format: int
    i_xattr_icount: int
    i_mode: int
    i_nb: int
    i_size: int
    i_u: int
    i_ino: int
    i_uid: int
    i_gid: int
    i_mtime: int
    i_mtime_nsec: int
    i_nlink: int
    i_reserved2: bytes


INODE_COMPACT = FixedCodec(InodeCompact, InodeCompactRec)
INODE_EXTENDED = FixedCodec(InodeExtended, InodeExtendedRec)
INODE_CORE_SIZE = {InodeVersion.COMPACT: INODE_COMPACT.size, InodeVersion.EXTENDED: INODE_EXTENDED.size}

I_FORMAT_VERSION_MASK = 0x1
I_FORMAT_LAYOUT_SHIFT = 1
I_FORMAT_LAYOUT_MASK = 0x7
I_FORMAT_KNOWN_BITS = 0xF  # bit 4 (NLINK_1 / DOT_OMITTED) is 48BIT-era; refused here


def i_format(version: InodeVersion, layout: DataLayout) -> int:
    return int(version) | (int(layout) << I_FORMAT_LAYOUT_SHIFT)


def i_format_version(fmt: int) -> int:
    return fmt & I_FORMAT_VERSION_MASK


def i_format_layout(fmt: int) -> int:
    return (fmt >> I_FORMAT_LAYOUT_SHIFT) & I_FORMAT_LAYOUT_MASK


def xattr_ibody_size(i_xattr_icount: int) -> int:
    """Bytes of inline xattr body after the core: 0, or 12 + 4 * (icount - 1)."""
    return 0 if i_xattr_icount == 0 else 12 + 4 * (i_xattr_icount - 1)


def xattr_icount(body_size: int) -> int:
    """Inverse of xattr_ibody_size for a body of 12 + 4k bytes (or none)."""
    return 0 if body_size == 0 else (body_size - 12) // 4 + 1


def encode_rdev(major: int, minor: int) -> int:
    """Linux's new_encode_dev: the 32-bit rdev stored in i_u."""
    return (minor & 0xFF) | (major << 8) | ((minor & ~0xFF) << 12)


def decode_rdev(value: int) -> tuple[int, int]:
    """(major, minor) from new_encode_dev's 32-bit form."""
    major = (value & 0xFFF00) >> 8
    minor = (value & 0xFF) | ((value >> 12) & 0xFFF00)
    return major, minor
