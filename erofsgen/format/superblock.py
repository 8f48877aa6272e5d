"""The superblock at byte 1024, and its CRC32C checksum."""

from __future__ import annotations

from typing import NamedTuple

import construct as cs

from .codec import FixedCodec
from .constants import EROFS_SUPER_MAGIC_V1, EROFS_SUPER_OFFSET

# struct erofs_super_block (128 bytes; sb_extslots adds 16-byte slots after it).
SuperBlock = cs.Struct(
    "magic" / cs.Const(EROFS_SUPER_MAGIC_V1, cs.Int32ul),
    "checksum" / cs.Int32ul,  # crc32c over the rest of block 0 (see sb_checksum)
    "feature_compat" / cs.Int32ul,
    "blkszbits" / cs.Int8ul,
    "sb_extslots" / cs.Int8ul,
    "root_nid" / cs.Int16ul,
    "inos" / cs.Int64ul,
    "epoch" / cs.Int64ul,  # build time: the mtime of every compact inode
    "fixed_nsec" / cs.Int32ul,
    "blocks" / cs.Int32ul,
    "meta_blkaddr" / cs.Int32ul,
    "xattr_blkaddr" / cs.Int32ul,
    "uuid" / cs.Bytes(16),
    "volume_name" / cs.Bytes(16),
    "feature_incompat" / cs.Int32ul,
    "u1" / cs.Int16ul,  # available_compr_algs with COMPR_CFGS, else lz4_max_distance
    "extra_devices" / cs.Int16ul,
    "devt_slotoff" / cs.Int16ul,  # device table at devt_slotoff * 128
    "dirblkbits" / cs.Int8ul,  # must be 0
    "xattr_prefix_count" / cs.Int8ul,
    "xattr_prefix_start" / cs.Int32ul,  # long-prefix table at xattr_prefix_start * 4
    "packed_nid" / cs.Int64ul,
    "xattr_filter_reserved" / cs.Int8ul,
    "ishare_xattr_prefix_id" / cs.Int8ul,
    "reserved" / cs.Bytes(2),
    "build_time" / cs.Int32ul,
    "rootnid_8b" / cs.Int64ul,
    "reserved2" / cs.Bytes(8),
)


class SuperBlockRec(NamedTuple):
    magic: int
    checksum: int
    feature_compat: int
    blkszbits: int
    sb_extslots: int
    root_nid: int
    inos: int
    epoch: int
    fixed_nsec: int
    blocks: int
    meta_blkaddr: int
    xattr_blkaddr: int
    uuid: bytes
    volume_name: bytes
    feature_incompat: int
    u1: int
    extra_devices: int
    devt_slotoff: int
    dirblkbits: int
    xattr_prefix_count: int
    xattr_prefix_start: int
    packed_nid: int
    xattr_filter_reserved: int
    ishare_xattr_prefix_id: int
    reserved: bytes
    build_time: int
    rootnid_8b: int
    reserved2: bytes


SUPERBLOCK = FixedCodec(SuperBlock, SuperBlockRec)
CHECKSUM_OFFSET = EROFS_SUPER_OFFSET + 4  # absolute offset of the checksum field


def _crc32c_table() -> tuple[int, ...]:
    table = []
    for n in range(256):
        c = n
        for _ in range(8):
            c = (c >> 1) ^ 0x82F63B78 if c & 1 else c >> 1
        table.append(c)
    return tuple(table)


_CRC32C_TABLE = _crc32c_table()


def crc32c_raw(data: bytes | bytearray | memoryview, crc: int = 0xFFFFFFFF) -> int:
    """CRC-32C register after `data`, without the final inversion (what EROFS stores)."""
    table = _CRC32C_TABLE
    for b in bytes(data):
        crc = table[(crc ^ b) & 0xFF] ^ (crc >> 8)
    return crc


def checksum_length(blksz: int) -> int:
    """How many bytes from offset 1024 the checksum covers: the rest of block 0."""
    return blksz - EROFS_SUPER_OFFSET if blksz > EROFS_SUPER_OFFSET else blksz


def sb_checksum(block0: bytes | bytearray | memoryview, blksz: int) -> int:
    """The checksum of an image's first block, with the checksum field taken as zero."""
    length = checksum_length(blksz)
    end = EROFS_SUPER_OFFSET + length
    if len(block0) < end:
        raise ValueError(f"need {end} bytes of the image to checksum, have {len(block0)}")
    head = bytes(block0[EROFS_SUPER_OFFSET:CHECKSUM_OFFSET]) + b"\0\0\0\0"
    return crc32c_raw(bytes(block0[CHECKSUM_OFFSET + 4 : end]), crc32c_raw(head))


def sb_size(sb_extslots: int) -> int:
    return 128 + 16 * sb_extslots


def volume_label(raw: bytes) -> str:
    """The NUL-terminated label as text (undecodable bytes escaped)."""
    return raw.split(b"\0", 1)[0].decode("utf-8", "surrogateescape")
