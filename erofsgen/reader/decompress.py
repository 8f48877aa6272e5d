"""Turn one pcluster's bytes into its extent: LZ4, MicroLZMA, DEFLATE, Zstandard or raw.

Every decoder is asked for exactly the extent length and never produces more, so a hostile
stream cannot make us allocate beyond the 12 MiB extent limit. A stream that ends early is
corruption (the kernel demands full extents decode completely); a stream that would go on past
the extent is accepted and cut, as the kernel's partial decoding does.
"""

from __future__ import annotations

from typing import Any

from ..errors import CorruptImageError
from ..format.constants import CompressionAlgorithm
from .zmap import Extent

LZMA_DEFAULT_DICT = 8 * 1024 * 1024
ZSTD_MAX_WINDOW = 1 << 23
_LZMA_PROPS_MAX = 9 * 5 * 5


def _fail(ext: Extent, nid: int | None, message: str) -> CorruptImageError:
    return CorruptImageError(
        f"extent [{ext.logical}, +{ext.length}): {message}", nid=nid, offset=ext.physical, area="pcluster"
    )


def skip_zero_padding(raw: bytes, ext: Extent, page: int, nid: int | None) -> bytes:
    """Drop the leading zeros of a right-aligned stream; they may only fill the first page."""
    limit = min(len(raw), page - ext.physical % page)
    stripped = raw.lstrip(b"\0")
    skipped = len(raw) - len(stripped)
    if skipped >= limit:
        raise _fail(ext, nid, "zero padding fills the first block")
    return stripped


def lz4_decode_partial(src: bytes, size: int) -> bytes:
    """Decode an LZ4 block until `size` bytes are produced (LZ4_decompress_safe_partial).

    Used when the stream goes on past the extent, which python-lz4 cannot stop early for.
    Raises ValueError on a malformed or too short stream.
    """
    out = bytearray()
    i, end = 0, len(src)

    def varlen(n: int) -> int:
        nonlocal i
        if n != 15:
            return n
        while True:
            if i >= end:
                raise ValueError("truncated length")
            b = src[i]
            i += 1
            n += b
            if b != 255:
                return n

    while len(out) < size:
        if i >= end:
            raise ValueError("stream ended early")
        token = src[i]
        i += 1
        lit = varlen(token >> 4)
        take = min(lit, size - len(out))
        if i + take > end:
            raise ValueError("truncated literals")
        out += src[i : i + take]
        i += lit
        if len(out) >= size:
            break
        if i + 2 > end:
            raise ValueError("stream ended early")
        dist = src[i] | src[i + 1] << 8
        i += 2
        if not 0 < dist <= len(out):
            raise ValueError(f"bad match offset {dist}")
        mlen = min(varlen(token & 15) + 4, size - len(out))
        while mlen > 0:
            piece = out[len(out) - dist : len(out) - dist + min(mlen, dist)]
            out += piece
            mlen -= len(piece)
    return bytes(out[:size])


# The compression libraries are imported by the decoders that use them, so reading an
# uncompressed image never loads them.


def _codec_errors(alg: CompressionAlgorithm) -> tuple[type[Exception], ...]:
    """The error `alg`'s library raises on a bad stream (importing the library)."""
    if alg == CompressionAlgorithm.LZMA:
        import lzma

        return (lzma.LZMAError,)
    if alg == CompressionAlgorithm.DEFLATE:
        import zlib

        return (zlib.error,)
    if alg == CompressionAlgorithm.ZSTD:
        import zstandard

        return (zstandard.ZstdError,)
    return ()


def _lz4(data: bytes, size: int) -> bytes:
    import lz4.block

    try:
        out: bytes = lz4.block.decompress(data, uncompressed_size=size)
    except lz4.block.LZ4BlockError:
        # Either corrupt or longer than the extent (partial decoding): decode only what we need.
        return lz4_decode_partial(data, size)
    return out


def _lzma(data: bytes, size: int, config: dict[str, Any] | None) -> bytes:
    # MicroLZMA: byte 0 is the inverted lc/lp/pb properties byte; the range coder's first
    # byte (always 0) is omitted. Rebuild a raw LZMA1 stream.
    import lzma

    props = (~data[0]) & 0xFF
    if props >= _LZMA_PROPS_MAX:
        raise ValueError(f"bad MicroLZMA properties {props:#x}")
    lc, rest = props % 9, props // 9
    lp, pb = rest % 5, rest // 5
    dict_size = max(4096, min(LZMA_DEFAULT_DICT, (config or {}).get("dict_size") or LZMA_DEFAULT_DICT))
    filters = [{"id": lzma.FILTER_LZMA1, "dict_size": dict_size, "lc": lc, "lp": lp, "pb": pb}]
    dec = lzma.LZMADecompressor(format=lzma.FORMAT_RAW, filters=filters)
    return dec.decompress(b"\0" + data[1:], max_length=size)


def _deflate(data: bytes, size: int) -> bytes:
    import zlib

    return zlib.decompressobj(-15).decompress(data, size)


def _zstd(data: bytes, size: int) -> bytes:
    import zstandard

    dctx = zstandard.ZstdDecompressor(max_window_size=ZSTD_MAX_WINDOW)
    reader = dctx.stream_reader(data, read_across_frames=False)
    parts = []
    got = 0
    while got < size:
        chunk = reader.read(size - got)
        if not chunk:
            break
        parts.append(chunk)
        got += len(chunk)
    return b"".join(parts)


def decode_raw(raw: bytes, ext: Extent, blksz: int, nid: int | None) -> bytes:
    """A PLAIN extent: shifted (from the pcluster start) or interlaced (rotated in-block)."""
    if len(raw) < ext.length:
        raise _fail(ext, nid, "raw pcluster shorter than its extent")
    if not ext.interlaced:
        return raw[: ext.length]
    # The extent's first block part sits at the same in-block offset in the pcluster's last
    # block (z_erofs_transform_plain); that part may end before the block does (at EOF).
    right = blksz - ext.logical % blksz
    start = len(raw) - right
    cur = min(right, ext.length)
    return raw[start : start + cur] + raw[: ext.length - cur]


def decode_extent(
    raw: bytes,
    ext: Extent,
    *,
    zero_padding: bool,
    blksz: int,
    configs: dict[CompressionAlgorithm, dict[str, Any]],
    nid: int | None = None,
) -> bytes:
    """The `ext.length` bytes of an extent from its pcluster bytes `raw`."""
    if ext.algorithm is None:
        return decode_raw(raw, ext, blksz, nid)
    alg = ext.algorithm
    page = max(blksz, 4096)
    data = raw
    if zero_padding or alg != CompressionAlgorithm.LZ4:
        data = skip_zero_padding(raw, ext, page, nid)
    errors: tuple[type[Exception], ...] = (ValueError, MemoryError, *_codec_errors(alg))
    try:
        if alg == CompressionAlgorithm.LZ4:
            out = _lz4(data, ext.length) if zero_padding else lz4_decode_partial(data, ext.length)
        elif alg == CompressionAlgorithm.LZMA:
            out = _lzma(data, ext.length, configs.get(alg))
        elif alg == CompressionAlgorithm.DEFLATE:
            out = _deflate(data, ext.length)
        else:
            out = _zstd(data, ext.length)
    except errors as exc:
        raise _fail(ext, nid, f"{alg.name} stream does not decode: {exc}") from None
    if len(out) != ext.length:
        raise _fail(ext, nid, f"{alg.name} stream decodes to {len(out)} bytes, expected {ext.length}")
    return out
