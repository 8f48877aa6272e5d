"""Compressed inodes: map header, full and compacted lcluster indexes, compression configs."""

from __future__ import annotations

from typing import NamedTuple

import construct as cs

from .codec import FixedCodec
from .constants import Z_EROFS_LI_D0_CBLKCNT, CompressionAlgorithm

# struct z_erofs_map_header, at round_up(inode end, 8).
MapHeader = cs.Struct(
    "h_reserved1" / cs.Int16ul,  # with FRAGMENT_PCLUSTER: low half of h_fragmentoff
    "h_idata_size" / cs.Int16ul,  # ztailpacking: bytes of the inline tail pcluster
    "h_advise" / cs.Int16ul,
    "h_algorithmtype" / cs.Int8ul,  # bits 0-3: HEAD1 algorithm, bits 4-7: HEAD2 algorithm
    "h_clusterbits" / cs.Int8ul,  # bits 0-3: lclusterbits - blkszbits; bit 7: whole-file fragment
)

# struct z_erofs_lcluster_index (full indexes, layout COMPRESSED_FULL).
LclusterIndex = cs.Struct(
    "di_advise" / cs.Int16ul,  # bits 0-1: LclusterType; bit 15: PARTIAL_REF
    "di_clusterofs" / cs.Int16ul,
    "di_u" / cs.Int32ul,  # HEAD/PLAIN: blkaddr; NONHEAD: delta[0] | delta[1] << 16
)

# Compression config records (COMPR_CFGS): u16 length, then the payload below.
Lz4Config = cs.Struct(
    "max_distance" / cs.Int16ul,
    "max_pclusterblks" / cs.Int16ul,
    "reserved" / cs.Bytes(10),
)
LzmaConfig = cs.Struct(
    "dict_size" / cs.Int32ul,
    "format" / cs.Int16ul,
    "reserved" / cs.Bytes(8),
)
DeflateConfig = cs.Struct(
    "windowbits" / cs.Int8ul,
    "reserved" / cs.Bytes(5),
)
ZstdConfig = cs.Struct(
    "format" / cs.Int8ul,  # must be 0
    "windowlog" / cs.Int8ul,  # log2(window) - 10
    "reserved" / cs.Bytes(4),
)
COMPRESSION_CONFIGS: dict[CompressionAlgorithm, cs.Struct] = {
    CompressionAlgorithm.LZ4: Lz4Config,
    CompressionAlgorithm.LZMA: LzmaConfig,
    CompressionAlgorithm.DEFLATE: DeflateConfig,
    CompressionAlgorithm.ZSTD: ZstdConfig,
}


class MapHeaderRec(NamedTuple):
    h_reserved1: int
    h_idata_size: int
    h_advise: int
    h_algorithmtype: int
    h_clusterbits: int


class LclusterIndexRec(NamedTuple):
    di_advise: int
    di_clusterofs: int
    di_u: int


MAP_HEADER = FixedCodec(MapHeader, MapHeaderRec)
LCLUSTER_INDEX = FixedCodec(LclusterIndex, LclusterIndexRec)
LCLUSTER_TYPE_MASK = 0x3


def map_header_offset(inode_end: int) -> int:
    return (inode_end + 7) & ~7


def full_index_offset(inode_end: int) -> int:
    """Z_EROFS_FULL_INDEX_ALIGN: header, 8 reserved bytes, then the 8-byte entries."""
    return map_header_offset(inode_end) + MAP_HEADER.size + 8


def compact_index_offset(inode_end: int) -> int:
    return map_header_offset(inode_end) + MAP_HEADER.size


class CompactLayout(NamedTuple):
    """Where compacted entries live: leading 4B packs, 2B packs, trailing 4B packs."""

    ebase: int
    initial_4b: int
    compacted_2b: int


def compact_layout(inode_end: int, total: int, compacted_2b: bool) -> CompactLayout:
    ebase = compact_index_offset(inode_end)
    initial = ((32 - ebase % 32) // 4) & 7
    n2b = (total - initial) // 16 * 16 if compacted_2b and initial < total else 0
    return CompactLayout(ebase, initial, n2b)


def compact_entry_position(layout: CompactLayout, lcn: int) -> tuple[int, int]:
    """(byte position of entry `lcn`, amortized bytes per entry: 4 or 2)."""
    pos = layout.ebase
    if lcn < layout.initial_4b:
        return pos + lcn * 4, 4
    pos += layout.initial_4b * 4
    lcn -= layout.initial_4b
    if lcn < layout.compacted_2b:
        return pos + lcn * 2, 2
    return pos + layout.compacted_2b * 2 + (lcn - layout.compacted_2b) * 4, 4


def compact_index_size(layout: CompactLayout, total: int) -> int:
    """Bytes of the whole compacted index area: every 4B pack is whole (8 bytes), so a half-filled
    one, leading or trailing, still counts in full (the kernel's nextpackoff is the pack's end)."""
    trailing = total - layout.initial_4b - layout.compacted_2b if total > layout.initial_4b else 0
    lead = min(total, layout.initial_4b)
    return (lead + 1) // 2 * 8 + layout.compacted_2b * 2 + (trailing + 1) // 2 * 8


def pack_geometry(unit: int, lclusterbits: int) -> tuple[int, int, int]:
    """(entries per pack, pack bytes, bits per entry) for 4-byte or 2-byte amortized packs."""
    vcnt = 2 if unit == 4 else 16
    pack_bytes = vcnt * unit
    return vcnt, pack_bytes, (pack_bytes - 4) * 8 // vcnt


def lobits(lclusterbits: int) -> int:
    """Width of an entry's value: at least 12 so CBLKCNT (bit 11) fits."""
    return max(lclusterbits, Z_EROFS_LI_D0_CBLKCNT.bit_length())


def decode_compacted_bits(pack: bytes, bitpos: int, nbits: int) -> tuple[int, int]:
    """(type, value) of the entry starting at bit `bitpos` of a pack."""
    v = int.from_bytes(pack[bitpos // 8 : bitpos // 8 + 4].ljust(4, b"\0"), "little") >> (bitpos & 7)
    return (v >> nbits) & 3, v & ((1 << nbits) - 1)


def encode_compacted_pack(entries: list[tuple[int, int]], base: int, unit: int, lclusterbits: int) -> bytes:
    """One pack from (type, value) entries (already holding delta[1] in the last slot) and its base."""
    vcnt, pack_bytes, encodebits = pack_geometry(unit, lclusterbits)
    nbits = lobits(lclusterbits)
    acc = 0
    for i, (ltype, value) in enumerate(entries):
        acc |= ((ltype << nbits) | value) << (i * encodebits)
    if len(entries) > vcnt:
        raise ValueError("too many entries for one pack")
    return acc.to_bytes(pack_bytes - 4, "little") + base.to_bytes(4, "little")


def algorithm_nibbles(h_algorithmtype: int) -> tuple[int, int]:
    return h_algorithmtype & 0xF, h_algorithmtype >> 4


def lclusterbits_of(h_clusterbits: int, blkszbits: int) -> int:
    return blkszbits + (h_clusterbits & 0xF)
