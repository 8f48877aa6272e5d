"""Tests of erofsgen.format: every fixed-size schema against its struct codec, the variable
schemas against their packers, CRC32C, xxh32 and the bloom filter, rdev, xattr names, compacted
index geometry and packs, the conformance vectors in specs/vectors/, and images made by
mkfs.erofs (skipped when it is not installed)."""

from __future__ import annotations

import os
import random
import re
import shutil
import stat
import struct
import subprocess
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, NamedTuple

import construct as cs
import lz4.block
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from erofsgen.errors import CorruptImageError
from erofsgen.format.chunk import (
    CHUNK_BLOCK_MAP_ENTRY,
    CHUNK_INDEX,
    ChunkBlockMapEntry,
    ChunkIndex,
    chunk_array_offset,
    chunk_entry_size,
    chunk_format,
)
from erofsgen.format.codec import FixedCodec
from erofsgen.format.constants import (
    EROFS_SUPER_MAGIC_V1,
    DataLayout,
    FileType,
    InodeVersion,
    LclusterType,
    MapAdvise,
    XattrIndex,
)
from erofsgen.format.device import DEVICE_SLOT, DeviceSlot, device_id_mask
from erofsgen.format.dirent import DIRENT, Dirent, file_type_of_mode, pack_dirent_block
from erofsgen.format.inode import (
    I_FORMAT_KNOWN_BITS,
    INODE_COMPACT,
    INODE_CORE_SIZE,
    INODE_EXTENDED,
    InodeCompact,
    InodeExtended,
    decode_rdev,
    encode_rdev,
    i_format,
    i_format_layout,
    i_format_version,
    xattr_ibody_size,
    xattr_icount,
)
from erofsgen.format.superblock import (
    SUPERBLOCK,
    SuperBlock,
    checksum_length,
    crc32c_raw,
    sb_checksum,
    sb_size,
    volume_label,
)
from erofsgen.format.xattr import (
    XATTR_ENTRY_HEADER,
    XATTR_IBODY_HEADER,
    XattrEntry,
    XattrEntryHeader,
    XattrIbodyHeader,
    XattrLongPrefix,
    pack_long_prefix,
    pack_xattr_entry,
    split_xattr_name,
    xattr_entry_size,
    xattr_filter_bit,
    xattr_name_filter,
    xxh32,
)
from erofsgen.format.zmap import (
    LCLUSTER_INDEX,
    LCLUSTER_TYPE_MASK,
    MAP_HEADER,
    LclusterIndex,
    MapHeader,
    algorithm_nibbles,
    compact_entry_position,
    compact_index_offset,
    compact_index_size,
    compact_layout,
    decode_compacted_bits,
    encode_compacted_pack,
    full_index_offset,
    lclusterbits_of,
    lobits,
    map_header_offset,
    pack_geometry,
)

U32 = st.integers(0, 0xFFFFFFFF)
MAGIC_BYTES = EROFS_SUPER_MAGIC_V1.to_bytes(4, "little")
NONHEAD = LclusterType.NONHEAD

# ------------------------------------------------------------------------------------------------
# Fixed-size schemas: sizes, field offsets (as in the kernel's erofs_fs.h), codec == construct


class Fixed(NamedTuple):
    schema: Any
    codec: FixedCodec[Any]
    size: int
    offsets: dict[str, int]


FIXED: dict[str, Fixed] = {
    "SuperBlock": Fixed(
        SuperBlock,
        SUPERBLOCK,
        128,
        {
            "magic": 0,
            "checksum": 4,
            "feature_compat": 8,
            "blkszbits": 12,
            "sb_extslots": 13,
            "root_nid": 14,
            "inos": 16,
            "epoch": 24,
            "fixed_nsec": 32,
            "blocks": 36,
            "meta_blkaddr": 40,
            "xattr_blkaddr": 44,
            "uuid": 48,
            "volume_name": 64,
            "feature_incompat": 80,
            "u1": 84,
            "extra_devices": 86,
            "devt_slotoff": 88,
            "dirblkbits": 90,
            "xattr_prefix_count": 91,
            "xattr_prefix_start": 92,
            "packed_nid": 96,
            "xattr_filter_reserved": 104,
            "ishare_xattr_prefix_id": 105,
            "reserved": 106,
            "build_time": 108,
            "rootnid_8b": 112,
            "reserved2": 120,
        },
    ),
    "DeviceSlot": Fixed(
        DeviceSlot,
        DEVICE_SLOT,
        128,
        {"tag": 0, "blocks_lo": 64, "uniaddr_lo": 68, "blocks_hi": 72, "uniaddr_hi": 74, "reserved": 76},
    ),
    "InodeCompact": Fixed(
        InodeCompact,
        INODE_COMPACT,
        32,
        {
            "i_format": 0,
            "i_xattr_icount": 2,
            "i_mode": 4,
            "i_nb": 6,
            "i_size": 8,
            "i_mtime": 12,
            "i_u": 16,
            "i_ino": 20,
            "i_uid": 24,
            "i_gid": 26,
            "i_reserved": 28,
        },
    ),
    "InodeExtended": Fixed(
        InodeExtended,
        INODE_EXTENDED,
        64,
        {
            "i_format": 0,
            "i_xattr_icount": 2,
            "i_mode": 4,
            "i_nb": 6,
            "i_size": 8,
            "i_u": 16,
            "i_ino": 20,
            "i_uid": 24,
            "i_gid": 28,
            "i_mtime": 32,
            "i_mtime_nsec": 40,
            "i_nlink": 44,
            "i_reserved2": 48,
        },
    ),
    "Dirent": Fixed(Dirent, DIRENT, 12, {"nid": 0, "nameoff": 8, "file_type": 10, "reserved": 11}),
    "XattrIbodyHeader": Fixed(
        XattrIbodyHeader, XATTR_IBODY_HEADER, 12, {"h_name_filter": 0, "h_shared_count": 4, "h_reserved2": 5}
    ),
    "XattrEntryHeader": Fixed(
        XattrEntryHeader, XATTR_ENTRY_HEADER, 4, {"e_name_len": 0, "e_name_index": 1, "e_value_size": 2}
    ),
    "ChunkBlockMapEntry": Fixed(ChunkBlockMapEntry, CHUNK_BLOCK_MAP_ENTRY, 4, {"blkaddr": 0}),
    "ChunkIndex": Fixed(ChunkIndex, CHUNK_INDEX, 8, {"startblk_hi": 0, "device_id": 2, "startblk_lo": 4}),
    "MapHeader": Fixed(
        MapHeader,
        MAP_HEADER,
        8,
        {"h_reserved1": 0, "h_idata_size": 2, "h_advise": 4, "h_algorithmtype": 6, "h_clusterbits": 7},
    ),
    "LclusterIndex": Fixed(LclusterIndex, LCLUSTER_INDEX, 8, {"di_advise": 0, "di_clusterofs": 2, "di_u": 4}),
}


def _field_strategy(sub: Any) -> st.SearchStrategy[Any]:
    """Any value the construct field accepts."""
    if isinstance(sub, cs.Const):
        return st.just(sub.value)
    if isinstance(sub, cs.FormatField):
        bits = struct.calcsize(sub.fmtstr) * 8
        if sub.fmtstr[1].islower():
            return st.integers(-(1 << (bits - 1)), (1 << (bits - 1)) - 1)
        return st.integers(0, (1 << bits) - 1)
    if isinstance(sub, cs.Bytes):
        return st.binary(min_size=sub.length, max_size=sub.length)
    raise TypeError(f"no strategy for {sub!r}")


def _record_strategy(schema: Any) -> st.SearchStrategy[dict[str, Any]]:
    return st.fixed_dictionaries({sub.name: _field_strategy(sub.subcon) for sub in schema.subcons})


def _parsed_fields(container: Any) -> dict[str, Any]:
    return {k: v for k, v in container.items() if not k.startswith("_")}


@pytest.mark.parametrize("name", FIXED)
def test_fixed_schema_size_and_offsets(name: str) -> None:
    fixed = FIXED[name]
    assert fixed.schema.sizeof() == fixed.size
    assert fixed.codec.size == fixed.size
    offsets: dict[str, int] = {}
    pos = 0
    for sub in fixed.schema.subcons:
        offsets[sub.name] = pos
        pos += sub.sizeof()
    assert offsets == fixed.offsets
    assert list(fixed.codec.record._fields) == list(fixed.offsets)


@pytest.mark.parametrize("name", FIXED)
@given(data=st.data())
def test_codec_pack_equals_schema_build(name: str, data: st.DataObject) -> None:
    fixed = FIXED[name]
    fields = data.draw(_record_strategy(fixed.schema))
    packed = fixed.codec.pack(fixed.codec.record(**fields))
    assert packed == fixed.schema.build(fields)
    assert len(packed) == fixed.size


def _random_record_bytes(data: st.DataObject, name: str) -> bytes:
    raw = data.draw(st.binary(min_size=FIXED[name].size, max_size=FIXED[name].size))
    if name == "SuperBlock":
        raw = MAGIC_BYTES + raw[4:]
    return raw


@pytest.mark.parametrize("name", FIXED)
@given(data=st.data())
def test_codec_unpack_equals_schema_parse(name: str, data: st.DataObject) -> None:
    fixed = FIXED[name]
    raw = _random_record_bytes(data, name)
    rec = fixed.codec.unpack(raw)
    assert rec._asdict() == _parsed_fields(fixed.schema.parse(raw))
    assert fixed.codec.pack(rec) == raw
    prefix = data.draw(st.binary(max_size=40))
    assert fixed.codec.unpack(prefix + raw + b"tail", len(prefix)) == rec


@pytest.mark.parametrize("name", FIXED)
def test_codec_unpack_truncated_is_corrupt(name: str) -> None:
    fixed = FIXED[name]
    with pytest.raises(CorruptImageError, match="truncated"):
        fixed.codec.unpack(bytes(fixed.size - 1))
    with pytest.raises(CorruptImageError):
        fixed.codec.unpack(bytes(fixed.size), 1)


def test_superblock_schema_refuses_a_wrong_magic() -> None:
    with pytest.raises(cs.ConstError):
        SuperBlock.parse(bytes(128))


def test_fixed_codec_refuses_schemas_it_cannot_mirror() -> None:
    class Wrong(NamedTuple):
        b: int

    class Ab(NamedTuple):
        a: int
        b: bytes

    with pytest.raises(TypeError, match="fields"):
        FixedCodec(cs.Struct("a" / cs.Int32ul), Wrong)
    with pytest.raises(TypeError, match="little-endian"):
        FixedCodec(cs.Struct("a" / cs.Int32ub), Wrong)
    with pytest.raises(TypeError, match="cannot derive"):
        FixedCodec(cs.Struct("a" / cs.Int8ul, "b" / cs.Bytes(cs.this.a)), Ab)


# ------------------------------------------------------------------------------------------------
# Variable-size xattr schemas


@given(
    index=st.integers(0, 255),
    suffix=st.binary(max_size=255),
    value=st.binary(max_size=700),
)
def test_pack_xattr_entry_equals_schema(index: int, suffix: bytes, value: bytes) -> None:
    packed = pack_xattr_entry(index, suffix, value)
    fields = {
        "e_name_len": len(suffix),
        "e_name_index": index,
        "e_value_size": len(value),
        "e_name": suffix,
        "e_value": value,
    }
    assert packed == XattrEntry.build(fields)
    assert len(packed) == xattr_entry_size(len(suffix), len(value))
    assert len(packed) % 4 == 0 and len(packed) - (4 + len(suffix) + len(value)) < 4
    assert _parsed_fields(XattrEntry.parse(packed)) == fields
    head = XATTR_ENTRY_HEADER.unpack(packed)
    assert (head.e_name_len, head.e_name_index, head.e_value_size) == (len(suffix), index, len(value))


def test_xattr_entry_doc_example() -> None:
    expect = bytes.fromhex("03 01 03 00 66 6f 6f 62 61 72 00 00")
    assert pack_xattr_entry(XattrIndex.USER, b"foo", b"bar") == expect
    fields = {"e_name_len": 3, "e_name_index": 1, "e_value_size": 3, "e_name": b"foo", "e_value": b"bar"}
    assert XattrEntry.build(fields) == expect


@given(base_index=st.integers(0, 255), infix=st.binary(max_size=255))
def test_pack_long_prefix_equals_schema(base_index: int, infix: bytes) -> None:
    packed = pack_long_prefix(base_index, infix)
    fields = {"size": 1 + len(infix), "base_index": base_index, "infix": infix}
    assert packed == XattrLongPrefix.build(fields)
    assert len(packed) % 4 == 0 and len(packed) - (3 + len(infix)) < 4
    assert _parsed_fields(XattrLongPrefix.parse(packed)) == fields


# ------------------------------------------------------------------------------------------------
# CRC32C and the superblock checksum


def _crc32c_bitwise(data: bytes) -> int:
    """The standard CRC-32C, one bit at a time (independent of the table in the code)."""
    c = 0xFFFFFFFF
    for b in data:
        c ^= b
        for _ in range(8):
            c = (c >> 1) ^ (0x82F63B78 if c & 1 else 0)
    return c ^ 0xFFFFFFFF


def test_crc32c_known_vectors() -> None:
    assert crc32c_raw(b"123456789") ^ 0xFFFFFFFF == 0xE3069283
    assert crc32c_raw(b"123456789") == 0xE3069283 ^ 0xFFFFFFFF
    assert crc32c_raw(b"") == 0xFFFFFFFF
    assert crc32c_raw(MAGIC_BYTES + bytes(4)) == 0x5045B54A


@given(a=st.binary(max_size=80), b=st.binary(max_size=80))
def test_crc32c_raw_is_the_uninverted_register(a: bytes, b: bytes) -> None:
    assert crc32c_raw(a) == _crc32c_bitwise(a) ^ 0xFFFFFFFF
    assert crc32c_raw(a + b) == crc32c_raw(b, crc32c_raw(a))
    assert crc32c_raw(bytearray(a)) == crc32c_raw(memoryview(a)) == crc32c_raw(a)


def test_checksum_length() -> None:
    assert checksum_length(4096) == 3072
    assert checksum_length(2048) == 1024
    assert checksum_length(1024) == 1024
    assert checksum_length(512) == 512


@given(seed=st.integers(0, 2**32), checksum=U32, extra=st.binary(max_size=16))
def test_sb_checksum_seed_form(seed: int, checksum: int, extra: bytes) -> None:
    """sb_checksum == crc32c_raw(seed=0x5045B54A, bytes[1032:4096]) whenever the magic is there;
    it ignores the stored checksum field, the boot area and bytes past the covered range."""
    block = bytearray(random.Random(seed).randbytes(4096))
    block[1024:1028] = MAGIC_BYTES
    crc = sb_checksum(block, 4096)
    assert crc == crc32c_raw(bytes(block[1032:4096]), 0x5045B54A)
    block[1028:1032] = checksum.to_bytes(4, "little")
    block[0:1024] = bytes(1024)
    assert sb_checksum(bytes(block) + extra, 4096) == crc
    block[4095] ^= 0x01
    assert sb_checksum(block, 4096) != crc


def test_sb_checksum_needs_the_whole_range() -> None:
    with pytest.raises(ValueError, match="need 4096 bytes"):
        sb_checksum(bytes(4095), 4096)


def test_superblock_small_helpers() -> None:
    assert sb_size(0) == 128
    assert sb_size(1) == 144
    assert volume_label(b"data\0\0garbage\0\0\0") == "data"
    assert volume_label(bytes(16)) == ""
    assert volume_label(b"\xff\xfelabel".ljust(16, b"\0")) == "\udcff\udcfelabel"


# ------------------------------------------------------------------------------------------------
# xxh32 and the xattr bloom filter


def test_xxh32_vectors() -> None:
    assert xxh32(b"") == 0x02CC5D05
    assert xxh32(b"abc") == 0x32D153FF
    assert xxh32(b"Nobody inspects the spammish repetition") == 0xE2293B2F  # >= 16 bytes: 4 lanes
    assert xxh32(b"xxhash", 20141025) == 0x67BB40DD


@pytest.mark.parametrize(
    ("name", "bit"),
    [
        (b"system.posix_acl_access", 30),
        (b"system.posix_acl_default", 21),
        (b"security.selinux", 11),
        (b"security.ima", 0),
    ],
)
def test_bloom_bits_from_the_format_notes(name: bytes, bit: int) -> None:
    split = split_xattr_name(name)
    assert split is not None
    assert xattr_filter_bit(*split) == bit


@given(names=st.lists(st.tuples(st.sampled_from(list(XattrIndex)), st.binary(max_size=40)), max_size=12))
def test_xattr_name_filter_clears_exactly_the_present_bits(names: list[tuple[int, bytes]]) -> None:
    flt = xattr_name_filter(names)
    bits = {xattr_filter_bit(index, suffix) for index, suffix in names}
    assert flt == 0xFFFFFFFF - sum(1 << b for b in bits)
    assert 0 <= flt <= 0xFFFFFFFF


# ------------------------------------------------------------------------------------------------
# Xattr names and body sizes


@pytest.mark.parametrize(
    ("name", "expect"),
    [
        (b"user.foo", (XattrIndex.USER, b"foo")),
        (b"user.", (XattrIndex.USER, b"")),
        (b"user.user.x", (XattrIndex.USER, b"user.x")),
        (b"trusted.overlay.opaque", (XattrIndex.TRUSTED, b"overlay.opaque")),
        (b"security.selinux", (XattrIndex.SECURITY, b"selinux")),
        (b"system.posix_acl_access", (XattrIndex.POSIX_ACL_ACCESS, b"")),
        (b"system.posix_acl_default", (XattrIndex.POSIX_ACL_DEFAULT, b"")),
        (b"system.posix_acl_accessX", None),
        (b"system.posix_acl", None),
        (b"system.sockprotoname", None),
        (b"lustre.lov", None),
        (b"User.foo", None),
        (b"userfoo", None),
        (b"user", None),
        (b"", None),
    ],
)
def test_split_xattr_name(name: bytes, expect: tuple[XattrIndex, bytes] | None) -> None:
    assert split_xattr_name(name) == expect


@given(name=st.binary(max_size=40))
def test_split_xattr_name_reassembles(name: bytes) -> None:
    split = split_xattr_name(name)
    if split is not None:
        from erofsgen.format.constants import XATTR_PREFIXES

        index, suffix = split
        assert XATTR_PREFIXES[index] + suffix == name


def test_xattr_ibody_size_known_values() -> None:
    assert [xattr_ibody_size(n) for n in range(5)] == [0, 12, 16, 20, 24]


@given(icount=st.integers(0, 0xFFFF))
def test_xattr_icount_inverts_xattr_ibody_size(icount: int) -> None:
    size = xattr_ibody_size(icount)
    assert xattr_icount(size) == icount
    if icount:
        assert size >= 12 and size % 4 == 0


# ------------------------------------------------------------------------------------------------
# Inodes: i_format, rdev


def test_i_format_helpers() -> None:
    assert i_format(InodeVersion.COMPACT, DataLayout.FLAT_PLAIN) == 0
    assert i_format(InodeVersion.EXTENDED, DataLayout.FLAT_INLINE) == 0x5
    assert i_format(InodeVersion.COMPACT, DataLayout.COMPRESSED_COMPACT) == 0x6
    assert i_format(InodeVersion.COMPACT, DataLayout.CHUNK_BASED) == 0x8
    assert i_format(InodeVersion.EXTENDED, DataLayout.CHUNK_BASED) == 0x9
    for version in InodeVersion:
        for layout in DataLayout:
            fmt = i_format(version, layout)
            assert i_format_version(fmt) == version
            assert i_format_layout(fmt) == layout
            assert fmt & ~I_FORMAT_KNOWN_BITS == 0
    assert INODE_CORE_SIZE == {InodeVersion.COMPACT: 32, InodeVersion.EXTENDED: 64}
    # bit 4 and above never alias the version or layout
    assert i_format_layout(0x10 | 0x6) == DataLayout.COMPRESSED_COMPACT
    assert i_format_version(0xFFFE) == InodeVersion.COMPACT


@given(major=st.integers(0, 4095), minor=st.integers(0, (1 << 20) - 1))
def test_rdev_round_trip_and_agrees_with_os(major: int, minor: int) -> None:
    value = encode_rdev(major, minor)
    assert 0 <= value <= 0xFFFFFFFF
    assert decode_rdev(value) == (major, minor)
    assert value == os.makedev(major, minor)
    assert (os.major(value), os.minor(value)) == (major, minor)


@given(value=U32)
def test_rdev_decode_encode_is_identity_on_u32(value: int) -> None:
    assert encode_rdev(*decode_rdev(value)) == value


# ------------------------------------------------------------------------------------------------
# Directories, chunks, devices, small zmap helpers


def test_file_type_of_mode() -> None:
    assert file_type_of_mode(stat.S_IFREG | 0o644) == FileType.REG_FILE
    assert file_type_of_mode(stat.S_IFDIR | 0o755) == FileType.DIR
    assert file_type_of_mode(stat.S_IFCHR) == FileType.CHRDEV
    assert file_type_of_mode(stat.S_IFBLK) == FileType.BLKDEV
    assert file_type_of_mode(stat.S_IFIFO) == FileType.FIFO
    assert file_type_of_mode(stat.S_IFSOCK) == FileType.SOCK
    assert file_type_of_mode(stat.S_IFLNK | 0o777) == FileType.SYMLINK
    assert file_type_of_mode(0o644) == FileType.UNKNOWN


def test_pack_dirent_block() -> None:
    entries = [(b".", 36, 2), (b"..", 36, 2), (b"a.txt", 40, 1), (b"link", 44, 7)]
    block = pack_dirent_block(entries, 4096)
    assert len(block) == 4096
    heads = [DIRENT.unpack(block, 12 * i) for i in range(4)]
    assert heads[0].nameoff == 48
    ends = [h.nameoff for h in heads[1:]] + [48 + sum(len(e[0]) for e in entries)]
    assert [block[h.nameoff : end] for h, end in zip(heads, ends, strict=True)] == [e[0] for e in entries]
    assert [(h.nid, h.file_type, h.reserved) for h in heads] == [(e[1], e[2], 0) for e in entries]
    assert block[ends[-1] :] == bytes(4096 - ends[-1])
    with pytest.raises(ValueError, match="overflow"):
        pack_dirent_block([(b"x" * 100, 1, 1)], 100)


def test_chunk_helpers() -> None:
    assert chunk_format(12, 12, indexes=False) == 0
    assert chunk_format(20, 12, indexes=True) == 0x28
    assert chunk_entry_size(0x08) == 4
    assert chunk_entry_size(0x28) == 8
    assert chunk_array_offset(1152 + 32, 0x28) == 1184
    assert chunk_array_offset(1152 + 32 + 12, 0x28) == 1200
    assert chunk_array_offset(1152 + 32 + 12, 0x08) == 1196
    assert chunk_array_offset(1152 + 32 + 14, 0x08) == 1200


@pytest.mark.parametrize(
    ("extra", "mask"), [(0, 0), (1, 1), (2, 3), (3, 3), (4, 7), (7, 7), (8, 15), (255, 255), (256, 511)]
)
def test_device_id_mask_table(extra: int, mask: int) -> None:
    assert device_id_mask(extra) == mask


@given(extra=st.integers(0, 0xFFFF))
def test_device_id_mask_keeps_every_valid_id(extra: int) -> None:
    mask = device_id_mask(extra)
    assert mask & (mask + 1) == 0  # all ones
    assert extra <= mask < 2 * (extra + 1)
    assert all(dev & mask == dev for dev in (0, extra))


def test_zmap_small_helpers() -> None:
    assert map_header_offset(1184) == 1184
    assert map_header_offset(1188) == 1192
    assert full_index_offset(1188) == 1192 + 16
    assert compact_index_offset(1188) == 1192 + 8
    assert algorithm_nibbles(0x31) == (1, 3)
    assert lclusterbits_of(0x00, 12) == 12
    assert lclusterbits_of(0x82, 12) == 14
    assert lobits(12) == 12
    assert lobits(9) == 12
    assert lobits(14) == 14
    assert pack_geometry(4, 12) == (2, 8, 16)
    assert pack_geometry(2, 12) == (16, 32, 14)


# ------------------------------------------------------------------------------------------------
# Compacted indexes: pack encoding and geometry


def _pack_by_bits(entries: list[tuple[int, int]], base: int, unit: int, nbits: int) -> bytes:
    """A pack built bit by bit (LSB first), independent of the encoder's integer arithmetic."""
    _, pack_bytes, encodebits = (2, 8, 16) if unit == 4 else (16, 32, 14)
    bits = [0] * ((pack_bytes - 4) * 8)
    for i, (ltype, value) in enumerate(entries):
        v = (ltype << nbits) | value
        for b in range(nbits + 2):
            bits[i * encodebits + b] = (v >> b) & 1
    body = bytes(sum(bits[8 * k + j] << j for j in range(8)) for k in range(len(bits) // 8))
    return body + base.to_bytes(4, "little")


@given(data=st.data(), unit=st.sampled_from([4, 2]))
def test_compacted_pack_round_trip(data: st.DataObject, unit: int) -> None:
    lclusterbits = 12 if unit == 2 else data.draw(st.integers(12, 14))
    vcnt, pack_bytes, encodebits = pack_geometry(unit, lclusterbits)
    nbits = lobits(lclusterbits)
    entry = st.tuples(st.integers(0, 3), st.integers(0, (1 << nbits) - 1))
    entries = data.draw(st.lists(entry, max_size=vcnt))
    base = data.draw(U32)
    pack = encode_compacted_pack(entries, base, unit, lclusterbits)
    assert len(pack) == pack_bytes
    assert pack == _pack_by_bits(entries, base, unit, nbits)
    assert int.from_bytes(pack[-4:], "little") == base
    padded = entries + [(0, 0)] * (vcnt - len(entries))
    assert [decode_compacted_bits(pack, i * encodebits, nbits) for i in range(vcnt)] == padded


def test_compacted_pack_refuses_too_many_entries() -> None:
    with pytest.raises(ValueError, match="too many"):
        encode_compacted_pack([(1, 0)] * 3, 0, 4, 12)


def _writer_packs(inode_end: int, total: int, two_b: bool) -> tuple[list[tuple[int, int, int]], int]:
    """Per lcluster (pack start, slot, pack bytes), and the area size, laid out the way
    erofs-utils' z_erofs_convert_to_compacted_format writes them: leading 4B packs up to a 32-byte
    boundary, 2B packs of 16, trailing 4B packs; a short final pack is padded."""
    mpos = (inode_end + 7) // 8 * 8 + 8
    if two_b:
        init = (32 - mpos % 32) // 4
        if init == 8:
            init = 0
        if init > total:
            init, n2, end = 0, 0, total
        else:
            n2 = (total - init) // 16 * 16
            end = total - init - n2
    else:
        init, n2, end = 0, 0, total
    where: list[tuple[int, int, int]] = []
    off = mpos
    for count, vcnt, pack_bytes in ((init, 2, 8), (n2, 16, 32), (end, 2, 8)):
        for first in range(0, count, vcnt):
            where.extend((off, slot, pack_bytes) for slot in range(min(vcnt, count - first)))
            off += pack_bytes
    return where, off - mpos


def _kernel_slot(layout: Any, lcn: int) -> tuple[int, int, int]:
    """(pack start, slot, pack bytes) as the kernel derives them from the entry position."""
    pos, unit = compact_entry_position(layout, lcn)
    _, pack_bytes, _ = pack_geometry(unit, 12)
    start = pos // pack_bytes * pack_bytes
    return start, (pos - start) // unit, pack_bytes


@given(inode_end=st.integers(256, 2048).map(lambda n: n * 4), total=st.integers(0, 200), two_b=st.booleans())
def test_compact_layout_matches_the_writer(inode_end: int, total: int, two_b: bool) -> None:
    layout = compact_layout(inode_end, total, two_b)
    assert layout.ebase == (inode_end + 7) // 8 * 8 + 8
    assert layout.initial_4b == ((32 - layout.ebase % 32) // 4) & 7
    if layout.compacted_2b:
        assert two_b and (layout.ebase + 4 * layout.initial_4b) % 32 == 0
        assert layout.compacted_2b % 16 == 0
    where, size = _writer_packs(inode_end, total, two_b)
    assert [_kernel_slot(layout, lcn) for lcn in range(total)] == where
    assert compact_index_size(layout, total) == size


def test_compact_layout_verified_mkfs_case() -> None:
    # compact inode at nid 42, no xattrs: init4 = 6, then 2B packs, then 4B packs
    layout = compact_layout(42 * 32 + 32, 83, True)
    assert (layout.ebase, layout.initial_4b, layout.compacted_2b) == (1384, 6, 64)
    assert [compact_entry_position(layout, n)[1] for n in (0, 5, 6, 69, 70, 82)] == [4, 4, 2, 2, 4, 4]
    assert compact_index_size(layout, 83) == 208


# ------------------------------------------------------------------------------------------------
# Conformance vectors (specs/vectors/*.txt): every file is checked, every key is known

VECTORS = Path(__file__).resolve().parent.parent / "specs" / "vectors"
Record = dict[str, list[str]]


def load_vectors(path: Path) -> list[tuple[int, Record]]:
    """Records separated by blank lines; `key: value` lines (keys may repeat); `#` comments."""
    records: list[tuple[int, Record]] = []
    current: Record = {}
    start = 0
    for lineno, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        line = line.strip()
        if line.startswith("#"):
            continue
        if not line:
            if current:
                records.append((start, current))
                current = {}
            continue
        key, sep, value = line.partition(":")
        if not sep or not re.fullmatch(r"[a-z0-9_]+", key):
            raise ValueError(f"{path.name}:{lineno}: not a 'key: value' line")
        if not current:
            start = lineno
        current.setdefault(key, []).append(value.strip())
    if current:
        records.append((start, current))
    return records


def _one(rec: Record, key: str) -> str:
    values = rec[key]
    assert len(values) == 1, f"{key} given {len(values)} times"
    return values[0]


def _int(rec: Record, key: str) -> int:
    return int(_one(rec, key), 0)


def _hex(rec: Record, key: str) -> bytes:
    return bytes.fromhex(_one(rec, key))


def _check_crc32c(rec: Record) -> None:
    data = _hex(rec, "data")
    if "seed" in rec:
        assert crc32c_raw(data, _int(rec, "seed")) == _int(rec, "raw")
        return
    assert crc32c_raw(data) == _int(rec, "raw")
    assert crc32c_raw(data) ^ 0xFFFFFFFF == _int(rec, "crc32c") == _crc32c_bitwise(data)


def _check_superblock_checksum(rec: Record) -> None:
    buf = bytearray(_int(rec, "size"))
    for item in rec["at"]:
        offset, hexdata = item.split()
        chunk = bytes.fromhex(hexdata)
        buf[int(offset) : int(offset) + len(chunk)] = chunk
    assert len(buf) == _int(rec, "size")
    crc = _int(rec, "crc")
    assert sb_checksum(buf, _int(rec, "blksz")) == crc
    if "stored" in rec:
        assert int.from_bytes(buf[1028:1032], "little") == _int(rec, "stored") == crc
    if _int(rec, "blksz") == 4096:
        assert crc32c_raw(bytes(buf[1032:4096]), 0x5045B54A) == crc
        sb = SUPERBLOCK.unpack(buf, 1024)
        assert sb.magic == EROFS_SUPER_MAGIC_V1
        assert _parsed_fields(SuperBlock.parse(bytes(buf[1024:1152]))) == sb._asdict()


def _check_xattr_entry(rec: Record) -> None:
    index: int
    if "name" in rec:
        split = split_xattr_name(_one(rec, "name").encode())
        assert split is not None
        index, suffix = split
        if "index" in rec:
            assert index == _int(rec, "index")
    else:
        index, suffix = _int(rec, "index"), _hex(rec, "suffix")
    value, expect = _hex(rec, "value"), _hex(rec, "expect")
    assert pack_xattr_entry(index, suffix, value) == expect
    parsed = XattrEntry.parse(expect)
    assert (parsed.e_name_index, parsed.e_name, parsed.e_value) == (index, suffix, value)


def _check_long_prefix(rec: Record) -> None:
    base, infix, expect = _int(rec, "base_index"), _hex(rec, "infix"), _hex(rec, "expect")
    assert pack_long_prefix(base, infix) == expect
    parsed = XattrLongPrefix.parse(expect)
    assert (parsed.size, parsed.base_index, parsed.infix) == (1 + len(infix), base, infix)


def _check_bloom(rec: Record) -> None:
    if "name" in rec:
        split = split_xattr_name(_one(rec, "name").encode())
        assert split is not None
        assert xattr_filter_bit(*split) == _int(rec, "bit")
        return
    pairs = [split_xattr_name(n.encode()) for n in _one(rec, "names").split()]
    assert all(p is not None for p in pairs)
    assert xattr_name_filter([p for p in pairs if p is not None]) == _int(rec, "filter")


def _check_rdev(rec: Record) -> None:
    major, minor, value = _int(rec, "major"), _int(rec, "minor"), _int(rec, "value")
    assert encode_rdev(major, minor) == value
    assert decode_rdev(value) == (major, minor)
    assert os.makedev(major, minor) == value


def _check_compacted_pack(rec: Record) -> None:
    unit, lclusterbits = _int(rec, "unit"), _int(rec, "lclusterbits")
    entries = [(int(t), int(v)) for t, v in (e.split(":") for e in _one(rec, "entries").split())]
    base, expect = _int(rec, "base"), _hex(rec, "expect")
    assert encode_compacted_pack(entries, base, unit, lclusterbits) == expect
    vcnt, _, encodebits = pack_geometry(unit, lclusterbits)
    nbits = lobits(lclusterbits)
    padded = entries + [(0, 0)] * (vcnt - len(entries))
    assert [decode_compacted_bits(expect, i * encodebits, nbits) for i in range(vcnt)] == padded
    assert int.from_bytes(expect[-4:], "little") == base


def _check_compact_layout(rec: Record) -> None:
    total, two_b = _int(rec, "total"), _one(rec, "compacted_2b") == "yes"
    layout = compact_layout(_int(rec, "inode_end"), total, two_b)
    assert (layout.ebase, layout.initial_4b, layout.compacted_2b) == (
        _int(rec, "ebase"),
        _int(rec, "init4"),
        _int(rec, "n2b"),
    )
    assert compact_index_size(layout, total) == _int(rec, "size")
    for item in rec.get("at", []):
        lcn, pos, unit = (int(x) for x in item.split())
        assert compact_entry_position(layout, lcn) == (pos, unit)


VECTOR_CHECKERS: dict[str, tuple[set[str], Callable[[Record], None]]] = {
    "crc32c.txt": ({"data", "crc32c", "raw", "seed"}, _check_crc32c),
    "superblock-checksum.txt": ({"blksz", "size", "at", "crc", "stored"}, _check_superblock_checksum),
    "xattr-entry.txt": ({"name", "index", "suffix", "value", "expect"}, _check_xattr_entry),
    "xattr-long-prefix.txt": ({"base_index", "infix", "expect"}, _check_long_prefix),
    "bloom.txt": ({"name", "bit", "names", "filter"}, _check_bloom),
    "rdev.txt": ({"major", "minor", "value"}, _check_rdev),
    "compacted-pack.txt": (
        {"unit", "lclusterbits", "entries", "base", "expect"},
        _check_compacted_pack,
    ),
    "compact-layout.txt": (
        {"inode_end", "total", "compacted_2b", "ebase", "init4", "n2b", "size", "at"},
        _check_compact_layout,
    ),
}


def test_every_vector_file_has_a_checker() -> None:
    assert sorted(p.name for p in VECTORS.glob("*.txt")) == sorted(VECTOR_CHECKERS)


@pytest.mark.parametrize("filename", sorted(VECTOR_CHECKERS))
def test_vectors(filename: str) -> None:
    keys, check = VECTOR_CHECKERS[filename]
    records = load_vectors(VECTORS / filename)
    assert records, f"{filename} has no vectors"
    for lineno, rec in records:
        assert set(rec) <= keys, f"{filename}:{lineno}: unknown keys {set(rec) - keys}"
        try:
            check(rec)
        except (AssertionError, KeyError, ValueError) as exc:
            raise AssertionError(f"{filename}:{lineno}: {exc!r}") from exc


def test_vector_loader() -> None:
    assert load_vectors(VECTORS / "rdev.txt")[0][1] == {
        "major": ["0"],
        "minor": ["0"],
        "value": ["0x00000000"],
    }


# ------------------------------------------------------------------------------------------------
# Images made by mkfs.erofs (erofs-utils): superblock, checksum, directory, compressed indexes

MKFS = shutil.which("mkfs.erofs")
BLKSZ = 4096


class MkfsImages(NamedTuple):
    version: str
    source: Path
    plain: bytes
    compact: bytes  # -zlz4: compacted indexes (layout 3, COMPACTED_2B)
    legacy: bytes  # -zlz4 -Elegacy-compress: full indexes (layout 1)


def _source_tree(root: Path) -> None:
    root.mkdir()
    (root / "a.txt").write_bytes(b"hello\n")
    (root / "sub").mkdir()
    (root / "link").symlink_to("a.txt")
    rnd = random.Random(7)
    words = ["alpha", "beta", "gamma", "delta", "epsilon", "zeta", "eta", "theta", "iota", "kappa"]
    text = " ".join(f"{rnd.choice(words)}{rnd.randrange(1000)}" for _ in range(40000))
    (root / "big.txt").write_bytes(text.encode())  # ~2:1 with LZ4: two lclusters per extent


def _mkfs(args: list[str], image: Path, source: Path) -> str:
    assert MKFS is not None
    proc = subprocess.run(
        [MKFS, "-T0", *args, str(image), str(source)], capture_output=True, text=True, check=False
    )
    if proc.returncode != 0:
        pytest.skip(f"mkfs.erofs {' '.join(args)} failed: {proc.stderr.strip()[:200]}")
    return proc.stdout.splitlines()[0].strip() if proc.stdout else "mkfs.erofs (unknown version)"


@pytest.fixture(scope="module")
def mkfs_images(tmp_path_factory: pytest.TempPathFactory) -> Iterator[MkfsImages]:
    if MKFS is None:
        pytest.skip("mkfs.erofs is not installed")
    tmp = tmp_path_factory.mktemp("mkfs")
    source = tmp / "src"
    _source_tree(source)
    version = _mkfs([], tmp / "plain.img", source)
    _mkfs(["-zlz4"], tmp / "compact.img", source)
    _mkfs(["-zlz4", "-Elegacy-compress"], tmp / "legacy.img", source)
    yield MkfsImages(
        version,
        source,
        (tmp / "plain.img").read_bytes(),
        (tmp / "compact.img").read_bytes(),
        (tmp / "legacy.img").read_bytes(),
    )


class Inode(NamedTuple):
    offset: int
    version: int
    layout: int
    end: int  # past the core and the xattr body
    size: int
    i_u: int
    mode: int


def _inode(img: bytes, nid: int) -> Inode:
    sb = SUPERBLOCK.unpack(img, 1024)
    offset = sb.meta_blkaddr * BLKSZ + 32 * nid
    fmt = int.from_bytes(img[offset : offset + 2], "little")
    version = InodeVersion(i_format_version(fmt))
    core: Any = (INODE_EXTENDED if version else INODE_COMPACT).unpack(img, offset)
    end = offset + INODE_CORE_SIZE[version] + xattr_ibody_size(core.i_xattr_icount)
    return Inode(offset, version, i_format_layout(fmt), end, core.i_size, core.i_u, core.i_mode)


def _listdir(img: bytes, nid: int) -> dict[bytes, tuple[int, int]]:
    """name -> (nid, file_type) for a one-block directory (inline or plain)."""
    ino = _inode(img, nid)
    assert stat.S_ISDIR(ino.mode) and ino.size <= BLKSZ
    start = ino.end if ino.layout == DataLayout.FLAT_INLINE else ino.i_u * BLKSZ
    block = img[start : start + ino.size]
    count = DIRENT.unpack(block).nameoff // 12
    heads = [DIRENT.unpack(block, 12 * i) for i in range(count)]
    ends = [h.nameoff for h in heads[1:]] + [len(block)]
    names = [block[h.nameoff : end].split(b"\0", 1)[0] for h, end in zip(heads, ends, strict=True)]
    assert names == sorted(names)
    return {name: (h.nid, h.file_type) for name, h in zip(names, heads, strict=True)}


class Entry(NamedTuple):
    ltype: int
    lo: int  # clusterofs for heads; delta[0] for NONHEAD (unless delta0 is None)
    delta0: int | None
    delta1: int | None
    pblk: int | None  # heads only


def _compact_entries(img: bytes, ino: Inode, advise: int, lclusterbits: int) -> list[Entry]:
    """Decode layout-3 entries the way the kernel does, including implicit block addresses."""
    total = -(-ino.size // (1 << lclusterbits))
    layout = compact_layout(ino.end, total, bool(advise & MapAdvise.COMPACTED_2B))
    nbits = lobits(lclusterbits)
    out = []
    for lcn in range(total):
        pos, unit = compact_entry_position(layout, lcn)
        vcnt, pack_bytes, encodebits = pack_geometry(unit, lclusterbits)
        start = pos // pack_bytes * pack_bytes
        pack = img[start : start + pack_bytes]
        i = (pos - start) // unit
        ltype, lo = decode_compacted_bits(pack, i * encodebits, nbits)
        if ltype == NONHEAD:
            last = i == vcnt - 1
            out.append(Entry(ltype, lo, None if last else lo, lo if last else None, None))
            continue
        nblk, j = 1, i  # z_erofs unpack_compacted_index, no big pcluster
        while j > 0:
            j -= 1
            t, v = decode_compacted_bits(pack, j * encodebits, nbits)
            if t == NONHEAD:
                j -= v
            if j >= 0:
                nblk += 1
        out.append(Entry(ltype, lo, None, None, int.from_bytes(pack[-4:], "little") + nblk))
    return out


def _full_entries(img: bytes, ino: Inode, lclusterbits: int) -> list[Entry]:
    total = -(-ino.size // (1 << lclusterbits))
    out = []
    for lcn in range(total):
        e = LCLUSTER_INDEX.unpack(img, full_index_offset(ino.end) + 8 * lcn)
        ltype = e.di_advise & LCLUSTER_TYPE_MASK
        if ltype == NONHEAD:
            out.append(Entry(ltype, e.di_u & 0xFFFF, e.di_u & 0xFFFF, e.di_u >> 16, None))
        else:
            out.append(Entry(ltype, e.di_clusterofs, None, None, e.di_u))
    return out


def _check_extents(
    img: bytes, ino: Inode, entries: list[Entry], data: bytes, lclusterbits: int, *, exact: bool
) -> None:
    """Index consistency, then every extent decompressed from its pcluster equals the source.

    With `exact`, each LZ4 pcluster decodes to exactly its extent. Without it the decoded stream
    may run past the extent (mkfs.erofs 1.5 with -Elegacy-compress compresses more than the
    extent it records and stores the overlap again in the next one; the kernel decodes such
    pclusters partially), so only the prefix is compared."""
    total = len(entries)
    assert entries[0].ltype != NONHEAD and entries[0].lo == 0
    for lcn, e in enumerate(entries):
        if e.delta0 is not None:
            assert entries[lcn - e.delta0].ltype != NONHEAD
            assert all(x.ltype == NONHEAD for x in entries[lcn - e.delta0 + 1 : lcn])
        if e.delta1 is not None:
            assert lcn + e.delta1 <= total
            if lcn + e.delta1 < total:
                assert entries[lcn + e.delta1].ltype != NONHEAD
    heads = [(lcn << lclusterbits) + e.lo for lcn, e in enumerate(entries) if e.ltype != NONHEAD]
    head_entries = [e for e in entries if e.ltype != NONHEAD]
    pblks = set()
    for k, (start, e) in enumerate(zip(heads, head_entries, strict=True)):
        if start >= ino.size:  # the dummy PLAIN entry of the EOF lcluster
            assert k == len(heads) - 1 and e.ltype == LclusterType.PLAIN
            continue
        end = heads[k + 1] if k + 1 < len(heads) else ino.size
        assert e.pblk is not None
        block = img[e.pblk * BLKSZ : (e.pblk + 1) * BLKSZ]
        if e.ltype == LclusterType.PLAIN:
            out = block[: end - start]
        else:
            assert e.ltype == LclusterType.HEAD1
            stream = block.lstrip(b"\0")  # 0PADDING: the stream is right-aligned
            if exact:
                out = lz4.block.decompress(stream, uncompressed_size=end - start)
            else:
                out = lz4.block.decompress(stream, uncompressed_size=1 << 20)[: end - start]
        assert out == data[start:end], f"extent [{start}, {end}) at block {e.pblk}"
        pblks.add(e.pblk)
    assert len(pblks) == ino.i_u  # i_u = blocks_lo of a compressed inode


def test_mkfs_superblock_and_checksum(mkfs_images: MkfsImages, record_property: Any) -> None:
    record_property("mkfs.erofs", mkfs_images.version)
    for img in (mkfs_images.plain, mkfs_images.compact, mkfs_images.legacy):
        sb = SUPERBLOCK.unpack(img, 1024)
        assert sb._asdict() == _parsed_fields(SuperBlock.parse(img[1024:1152]))
        assert sb.blkszbits == 12 and sb.dirblkbits == 0
        assert sb.blocks * BLKSZ == len(img)
        assert sb.inos == 5
        assert sb.feature_compat & 0x1, mkfs_images.version
        assert sb.checksum == sb_checksum(img[:BLKSZ], BLKSZ), mkfs_images.version
        assert sb.checksum == crc32c_raw(img[1032:BLKSZ], 0x5045B54A)
        corrupt = bytearray(img[:BLKSZ])
        corrupt[2000] ^= 0xFF
        assert sb_checksum(corrupt, BLKSZ) != sb.checksum


def test_mkfs_root_directory(mkfs_images: MkfsImages) -> None:
    img = mkfs_images.plain
    root = SUPERBLOCK.unpack(img, 1024).root_nid
    entries = _listdir(img, root)
    assert set(entries) == {b".", b"..", b"a.txt", b"big.txt", b"link", b"sub"}
    assert entries[b"."] == entries[b".."] == (root, FileType.DIR)
    assert entries[b"link"][1] == FileType.SYMLINK
    assert entries[b"a.txt"][1] == FileType.REG_FILE
    a = _inode(img, entries[b"a.txt"][0])
    assert a.layout == DataLayout.FLAT_INLINE and a.size == 6
    assert img[a.end : a.end + 6] == b"hello\n"
    sub = _listdir(img, entries[b"sub"][0])
    assert sub == {b".": (entries[b"sub"][0], FileType.DIR), b"..": (root, FileType.DIR)}


def test_mkfs_compressed_indexes(mkfs_images: MkfsImages) -> None:
    """Decode big.txt's lcluster indexes, compacted and full, with the format helpers; each
    extent must decompress to the source bytes."""
    data = (mkfs_images.source / "big.txt").read_bytes()
    for label, img in (("compact", mkfs_images.compact), ("legacy", mkfs_images.legacy)):
        sb = SUPERBLOCK.unpack(img, 1024)
        nid = _listdir(img, sb.root_nid)[b"big.txt"][0]
        ino = _inode(img, nid)
        head = MAP_HEADER.unpack(img, map_header_offset(ino.end))
        lclusterbits = lclusterbits_of(head.h_clusterbits, sb.blkszbits)
        assert lclusterbits == 12 and algorithm_nibbles(head.h_algorithmtype)[0] == 0
        assert not head.h_advise & (MapAdvise.BIG_PCLUSTER_1 | MapAdvise.BIG_PCLUSTER_2)
        if label == "compact":
            assert ino.layout == DataLayout.COMPRESSED_COMPACT, mkfs_images.version
            assert head.h_advise & MapAdvise.COMPACTED_2B
            entries = _compact_entries(img, ino, head.h_advise, lclusterbits)
        else:
            assert ino.layout == DataLayout.COMPRESSED_FULL, mkfs_images.version
            entries = _full_entries(img, ino, lclusterbits)
        assert len(entries) == -(-len(data) // BLKSZ)
        _check_extents(img, ino, entries, data, lclusterbits, exact=label == "compact")


@settings(max_examples=25)
@given(seed=st.integers(0, 2**32))
def test_mkfs_checksum_survives_random_block_contents(seed: int) -> None:
    """The checksum recomputed after replacing bytes 1152..4095 of a real superblock block."""
    block = bytearray(4096)
    block[1024:1041] = bytes.fromhex("e2e1f5e082447890030000000c00240005")
    block[1152:4096] = random.Random(seed).randbytes(4096 - 1152)
    crc = sb_checksum(block, 4096)
    assert crc == _crc32c_bitwise(bytes(block[1024:1028]) + bytes(4) + bytes(block[1032:4096])) ^ 0xFFFFFFFF
