"""Throughput of the fs-verity digest next to plain hashlib.sha256 over the same bytes.

Usage: python3 tools/bench_verity.py [MiB]   (default 256 MiB of pseudo-random data, in memory)
"""

from __future__ import annotations

import hashlib
import os
import sys
import time

from erofsgen.verity import FsVerityHasher


def main() -> None:
    mib = int(sys.argv[1]) if len(sys.argv) > 1 else 256
    piece = os.urandom(1 << 20)
    for name, make in (("hashlib.sha256", hashlib.sha256), ("fs-verity", FsVerityHasher)):
        hasher = make()
        start = time.perf_counter()
        for _ in range(mib):
            hasher.update(piece)
        hasher.digest()
        elapsed = time.perf_counter() - start
        print(f"{name:15} {mib * 1.048576 / elapsed:8.0f} MB/s")


if __name__ == "__main__":
    main()
