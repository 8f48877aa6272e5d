"""fs-verity digests: published vectors, streaming in arbitrary pieces, and a reference model."""

from __future__ import annotations

import hashlib
import os
import struct
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from erofsgen.verity import FsVerityHasher, fsverity_digest, fsverity_digest_path

VECTORS = [
    (b"", "3d248ca542a24fc62d1c43b916eae5016878e2533c88238480b26128a1f1af95"),
    (b"hello world", "1e2eaa4202d750a41174ee454970b92c1bc2f925b1e35076d8c7d5f56362ba64"),
    (bytes(4096), "babc284ee4ffe7f449377fbf6692715b43aec7bc39c094a95878904d34bac97e"),
    (bytes(4097), "093756e4ea9683329106d4a16982682ed182c14bf076463a9e7f97305cbac743"),
    (bytes(65536), "011e3f2b1dc89b75d78cddcc2a1b85cd8a64b2883e5f20f277ae4c0617e0404f"),
    (b"\x5a" * (1 << 20), "440c7ed9c59331fd66705cab9201eb74a062a3a5b95839d597f0d459f9dce3b3"),
    (bytes(129 * 4096), "2331d9bc1bfa1c8c1a2272b1bc04acca57ec879136c554d313b45b77b94f326e"),
]


def reference_digest(data: bytes, block: int = 4096) -> bytes:
    """The textbook construction: whole levels in memory, hashed until one hash is left."""
    if not data:
        root = bytes(32)
    else:
        level = data
        while True:
            blocks = [level[i : i + block].ljust(block, b"\0") for i in range(0, len(level), block)]
            hashes = b"".join(hashlib.sha256(b).digest() for b in blocks)
            if len(hashes) == 32:
                root = hashes
                break
            level = hashes
    desc = struct.pack("<BBBBIQ", 1, 1, 12, 0, 0, len(data)) + root.ljust(64, b"\0") + bytes(176)
    assert len(desc) == 256
    return hashlib.sha256(desc).digest()


@pytest.mark.parametrize(("data", "expected"), VECTORS, ids=[str(len(v[0])) for v in VECTORS])
def test_published_vectors(data: bytes, expected: str) -> None:
    assert fsverity_digest(data).hex() == expected
    assert reference_digest(data).hex() == expected


def test_hundred_million_zero_bytes_streamed() -> None:
    """Three tree levels, fed in 1 MiB pieces."""
    hasher = FsVerityHasher()
    piece = bytes(1 << 20)
    total = 100_000_000
    while hasher.size + len(piece) <= total:
        hasher.update(piece)
    hasher.update(bytes(total - hasher.size))
    assert hasher.hexdigest() == "daa98efd6db91be7205bf4793c60d61056ced85d5cc6a280bb3b6a1be715bdb8"


def test_file_digest(tmp_path: Path) -> None:
    data = os.urandom(3 * 4096 + 17)
    path = tmp_path / "f"
    path.write_bytes(data)
    assert fsverity_digest_path(path) == reference_digest(data)


def test_digest_does_not_end_hashing() -> None:
    hasher = FsVerityHasher(b"a" * 5000)
    first = hasher.digest()
    hasher.update(b"b" * 5000)
    assert first == reference_digest(b"a" * 5000)
    assert hasher.digest() == reference_digest(b"a" * 5000 + b"b" * 5000)


@st.composite
def split_data(draw: st.DrawFn) -> tuple[bytes, list[int]]:
    # Sizes around block and tree-block edges (128 leaves per tree block).
    size = draw(
        st.one_of(
            st.integers(0, 9000),
            st.sampled_from([128 * 4096, 128 * 4096 + 1, 129 * 4096 - 1, 128 * 128 * 4096 + 5]),
        )
    )
    seed = draw(st.integers(0, 255))
    data = bytes((seed + i * 7) & 0xFF for i in range(min(size, 4096))) * (size // 4096 + 1)
    cuts = sorted(draw(st.lists(st.integers(0, size), max_size=5)))
    return data[:size], cuts


@settings(max_examples=60, deadline=None)
@given(split_data())
def test_matches_reference_in_any_pieces(case: tuple[bytes, list[int]]) -> None:
    data, cuts = case
    hasher = FsVerityHasher()
    last = 0
    for cut in [*cuts, len(data)]:
        hasher.update(data[last:cut])
        last = cut
    assert hasher.size == len(data)
    assert hasher.digest() == reference_digest(data)
