"""Constants and enumerations of the EROFS on-disk format (names follow the kernel's erofs_fs.h)."""

from __future__ import annotations

from enum import IntEnum, IntFlag

EROFS_SUPER_MAGIC_V1 = 0xE0F5E1E2
EROFS_SUPER_OFFSET = 1024
EROFS_ISLOTBITS = 5  # inodes sit on 32-byte slots: nid = offset >> 5
EROFS_INODE_SLOT_SIZE = 1 << EROFS_ISLOTBITS
EROFS_NULL_ADDR = 0xFFFFFFFF  # "no block": inline-only files, holes in chunk maps
EROFS_NAME_LEN = 255
EROFS_PATH_MAX = 4096  # symlink targets are at most PATH_MAX - 1 bytes
EROFS_MIN_BLKSZBITS = 9
EROFS_MAX_BLKSZBITS = 12  # PAGE_SHIFT on the machines the kernel mounts us on
EROFS_DEVT_SLOT_SIZE = 128
EROFS_SB_BASE_SIZE = 128
EROFS_SB_EXTSLOT_SIZE = 16

# Xattr limits the kernel's VFS layer enforces (include/uapi/linux/limits.h).
XATTR_NAME_MAX = 255
XATTR_SIZE_MAX = 65536
XATTR_LIST_MAX = 65536

# Compression limits (fs/erofs/internal.h).
Z_EROFS_PCLUSTER_MAX_SIZE = 1024 * 1024
Z_EROFS_PCLUSTER_MAX_DSIZE = 12 * 1024 * 1024
Z_EROFS_LI_D0_CBLKCNT = 1 << 11  # delta[0] flag: the value is a pcluster block count
Z_EROFS_LI_PARTIAL_REF = 1 << 15  # di_advise flag (dedupe)
Z_EROFS_FRAGMENT_INODE_BIT = 7  # h_clusterbits bit: the whole file is a fragment

# The bloom filter's hash seed; bit = xxh32(name suffix, seed + short index) & 31.
EROFS_XATTR_FILTER_SEED = 0x25BBE08F
EROFS_XATTR_FILTER_BITS = 32
EROFS_XATTR_LONG_PREFIX = 0x80  # e_name_index bit: a long prefix id follows in the low 7 bits
EROFS_XATTR_LONG_PREFIX_MASK = 0x7F


class FeatureCompat(IntFlag):
    """superblock.feature_compat: readers may ignore bits they do not know."""

    SB_CHKSUM = 0x01
    MTIME = 0x02
    XATTR_FILTER = 0x04
    SHARED_EA_IN_METABOX = 0x08
    PLAIN_XATTR_PFX = 0x10
    ISHARE_XATTRS = 0x20


class FeatureIncompat(IntFlag):
    """superblock.feature_incompat: a reader must refuse bits it does not know."""

    ZERO_PADDING = 0x001  # alias LZ4_0PADDING
    COMPR_CFGS = 0x002  # alias BIG_PCLUSTER
    CHUNKED_FILE = 0x004
    DEVICE_TABLE = 0x008  # alias COMPR_HEAD2
    ZTAILPACKING = 0x010
    FRAGMENTS = 0x020  # alias DEDUPE
    XATTR_PREFIXES = 0x040
    BIT48 = 0x080
    METABOX = 0x100

    # Aliases share the bit: the format reuses them for two meanings.
    LZ4_0PADDING = 0x001
    BIG_PCLUSTER = 0x002
    COMPR_HEAD2 = 0x008
    DEDUPE = 0x020


# What this reader understands; 48BIT/METABOX images are refused by name.
SUPPORTED_INCOMPAT = (
    FeatureIncompat.ZERO_PADDING
    | FeatureIncompat.FRAGMENTS
    | FeatureIncompat.COMPR_CFGS
    | FeatureIncompat.CHUNKED_FILE
    | FeatureIncompat.DEVICE_TABLE
    | FeatureIncompat.ZTAILPACKING
    | FeatureIncompat.XATTR_PREFIXES
)


class DataLayout(IntEnum):
    """i_format bits 1..3."""

    FLAT_PLAIN = 0
    COMPRESSED_FULL = 1
    FLAT_INLINE = 2
    COMPRESSED_COMPACT = 3
    CHUNK_BASED = 4


class InodeVersion(IntEnum):
    """i_format bit 0: the inode core's size."""

    COMPACT = 0  # 32 bytes
    EXTENDED = 1  # 64 bytes


class FileType(IntEnum):
    """dirent.file_type (the kernel's EROFS_FT_*)."""

    UNKNOWN = 0
    REG_FILE = 1
    DIR = 2
    CHRDEV = 3
    BLKDEV = 4
    FIFO = 5
    SOCK = 6
    SYMLINK = 7


class XattrIndex(IntEnum):
    """e_name_index values for the built-in (short) name prefixes."""

    USER = 1
    POSIX_ACL_ACCESS = 2
    POSIX_ACL_DEFAULT = 3
    TRUSTED = 4
    LUSTRE = 5
    SECURITY = 6


XATTR_PREFIXES: dict[XattrIndex, bytes] = {
    XattrIndex.USER: b"user.",
    XattrIndex.POSIX_ACL_ACCESS: b"system.posix_acl_access",
    XattrIndex.POSIX_ACL_DEFAULT: b"system.posix_acl_default",
    XattrIndex.TRUSTED: b"trusted.",
    XattrIndex.LUSTRE: b"lustre.",
    XattrIndex.SECURITY: b"security.",
}


class CompressionAlgorithm(IntEnum):
    """Algorithm ids (h_algorithmtype nibbles, available_compr_algs bits)."""

    LZ4 = 0
    LZMA = 1
    DEFLATE = 2
    ZSTD = 3


class LclusterType(IntEnum):
    """The 2-bit type of a logical-cluster index entry."""

    PLAIN = 0
    HEAD1 = 1
    NONHEAD = 2
    HEAD2 = 3


class MapAdvise(IntFlag):
    """z_erofs_map_header.h_advise."""

    COMPACTED_2B = 0x0001
    BIG_PCLUSTER_1 = 0x0002
    BIG_PCLUSTER_2 = 0x0004
    INLINE_PCLUSTER = 0x0008
    INTERLACED_PCLUSTER = 0x0010
    FRAGMENT_PCLUSTER = 0x0020


class ChunkFormat(IntFlag):
    """i_u.c.format of a CHUNK_BASED inode; the low 5 bits are chunkbits - blkszbits."""

    BLKBITS_MASK = 0x001F
    INDEXES = 0x0020
    BIT48 = 0x0040


CHUNK_FORMAT_ALL = ChunkFormat.BLKBITS_MASK | ChunkFormat.INDEXES
