"""Zstandard to a fixed output size: one frame holding as long a prefix as fits a pcluster.

libzstd cannot stop at an output size (mkfs.erofs searches too), and python-zstandard cannot
copy a compression context mid-stream, so candidate prefixes are compressed whole: the first
guess is four times the capacity; while no try has failed, the next is what the ratio so far
predicts, while none has fitted, half the last; between a fitting and a failing try, the secant
through their sizes, aimed just below the capacity. The search stops when a stream fills the
capacity to within 1/256, when the interval is narrower than 1/256 of the fitting prefix, or
when no prefix left in the interval could save a block (the extent will be stored raw anyway).
Typically 4 to 5 tries; the streams are plain frames (content size, no checksum) whose window
never exceeds the one the config record announces.
"""

from __future__ import annotations

import threading
from collections.abc import Callable

from ..errors import InvalidInputError
from ..format.constants import CompressionAlgorithm

TOLERANCE_SHIFT = 8  # stop when the interval is within 1/256 of the fitting prefix


def fit_prefix(
    compress: Callable[[bytes], bytes], data: bytes, start: int, end: int, capacity: int, block_size: int
) -> tuple[bytes, int]:
    """(stream, prefix length): a long prefix of data[start:end] whose one-shot stream fits."""
    fits, best = 0, b""  # the longest prefix known to fit, and its stream
    over, over_size = end - start + 1, 0  # the shortest prefix known not to fit (none yet), its size
    slack = capacity >> TOLERANCE_SHIFT
    guess = 4 * capacity
    while True:
        guess = min(max(guess, fits + 1), over - 1)
        stream = compress(data[start : start + guess])
        if len(stream) <= capacity:
            fits, best = guess, stream
        else:
            over, over_size = guess, len(stream)
        if over - fits <= max(1, fits >> TOLERANCE_SHIFT) or len(best) >= capacity - slack:
            break
        # A prefix shorter than `over` whose stream needs the blocks of `best` or more holds no
        # more data than those blocks: it would be stored raw.
        if fits and over - 1 <= -(-len(best) // block_size) * block_size:
            break
        if fits and over_size:  # between two bounds: the secant, aimed just below the capacity
            goal = capacity - slack // 2
            guess = fits + (goal - len(best)) * (over - fits) // max(1, over_size - len(best))
        elif fits:  # no upper bound yet: what the ratio so far predicts
            guess = capacity * fits // max(1, len(best))
        else:
            guess = over // 2
    return best, fits


class ZstdDestSize:
    """Zstandard frames at `level` with a window of 2**window_log; one context per thread."""

    algorithm = CompressionAlgorithm.ZSTD
    max_ratio = 1 << 20  # no useful bound: the extent limit of compress_file applies

    def __init__(self, level: int, window_log: int, block_size: int) -> None:
        try:
            import zstandard
        except ImportError:
            raise InvalidInputError("compressing with zstd needs the Python package zstandard") from None
        self.params = zstandard.ZstdCompressionParameters.from_level(
            level, window_log=window_log, write_content_size=1, write_checksum=0
        )
        self.block_size = block_size
        self.local = threading.local()

    def _compress(self) -> Callable[[bytes], bytes]:
        compress: Callable[[bytes], bytes] | None = getattr(self.local, "compress", None)
        if compress is None:
            import zstandard

            compress = self.local.compress = zstandard.ZstdCompressor(compression_params=self.params).compress
        return compress

    def __call__(self, data: bytes, start: int, end: int, capacity: int) -> tuple[bytes, int]:
        return fit_prefix(self._compress(), data, start, end, capacity, self.block_size)
