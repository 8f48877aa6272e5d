"""Raw DEFLATE to a fixed output size, with zlib: one stream that grows until the pcluster is full.

zlib cannot stop at an output size either, but a compression object can be copied mid-stream:
input is fed in steps, and after each step a copy is finished to learn the size of the stream
that would end there (what zlib already emitted for earlier blocks is final). A step whose
finished stream fits is kept and the next step is sized from the ratio so far; one that does
not is undone (the object is restored from a copy taken before it) and halved. This stops when
the stream is within 1/256 of the capacity, when a step would be under 16 bytes, or when no
longer prefix could save a block. Each step costs compressing its own input once plus finishing
the pending block, so a pcluster costs about one compression of its extent plus a dozen block
flushes, far less than compressing candidate prefixes whole.

A raw stream starting with a non-final stored block begins with a zero byte, which readers
would take for 0PADDING: such an extent is stored raw instead.
"""

from __future__ import annotations

import zlib

from ..format.constants import CompressionAlgorithm

MIN_STEP = 16  # input bytes: below this, another try gains too little to pay for itself
FILLED_SHIFT = 8  # a stream within 1/256 of the capacity is full enough
MEM_LEVEL = 8  # zlib's default; larger states make the copies dearer for no real gain


class DeflateDestSize:
    """zlib's raw deflate (32 KiB window) at `level`, grown step by step up to `capacity`."""

    algorithm = CompressionAlgorithm.DEFLATE
    max_ratio = 1 << 20  # deflate holds up to about 1032:1; the extent limit is lower anyway

    def __init__(self, level: int, block_size: int) -> None:
        self.level = level
        self.block_size = block_size

    def __call__(self, data: bytes, start: int, end: int, capacity: int) -> tuple[bytes, int]:
        encoder = zlib.compressobj(self.level, zlib.DEFLATED, -zlib.MAX_WBITS, MEM_LEVEL)
        emitted: list[bytes] = []  # final output of the steps kept
        emitted_len = 0
        fed = 0
        tail = b""  # how the stream of the kept steps ends
        limit = end - start
        step = capacity // 2  # small: steps are incremental, and raw data then costs little
        while fed < limit and step >= MIN_STEP:
            before = encoder.copy()
            step = min(step, limit - fed)
            out = encoder.compress(data[start + fed : start + fed + step])
            trial = encoder.copy().flush(zlib.Z_FINISH)
            size = emitted_len + len(out) + len(trial)
            if size <= capacity:
                emitted.append(out)
                emitted_len += len(out)
                fed += step
                tail = trial
                if capacity - size <= capacity >> FILLED_SHIFT:
                    break
                step = max(MIN_STEP, (capacity - size) * fed // size * 7 // 8)
                continue
            encoder = before
            if fed and fed + step - 1 <= -(-(emitted_len + len(tail)) // self.block_size) * self.block_size:
                break  # no prefix short of this step could save a block: stored raw anyway
            step //= 2
        stream = b"".join(emitted) + tail
        if not stream or stream[0] == 0:
            return b"", 0
        return stream, fed
