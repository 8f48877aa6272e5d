"""Throughput of the fs-verity digest next to plain hashlib.sha256 over the same bytes.

Usage: python3 tools/bench_verity.py [MiB]   (default 256 MiB of pseudo-random data, in memory)
"""

from __future__ import annotations

import hashlib
import os
import sys
import time
from collections.abc import Callable, Iterable

from erofsgen.verity import FsVerityHasher

# (name, hasher factory): what is compared, hashlib first.
HASHERS: tuple[tuple[str, Callable[[], object]], ...] = (
    ("hashlib.sha256", hashlib.sha256),
    ("fs-verity", FsVerityHasher),
)


def throughput(pieces: Callable[[], Iterable[bytes]], passes: int = 3) -> list[tuple[str, float]]:
    """(name, MB/s) of each hasher over the bytes `pieces()` yields: the best of `passes`, the
    hashers taking turns (so a busy moment does not fall on one of them only)."""
    best = dict.fromkeys((name for name, _ in HASHERS), 0.0)
    for _ in range(passes):
        for name, make in HASHERS:
            hasher = make()
            total = 0
            start = time.perf_counter()
            for piece in pieces():
                hasher.update(piece)  # type: ignore[attr-defined]
                total += len(piece)
            hasher.digest()  # type: ignore[attr-defined]
            best[name] = max(best[name], total / 1e6 / (time.perf_counter() - start))
    return list(best.items())


def in_memory(mib: int) -> list[tuple[str, float]]:
    """Throughput over `mib` MiB of one random MiB repeated."""
    piece = os.urandom(1 << 20)
    return throughput(lambda: (piece for _ in range(mib)))


def main() -> None:
    mib = int(sys.argv[1]) if len(sys.argv) > 1 else 256
    for name, rate in in_memory(mib):
        print(f"{name:15} {rate:8.0f} MB/s")


if __name__ == "__main__":
    main()
