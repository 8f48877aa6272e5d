"""Compressible test data that is the same on every run."""

from __future__ import annotations

import random


def compressible_text(size: int, seed: int = 0, *, vocabulary: int = 64) -> bytes:
    """`size` bytes of numbered lines of two words each, drawn from `vocabulary` random words."""
    rng = random.Random(seed)
    words = [rng.randbytes(rng.randrange(2, 8)).hex().encode() for _ in range(vocabulary)]
    out = bytearray()
    i = 0
    while len(out) < size:
        out += b"%d %s %s\n" % (i, rng.choice(words), rng.choice(words))
        i += 1
    return bytes(out[:size])
