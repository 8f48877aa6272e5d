"""Compressed-index decoding on hand-built images: full and compacted (4B/2B) indexes, big
pclusters, PLAIN/interlaced extents, ztailpacking, the EOF dummy entry, and all four algorithms
(mkfs.erofs 1.5 only writes LZ4, so LZMA/DEFLATE/ZSTD pclusters are built here)."""

from __future__ import annotations

import io
import lzma
import random
import stat
import zlib
from dataclasses import dataclass

import lz4.block
import pytest
import zstandard

import erofsgen
from erofsgen.errors import CorruptImageError, UnsupportedFeatureError
from erofsgen.format.constants import (
    EROFS_SUPER_MAGIC_V1,
    Z_EROFS_LI_D0_CBLKCNT,
    CompressionAlgorithm,
    DataLayout,
    FeatureIncompat,
    InodeVersion,
    LclusterType,
    MapAdvise,
)
from erofsgen.format.inode import INODE_COMPACT, InodeCompactRec, i_format
from erofsgen.format.superblock import SUPERBLOCK, SuperBlockRec
from erofsgen.format.zmap import (
    COMPRESSION_CONFIGS,
    LCLUSTER_INDEX,
    MAP_HEADER,
    LclusterIndexRec,
    MapHeaderRec,
    compact_index_offset,
    compact_layout,
    encode_compacted_pack,
    full_index_offset,
    map_header_offset,
    pack_geometry,
)
from erofsgen.reader.zmap import Extent

BS = 4096
NID = 48  # the test inode sits at byte 1536
INODE_END = NID * 32 + INODE_COMPACT.size
ALGS = CompressionAlgorithm
_LZMA_PROPS = (2 * 5 + 0) * 9 + 3  # pb=2, lp=0, lc=3


def microlzma(data: bytes) -> bytes:
    """A MicroLZMA stream: raw LZMA1 with its leading 0 replaced by the inverted props byte."""
    filters = [{"id": lzma.FILTER_LZMA1, "dict_size": 1 << 16, "lc": 3, "lp": 0, "pb": 2}]
    raw = lzma.compress(data, format=lzma.FORMAT_RAW, filters=filters)
    assert raw[0] == 0
    return bytes([~_LZMA_PROPS & 0xFF]) + raw[1:]


def compress(alg: CompressionAlgorithm, data: bytes) -> bytes:
    """One pcluster stream of `data` with the given algorithm."""
    if alg == ALGS.LZ4:
        out: bytes = lz4.block.compress(data, store_size=False, mode="high_compression")
        return out
    if alg == ALGS.LZMA:
        return microlzma(data)
    if alg == ALGS.DEFLATE:
        c = zlib.compressobj(9, zlib.DEFLATED, -15)
        return c.compress(data) + c.flush()
    return zstandard.ZstdCompressor(level=3).compress(data)


@dataclass
class Ext:
    """A planned extent: its data, how it is stored, and its pcluster size in blocks."""

    data: bytes
    kind: LclusterType = LclusterType.HEAD1
    blocks: int = 1
    alg: CompressionAlgorithm = ALGS.LZ4


def text(seed: int, size: int) -> bytes:
    """Compressible text: random picks among a few long sentences."""
    rng = random.Random(seed)
    phrases = [
        b"%d: the quick brown fox %s over the lazy dog\n" % (i, rng.randbytes(4).hex().encode())
        for i in range(24)
    ]
    out = b"".join(rng.choice(phrases) for _ in range(size // 40 + 1))
    return out[:size]


def standard_extents(alg: CompressionAlgorithm = ALGS.LZ4, *, big: bool = True) -> list[Ext]:
    """Five extents: compressed, raw, a 30000-byte one (3-block pcluster if `big`), compressed,
    and a tail ending inside the last lcluster (55096 bytes: it gets the dummy PLAIN entry)."""
    if not big:
        exts = standard_extents(alg)
        exts[2] = Ext(text(3, 3500) * 8 + b"x" * 2000, alg=alg)  # compresses into one block
        return exts
    return [
        Ext(text(1, 9000), alg=alg),
        Ext(random.Random(2).randbytes(4096), LclusterType.PLAIN),
        # Compresses to 9-11 KiB with every algorithm: needs all three blocks (the zero padding
        # of a right-aligned stream must stay within the first block).
        Ext(random.Random(9).randbytes(8500) + text(3, 21500), blocks=3, alg=alg),
        Ext(text(4, 5000), alg=alg),
        Ext(text(5, 7000), alg=alg),
    ]


@dataclass
class Plan:
    """Per-lcluster logical index entries plus pcluster placement."""

    size: int
    starts: list[int]
    pblk: list[int]
    entries: list[tuple[LclusterType, int, int, int]]  # (type, clusterofs or d0, d1, pblk)


def plan(exts: list[Ext], *, big: bool, first_block: int = 1) -> Plan:
    starts, pos = [], 0
    for e in exts:
        starts.append(pos)
        pos += len(e.data)
    size, total = pos, -(-pos // BS)
    heads = {s // BS: i for i, s in enumerate(starts)}
    assert len(heads) == len(exts), "two extents start in one lcluster"
    pblk, blk = [], first_block
    for e in exts:
        pblk.append(blk)
        blk += e.blocks
    head_lcns = sorted(heads)
    entries = []
    for lcn in range(total):
        if lcn in heads:
            i = heads[lcn]
            entries.append((exts[i].kind, starts[i] % BS, 0, pblk[i]))
            continue
        if lcn == total - 1 and size % BS:
            entries.append((LclusterType.PLAIN, size % BS, 0, 0))  # mkfs's dummy EOF head
            continue
        prev = max(h for h in head_lcns if h < lcn)
        nxt = min((h for h in head_lcns if h > lcn), default=total)
        d0 = lcn - prev
        if big and d0 == 1:
            d0 = Z_EROFS_LI_D0_CBLKCNT | exts[heads[prev]].blocks
        entries.append((LclusterType.NONHEAD, d0, nxt - lcn, 0))
    return Plan(size, starts, pblk, entries)


def full_index(p: Plan) -> bytes:
    out = []
    for ltype, ofs_or_d0, d1, pblk in p.entries:
        if ltype == LclusterType.NONHEAD:
            out.append(LCLUSTER_INDEX.pack(LclusterIndexRec(ltype, 0, ofs_or_d0 | d1 << 16)))
        else:
            out.append(LCLUSTER_INDEX.pack(LclusterIndexRec(ltype, ofs_or_d0, pblk)))
    return b"".join(out)


def _pack_base(p: Plan, lcns: list[int], big: bool) -> int:
    """The u32 at the end of a pack, chosen the way mkfs chooses it."""
    if big:
        for j, lcn in enumerate(lcns):
            ltype, d0, _, pblk = p.entries[lcn]
            if j == 0 and ltype == LclusterType.NONHEAD and d0 & Z_EROFS_LI_D0_CBLKCNT:
                return p.entries[lcn - 1][3]  # its head is in the previous pack
            if ltype != LclusterType.NONHEAD and pblk:
                return pblk
        return 0
    # Without big pclusters: the block of the last head before the pack (first pcluster - 1).
    before = [p.entries[k][3] for k in range(lcns[0]) if p.entries[k][0] != LclusterType.NONHEAD]
    return before[-1] if before else p.pblk[0] - 1


def compact_index(p: Plan, *, two_byte: bool, big: bool) -> bytes:
    total = len(p.entries)
    layout = compact_layout(INODE_END, total, two_byte)
    runs = [(4, list(range(min(total, layout.initial_4b))))]
    runs.append((2, list(range(layout.initial_4b, layout.initial_4b + layout.compacted_2b))))
    runs.append((4, list(range(layout.initial_4b + layout.compacted_2b, total))))
    out = []
    for unit, lcns in runs:
        vcnt, _, _ = pack_geometry(unit, 12)
        for k in range(0, len(lcns), vcnt):
            pack = lcns[k : k + vcnt]
            values = []
            for j, lcn in enumerate(pack):
                ltype, v, d1, _ = p.entries[lcn]
                if ltype == LclusterType.NONHEAD and not v & Z_EROFS_LI_D0_CBLKCNT:
                    v = min(d1 if j == vcnt - 1 else v, 0x7FF)
                values.append((int(ltype), v))
            out.append(encode_compacted_pack(values, _pack_base(p, pack, big), unit, 12))
    return b"".join(out)


def cfg_records(algs: set[CompressionAlgorithm]) -> bytes:
    out = b""
    defaults = {
        ALGS.LZ4: {"max_distance": 65535, "max_pclusterblks": 4, "reserved": bytes(10)},
        ALGS.LZMA: {"dict_size": 1 << 16, "format": 0, "reserved": bytes(8)},
        ALGS.DEFLATE: {"windowbits": 15, "reserved": bytes(5)},
        ALGS.ZSTD: {"format": 0, "windowlog": 5, "reserved": bytes(4)},
    }
    for alg in sorted(algs):
        body = COMPRESSION_CONFIGS[alg].build(defaults[alg])
        rec = len(body).to_bytes(2, "little") + body
        out += rec + bytes(-len(rec) % 4)
    return out


def build_image(
    exts: list[Ext],
    *,
    layout: DataLayout = DataLayout.COMPRESSED_FULL,
    big: bool = False,
    two_byte: bool = False,
    ztail: bool = False,
    interlaced: bool = False,
    zero_padding: bool = True,
    head2: CompressionAlgorithm | None = None,
) -> bytes:
    """A one-inode image (nid 48) whose data is `exts`, indexed as asked."""
    p = plan(exts, big=big)
    index = (
        full_index(p)
        if layout == DataLayout.COMPRESSED_FULL
        else compact_index(p, two_byte=two_byte, big=big)
    )
    algs = {e.alg for e in exts if e.kind != LclusterType.PLAIN} | ({head2} if head2 is not None else set())
    head1 = next((e.alg for e in exts if e.kind == LclusterType.HEAD1), ALGS.LZ4)
    cfgs = algs != {ALGS.LZ4} or big or head2 is not None
    advise = MapAdvise(0)
    for flag, on in (
        (MapAdvise.COMPACTED_2B, two_byte),
        (MapAdvise.BIG_PCLUSTER_1 | MapAdvise.BIG_PCLUSTER_2, big),
        (MapAdvise.INLINE_PCLUSTER, ztail),
        (MapAdvise.INTERLACED_PCLUSTER, interlaced),
    ):
        advise |= flag if on else 0
    incompat = FeatureIncompat.ZERO_PADDING if zero_padding else FeatureIncompat(0)
    incompat |= (FeatureIncompat.COMPR_CFGS if cfgs else 0) | (FeatureIncompat.ZTAILPACKING if ztail else 0)
    nblocks = max(p.pblk[-1] + exts[-1].blocks, 2) + 1
    img = bytearray(nblocks * BS)
    cfg = cfg_records(algs) if cfgs else b""
    u1 = sum(1 << a for a in algs) if cfgs else 65535
    img[1024:1152] = SUPERBLOCK.pack(superblock_rec(nblocks, incompat, u1))
    img[1152 : 1152 + len(cfg)] = cfg
    assert 1152 + len(cfg) <= NID * 32
    img[NID * 32 : INODE_END] = inode_bytes(layout, p.size)
    algtype = head1 | ((head2 if head2 is not None else head1) << 4)
    tail = _store_pclusters(img, exts, p, zero_padding=zero_padding, interlaced=interlaced, ztail=ztail)
    img[map_header_offset(INODE_END) : map_header_offset(INODE_END) + 8] = MAP_HEADER.pack(
        MapHeaderRec(0, len(tail), int(advise), algtype, 0)
    )
    start = (
        full_index_offset(INODE_END)
        if layout == DataLayout.COMPRESSED_FULL
        else compact_index_offset(INODE_END)
    )
    img[start : start + len(index)] = index
    img[start + len(index) : start + len(index) + len(tail)] = tail
    assert (start + len(index)) % BS + len(tail) <= BS
    return bytes(img)


def inode_bytes(layout: DataLayout, size: int) -> bytes:
    """A compact regular-file inode core with this layout and size."""
    fmt = i_format(InodeVersion.COMPACT, layout)
    return INODE_COMPACT.pack(InodeCompactRec(fmt, 0, stat.S_IFREG | 0o644, 1, size, 0, 0, 0, 0, 0, bytes(4)))


def superblock_rec(nblocks: int, incompat: int, u1: int) -> SuperBlockRec:
    """A 4 KiB-block superblock record for the hand-built test images."""
    return SuperBlockRec(
        EROFS_SUPER_MAGIC_V1, 0, 0, 12, 0, NID, 1, 0, 0, nblocks, 0, 0, bytes(16), b"test".ljust(16, b"\0"),
        incompat, u1, 0, 0, 0, 0, 0, 0, 0, 0, bytes(2), 0, 0, bytes(8),
    )  # fmt: skip


def _store_pclusters(
    img: bytearray, exts: list[Ext], p: Plan, *, zero_padding: bool, interlaced: bool, ztail: bool
) -> bytes:
    tail = b""
    for i, e in enumerate(exts):
        if e.kind == LclusterType.PLAIN:
            raw = e.data
            if interlaced:
                cut = BS - p.starts[i] % BS
                raw = e.data[cut:] + e.data[:cut] if len(e.data) == BS else raw
        else:
            raw = compress(e.alg, e.data)
        if ztail and i == len(exts) - 1:
            return raw
        room = e.blocks * BS
        assert len(raw) <= room, f"extent {i} does not fit its pcluster ({len(raw)} > {room})"
        at = p.pblk[i] * BS
        if e.kind != LclusterType.PLAIN and zero_padding:
            at += room - len(raw)
        img[at : at + len(raw)] = raw
    return tail


def read_all(image: bytes) -> tuple[bytes, list[Extent]]:
    with erofsgen.open_image(io.BytesIO(image)) as img:
        data = img.data_nid(NID)
        assert data.zmap is not None
        return data.read(0, data.size), data.zmap.extents()


def expected(exts: list[Ext]) -> bytes:
    return b"".join(e.data for e in exts)


@pytest.mark.parametrize("alg", list(ALGS), ids=[a.name for a in ALGS])
@pytest.mark.parametrize(
    "layout,two_byte",
    [
        (DataLayout.COMPRESSED_FULL, False),
        (DataLayout.COMPRESSED_COMPACT, False),
        (DataLayout.COMPRESSED_COMPACT, True),
    ],
    ids=["full", "compact4b", "compact2b"],
)
@pytest.mark.parametrize("big", [False, True], ids=["1blk", "bigpcl"])
def test_layouts_and_algorithms(
    alg: CompressionAlgorithm, layout: DataLayout, two_byte: bool, big: bool
) -> None:
    exts = standard_extents(alg, big=big)
    image = build_image(exts, layout=layout, big=big, two_byte=two_byte)
    data, extents = read_all(image)
    assert data == expected(exts)
    p = plan(exts, big=big)
    assert [(e.logical, e.length) for e in extents] == [
        (s, len(x.data)) for s, x in zip(p.starts, exts, strict=True)
    ]
    assert [e.physical // BS for e in extents] == p.pblk
    assert extents[1].algorithm is None and extents[0].algorithm == alg
    assert extents[2].plen == (3 if big else 1) * BS


@pytest.mark.parametrize("big", [False, True])
def test_two_byte_packs(big: bool) -> None:
    # 26 lclusters: 6 initial 4B entries, one 2B pack of 16, then 4B packs.
    exts = [Ext(text(10 + i, 6000 if i % 2 else 7000)) for i in range(16)]
    assert compact_layout(INODE_END, 26, True).compacted_2b == 16
    for two_byte in (False, True):
        image = build_image(exts, layout=DataLayout.COMPRESSED_COMPACT, two_byte=two_byte, big=big)
        data, extents = read_all(image)
        assert data == expected(exts)
        assert [e.logical for e in extents] == plan(exts, big=big).starts


def test_worked_example_matches_mkfs_bytes() -> None:
    # format doc §8.5/8.6: a real mkfs 1.8.10 -zlz4 file of 106890 bytes, 4 extents, 27 lclusters.
    lengths = [28147, 56145 - 28147, 84514 - 56145, 106890 - 84514]
    exts = [Ext(bytes([65 + i]) * n) for i, n in enumerate(lengths)]
    p = plan(exts, big=False)
    index = compact_index(p, two_byte=True, big=False)
    assert index[:8] == bytes.fromhex("0010052000000000")  # HEAD1 ofs 0, last-in-pack delta1 5, base 0
    assert index[-8:] == bytes.fromhex("8a01000004000000")  # dummy PLAIN ofs 394, base 4
    data, extents = read_all(build_image(exts, layout=DataLayout.COMPRESSED_COMPACT, two_byte=True))
    assert data == expected(exts)
    assert [(e.logical, e.end, e.physical // BS) for e in extents] == [
        (0, 28147, 1),
        (28147, 56145, 2),
        (56145, 84514, 3),
        (84514, 106890, 4),
    ]


@pytest.mark.parametrize("layout", [DataLayout.COMPRESSED_FULL, DataLayout.COMPRESSED_COMPACT])
@pytest.mark.parametrize("big", [False, True])
def test_ztailpacking(layout: DataLayout, big: bool) -> None:
    exts = standard_extents(big=big)
    exts[-1] = Ext(b"tail data " * 700)  # compresses well enough to sit after the index
    image = build_image(exts, layout=layout, big=big, ztail=True)
    data, extents = read_all(image)
    assert data == expected(exts)
    assert [e.inline for e in extents] == [False] * 4 + [True]
    assert extents[-1].plen == len(compress(ALGS.LZ4, exts[-1].data))


def test_interlaced_plain_extent() -> None:
    exts = standard_extents(big=False)
    data, extents = read_all(build_image(exts, interlaced=True))
    assert extents[1].interlaced and data == expected(exts)


def test_lz4_without_zero_padding_is_decoded_partially() -> None:
    exts = standard_extents(big=False)
    data, _ = read_all(build_image(exts, zero_padding=False))
    assert data == expected(exts)


def test_head2_uses_second_algorithm() -> None:
    exts = standard_extents(ALGS.LZ4, big=False)
    exts[3] = Ext(text(4, 5000), LclusterType.HEAD2, alg=ALGS.ZSTD)
    image = build_image(exts, head2=ALGS.ZSTD)
    data, extents = read_all(image)
    assert data == expected(exts) and extents[3].algorithm == ALGS.ZSTD


def test_random_offsets_map_to_covering_extents() -> None:
    exts = standard_extents()
    exts[-1] = Ext(b"tail data " * 700)
    image = build_image(exts, layout=DataLayout.COMPRESSED_COMPACT, big=True, ztail=True)
    whole = expected(exts)
    rng = random.Random(5)
    with erofsgen.open_image(io.BytesIO(image)) as img:
        data = img.data_nid(NID)
        assert data.zmap is not None
        for _ in range(200):
            pos = rng.randrange(len(whole))
            ext = data.zmap.extent_at(pos)
            assert ext.logical <= pos < ext.end
            assert data.read(pos, 5000) == whole[pos : pos + 5000]


def _patch(image: bytes, offset: int, raw: bytes) -> bytes:
    return image[:offset] + raw + image[offset + len(raw) :]


def _entry_offset(lcn: int) -> int:
    return full_index_offset(INODE_END) + lcn * LCLUSTER_INDEX.size


def test_corrupt_indexes_are_reported() -> None:
    exts = standard_extents()
    good = build_image(exts, big=True)
    # lcluster 1 says its head is 5 lclusters back: before lcluster 0.
    bad_lookback = _patch(good, _entry_offset(1), LCLUSTER_INDEX.pack(LclusterIndexRec(2, 0, 5 | 1 << 16)))
    # CBLKCNT that is not the first NONHEAD after its head.
    bad_cblk = _patch(good, _entry_offset(4), LCLUSTER_INDEX.pack(LclusterIndexRec(2, 0, 2 | 6 << 16)))
    # HEAD clusterofs beyond the lcluster.
    bad_ofs = _patch(good, _entry_offset(2), LCLUSTER_INDEX.pack(LclusterIndexRec(0, 5000, 2)))
    for image in (bad_lookback, bad_cblk, bad_ofs):
        with pytest.raises(CorruptImageError):
            read_all(image)


def test_algorithm_must_be_available() -> None:
    exts = standard_extents(ALGS.DEFLATE, big=False)
    hdr = map_header_offset(INODE_END)
    image = bytearray(build_image(exts))
    image[hdr + 6] = ALGS.ZSTD  # HEAD1 algorithm not in available_compr_algs
    with pytest.raises(CorruptImageError, match="algorithmtype"):
        read_all(bytes(image))
    image[hdr + 6] = 9
    with pytest.raises(UnsupportedFeatureError):
        read_all(bytes(image))


def test_fragment_header_needs_the_feature() -> None:
    image = bytearray(build_image(standard_extents(big=False)))
    image[map_header_offset(INODE_END) + 7] = 0x80
    with pytest.raises(CorruptImageError, match="without the superblock FRAGMENTS feature"):
        read_all(bytes(image))
