"""The compression algorithms the writer offers: names, levels, config records, encoders.

One entry per `-z` name. The config record (COMPR_CFGS) and the encoder of an algorithm are
made here from the same numbers (dictionary or window size), so the image never announces less
than its streams use. Encoders are imported only when asked for: an image without compression
needs no compression library.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from ..errors import InvalidInputError
from ..format.constants import CompressionAlgorithm
from ..format.zmap import DeflateConfig, Lz4Config, LzmaConfig, ZstdConfig

if TYPE_CHECKING:
    from .lz4dest import DestSizeCompressor

# Extents stay within this many lclusters: NONHEAD deltas then stay far below CBLKCNT (2048).
MAX_EXTENT_LCLUSTERS = 1024
ZSTD_MAX_WINDOW = 1 << 20  # Z_EROFS_ZSTD_MAX_DICT_SIZE: windowlog - 10 must be at most 10
LZMA_MAX_DICT = 8 << 20  # Z_EROFS_LZMA_MAX_DICT_SIZE
LZMA_MIN_DICT = 4096  # the kernel refuses smaller dictionaries
DEFLATE_WINDOW_BITS = 15  # raw deflate with zlib's largest window, as every kernel decodes
EXTREME = 100  # lzma level 100 + N: preset N with LZMA_PRESET_EXTREME, mkfs.erofs's spelling


@dataclass(frozen=True, slots=True)
class Codec:
    name: str  # as given to -z
    algorithm: CompressionAlgorithm
    levels: tuple[int, int] | None  # the valid range; None: takes no level
    default_level: int | None
    extreme: bool = False  # 100 + each level is that level's extreme preset (lzma, as mkfs.erofs)


CODECS: dict[str, Codec] = {
    c.name: c
    for c in (
        # Linux mounts lz4 from 5.3, lzma from 5.16, deflate from 6.6, zstd from 6.10.
        Codec("lz4", CompressionAlgorithm.LZ4, None, None),
        Codec("lz4hc", CompressionAlgorithm.LZ4, (0, 12), 9),  # LZ4HC_CLEVEL_DEFAULT
        Codec("zstd", CompressionAlgorithm.ZSTD, (1, 22), 3),  # ZSTD_CLEVEL_DEFAULT
        Codec("deflate", CompressionAlgorithm.DEFLATE, (0, 9), 6),  # zlib's default level
        Codec("lzma", CompressionAlgorithm.LZMA, (0, 9), 6, extreme=True),  # LZMA_PRESET_DEFAULT
    )
}


def codec(name: str) -> Codec:
    try:
        return CODECS[name]
    except KeyError:
        known = ", ".join(CODECS)
        raise InvalidInputError(f"compression algorithm {name!r} is not supported (only {known})") from None


def check_level(name: str, level: int | None) -> None:
    entry = codec(name)
    if level is None:
        return
    if entry.levels is None:
        raise InvalidInputError(f"compression level {level} is not valid for {name} ({name} takes no level)")
    low, high = entry.levels
    if low <= level <= high or (entry.extreme and low + EXTREME <= level <= high + EXTREME):
        return
    extreme = f", or {low + EXTREME} to {high + EXTREME} for extreme presets" if entry.extreme else ""
    raise InvalidInputError(f"compression level {level} is not valid for {name} ({low} to {high}{extreme})")


def max_extent(block_size: int) -> int:
    return MAX_EXTENT_LCLUSTERS * block_size


def zstd_window_log(pcluster_size: int) -> int:
    """As mkfs.erofs: eight pclusters of history, at most 1 MiB, a power of two."""
    return min(ZSTD_MAX_WINDOW, pcluster_size << 3).bit_length() - 1


def lzma_dict_size(block_size: int) -> int:
    """A dictionary as long as the longest extent: every match within an extent stays possible,
    and the kernel allocates no more than that per decompression stream."""
    return min(LZMA_MAX_DICT, max(LZMA_MIN_DICT, max_extent(block_size)))


def config_record(name: str, pcluster_size: int, block_size: int) -> bytes:
    """The algorithm's COMPR_CFGS record (u16 length, payload); b"" where the image needs none:
    LZ4 with one-block pclusters keeps its settings in the superblock instead."""
    from .lz4dest import LZ4_MAX_DISTANCE

    algorithm = codec(name).algorithm
    if algorithm == CompressionAlgorithm.LZ4:
        if pcluster_size <= block_size:
            return b""
        record: bytes = Lz4Config.build(
            {
                "max_distance": LZ4_MAX_DISTANCE,
                "max_pclusterblks": pcluster_size // block_size,
                "reserved": bytes(10),
            }
        )
    elif algorithm == CompressionAlgorithm.LZMA:
        record = LzmaConfig.build(
            {"dict_size": lzma_dict_size(block_size), "format": 0, "reserved": bytes(8)}
        )
    elif algorithm == CompressionAlgorithm.DEFLATE:
        record = DeflateConfig.build({"windowbits": DEFLATE_WINDOW_BITS, "reserved": bytes(5)})
    else:
        window_log = zstd_window_log(pcluster_size)
        record = ZstdConfig.build({"format": 0, "windowlog": window_log - 10, "reserved": bytes(4)})
    return len(record).to_bytes(2, "little") + record


class RawProbe:
    """Big pclusters: first see whether a two-block stream holds more than two blocks of data.

    Where it does not, the extent is stored raw and the next one starts a block later, so an
    encoder that fills the whole pcluster would spend a pcluster's work on each block of
    incompressible data (16 times over with 64 KiB pclusters). Raw data costs the same in a
    stream or beside it, so answering with the probe loses next to nothing.
    """

    PROBE_BLOCKS = 2

    def __init__(self, inner: DestSizeCompressor, block_size: int) -> None:
        self.inner = inner
        self.algorithm = inner.algorithm
        self.max_ratio = inner.max_ratio
        self.block_size = block_size

    def __call__(self, data: bytes, start: int, end: int, capacity: int) -> tuple[bytes, int]:
        probe = self.PROBE_BLOCKS * self.block_size
        if capacity > probe:
            stream, used = self.inner(data, start, end, probe)
            if used <= -(-len(stream) // self.block_size) * self.block_size:
                return stream, used
        return self.inner(data, start, end, capacity)


def dest_size_compressor(
    name: str, level: int | None, pcluster_size: int, block_size: int
) -> DestSizeCompressor:
    """The fixed-output encoder of `name` at `level` (None: its default)."""
    entry = codec(name)
    check_level(name, level)
    if entry.algorithm == CompressionAlgorithm.LZ4:
        from .lz4dest import dest_size_compressor as lz4_compressor

        return lz4_compressor(name, level)
    chosen = entry.default_level if level is None else level
    assert chosen is not None
    if entry.algorithm == CompressionAlgorithm.ZSTD:
        from .zstddest import ZstdDestSize

        return ZstdDestSize(chosen, zstd_window_log(pcluster_size), block_size)
    if entry.algorithm == CompressionAlgorithm.DEFLATE:
        from .deflatedest import DeflateDestSize

        return RawProbe(DeflateDestSize(chosen, block_size), block_size)
    from .lzmadest import microlzma_compressor

    return RawProbe(microlzma_compressor(chosen, lzma_dict_size(block_size)), block_size)
