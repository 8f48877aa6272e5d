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


def pieced_data(pieces: list[tuple[str, int, int]]) -> bytes:
    """Pieces (kind, length, seed) joined: "text" compresses, "noise" does not, else one byte repeated."""
    return b"".join(
        compressible_text(n, seed)
        if kind == "text"
        else random.Random(seed).randbytes(n)
        if kind == "noise"
        else bytes([seed]) * n
        for kind, n, seed in pieces
    )
