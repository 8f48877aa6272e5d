"""Pcluster decoding: each algorithm, zero padding, short/long/garbage streams, raw extents."""

from __future__ import annotations

import dataclasses
import lzma
import random
import zlib

import lz4.block
import pytest
import zstandard
from hypothesis import given
from hypothesis import strategies as st

from erofsgen.errors import CorruptImageError
from erofsgen.format.constants import CompressionAlgorithm, LclusterType
from erofsgen.reader.decompress import decode_extent, lz4_decode_partial
from erofsgen.reader.zmap import Extent
from tests.test_reader_zmap import compress, text

ALGS = list(CompressionAlgorithm)
BS = 4096


def extent(length: int, alg: CompressionAlgorithm | None, *, plen: int = BS, logical: int = 0) -> Extent:
    return Extent(
        logical=logical,
        length=length,
        physical=BS,
        plen=plen,
        head_lcn=0,
        head_type=LclusterType.HEAD1 if alg is not None else LclusterType.PLAIN,
        algorithm=alg,
        interlaced=False,
        inline=False,
        partial_ref=False,
    )


def decode(raw: bytes, ext: Extent, *, zero_padding: bool = True) -> bytes:
    return decode_extent(raw, ext, zero_padding=zero_padding, blksz=BS, configs={})


def padded(stream: bytes, size: int = BS) -> bytes:
    """A right-aligned pcluster, as ZERO_PADDING images store compressed data."""
    return bytes(-len(stream) % size) + stream


@pytest.mark.parametrize("alg", ALGS, ids=[a.name for a in ALGS])
def test_each_algorithm_round_trips(alg: CompressionAlgorithm) -> None:
    data = text(1, 20000)
    stream = compress(alg, data)
    assert decode(padded(stream), extent(len(data), alg)) == data


@pytest.mark.parametrize("alg", ALGS, ids=[a.name for a in ALGS])
def test_stream_longer_than_extent_is_cut(alg: CompressionAlgorithm) -> None:
    data = text(2, 20000)
    stream = compress(alg, data)
    assert decode(padded(stream), extent(12345, alg)) == data[:12345]


@pytest.mark.parametrize("alg", ALGS, ids=[a.name for a in ALGS])
def test_stream_shorter_than_extent_is_corrupt(alg: CompressionAlgorithm) -> None:
    data = text(3, 5000)
    with pytest.raises(CorruptImageError, match=r"decodes to 5000 bytes|does not decode"):
        decode(padded(compress(alg, data)), extent(6000, alg))


@pytest.mark.parametrize("alg", ALGS, ids=[a.name for a in ALGS])
def test_garbage_is_corrupt(alg: CompressionAlgorithm) -> None:
    garbage = random.Random(4).randbytes(3000)
    with pytest.raises(CorruptImageError):
        decode(padded(b"\xff" + garbage), extent(8000, alg))


def test_zero_padding_must_end_in_the_first_block() -> None:
    stream = compress(CompressionAlgorithm.LZ4, text(5, 3000))
    with pytest.raises(CorruptImageError, match="zero padding"):
        decode(bytes(BS) + stream, extent(3000, CompressionAlgorithm.LZ4, plen=2 * BS))
    with pytest.raises(CorruptImageError, match="zero padding"):
        decode(bytes(BS), extent(10, CompressionAlgorithm.ZSTD))


def test_lz4_legacy_left_aligned() -> None:
    data = text(6, 9000)
    stream = compress(CompressionAlgorithm.LZ4, data)
    raw = stream + bytes(BS - len(stream))
    assert decode(raw, extent(len(data), CompressionAlgorithm.LZ4), zero_padding=False) == data


def test_raw_extents_shifted_and_interlaced() -> None:
    block = random.Random(9).randbytes(BS)
    assert decode(block, extent(100, None)) == block[:100]
    with pytest.raises(CorruptImageError):
        decode(block[:50], extent(100, None))
    # Interlaced: the extent starting at in-block offset 808 has its byte k at (808 + k) % BS.
    ext = dataclasses.replace(extent(BS, None, logical=5 * BS + 808), interlaced=True)
    data = random.Random(10).randbytes(BS)
    stored = bytearray(BS)
    for k, byte in enumerate(data):
        stored[(808 + k) % BS] = byte
    assert decode(bytes(stored), ext) == data


def test_zstd_huge_declared_content_is_bounded() -> None:
    # 64 MiB of zeros compress to a few KiB; asking for one extent must not materialise it all.
    stream = zstandard.ZstdCompressor(level=1).compress(bytes(64 << 20))
    assert len(stream) < BS
    assert decode(padded(stream), extent(BS, CompressionAlgorithm.ZSTD)) == bytes(BS)


def test_microlzma_bad_properties() -> None:
    stream = bytearray(compress(CompressionAlgorithm.LZMA, text(7, 4000)))
    stream[0] = ~250 & 0xFF  # props >= 9 * 5 * 5
    with pytest.raises(CorruptImageError, match="properties"):
        decode(padded(bytes(stream)), extent(4000, CompressionAlgorithm.LZMA))


def test_deflate_and_lzma_use_their_own_formats() -> None:
    data = text(8, 7000)
    deflated = zlib.compressobj(6, zlib.DEFLATED, -15)
    stream = deflated.compress(data) + deflated.flush()
    assert decode(padded(stream), extent(len(data), CompressionAlgorithm.DEFLATE)) == data
    with pytest.raises(CorruptImageError):  # an xz container is not MicroLZMA
        decode(padded(lzma.compress(data)), extent(len(data), CompressionAlgorithm.LZMA))


@given(st.binary(max_size=5000), st.integers(0, 100))
def test_lz4_partial_decoder_matches_the_library(data: bytes, cut: int) -> None:
    stream = lz4.block.compress(data, store_size=False)
    assert lz4_decode_partial(stream, len(data)) == data
    n = len(data) * cut // 100
    assert lz4_decode_partial(stream, n) == data[:n]


@given(st.binary(max_size=300), st.integers(0, 2000))
def test_lz4_partial_decoder_never_crashes(stream: bytes, size: int) -> None:
    try:
        out = lz4_decode_partial(stream, size)
    except ValueError:
        return
    assert len(out) == size
