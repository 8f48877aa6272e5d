"""Reader fuzz: damaged images may only raise erofsgen errors, in bounded time and memory.

Small mkfs.erofs images (plain, compacted LZ4HC with big pclusters and tail packing, full-index
LZ4, chunked) and a hand-built compressed image get bytes flipped, overwritten or cut; a full
walk, stat, bounded read, readlink and xattrs pass over the whole tree must end either normally
or with an ErofsgenError subclass.
"""

from __future__ import annotations

import contextlib
import io
import os
import time
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import erofsgen
from erofsgen.errors import ErofsgenError
from erofsgen.format.constants import DataLayout, FileType
from tests.support.erofs_utils import find_erofs_utils
from tests.test_reader_zmap import build_image, standard_extents

MKFS_VARIANTS = {
    "plain": [],
    "lz4hc_compact": ["-zlz4hc", "-C16384", "-Eztailpacking"],
    "lz4_full": ["-zlz4", "-Elegacy-compress"],
    "chunked": ["--chunksize=8192"],
}
READ_CAP = 256 * 1024  # bytes read per file: a legitimately huge sparse file must not stall us
TIME_LIMIT = 20.0  # seconds for one exercise pass (generous: two shared cores)


def _small_tree(root: Path) -> None:
    root.mkdir()
    (root / "empty").write_bytes(b"")
    (root / "small").write_bytes(b"hello world\n" * 9)
    (root / "text").write_bytes(b"".join(b"line %05d of some text\n" % i for i in range(3000)))
    (root / "random").write_bytes(os.urandom(9000))
    sub = root / "dir"
    sub.mkdir()
    for i in range(60):
        (sub / f"entry_{i:03d}_{'x' * (i % 17)}").write_bytes(b"%d" % i)
    os.symlink("text", root / "link")
    os.symlink("d" * 300, sub / "longlink")
    os.mkfifo(root / "fifo")
    os.link(root / "small", sub / "hard")
    for name in ("small", "text", "random"):
        os.setxattr(root / name, "user.shared", b"same on three files")
    os.setxattr(root / "text", "user.own", b"v" * 100)


@pytest.fixture(scope="module")
def seed_images(tmp_path_factory: pytest.TempPathFactory) -> dict[str, bytes]:
    images = {
        "handmade_compact": build_image(standard_extents(), layout=DataLayout.COMPRESSED_COMPACT, big=True)
    }
    utils = find_erofs_utils()
    if utils is None:
        return images
    tmp = tmp_path_factory.mktemp("fuzz")
    src = tmp / "src"
    _small_tree(src)
    for name, opts in MKFS_VARIANTS.items():
        image = tmp / name
        utils.mkfs(image, src, "--quiet", "-T1000", *opts)
        images[name] = image.read_bytes()
    return images


def exercise(image: bytes, *, handmade: bool = False) -> int:
    """Touch everything reachable; returns how many operations failed with an erofsgen error."""
    failures = 0
    with erofsgen.open_image(io.BytesIO(image), strict_checksum=False) as img:
        if handmade:  # one compressed inode at nid 48, no directory tree
            img.stat_nid(48)
            img.data_nid(48).read(0, READ_CAP)
            return 0
        try:
            for dirpath, dirnames, filenames in img.walk():
                for name in dirnames + filenames:
                    failures += _touch(img, f"{dirpath.rstrip('/')}/{name}")
        except ErofsgenError:
            failures += 1
    return failures


def _touch(img: erofsgen.Image, path: str) -> int:
    failures = 0
    for op in (img.stat, img.xattrs):
        try:
            op(path)
        except ErofsgenError:
            failures += 1
    try:
        st = img.stat(path)
        if st.type == FileType.SYMLINK:
            img.readlink(path)
        elif st.type == FileType.REG_FILE:
            with img.open(path) as f:
                f.read(READ_CAP)
                f.seek(st.size // 2)
                f.read(5000)
    except ErofsgenError:
        failures += 1
    return failures


def test_seed_images_read_cleanly(seed_images: dict[str, bytes]) -> None:
    for name, image in seed_images.items():
        assert exercise(image, handmade=name.startswith("handmade")) == 0, name


mutation = st.one_of(
    st.tuples(st.just("flip"), st.integers(0, 1 << 20), st.integers(1, 255)),
    st.tuples(st.just("set"), st.integers(0, 1 << 20), st.sampled_from([0x00, 0xFF, 0x7F, 0x80, 0x01])),
    st.tuples(st.just("cut"), st.integers(0, 1 << 20), st.just(0)),
    st.tuples(
        st.just("word"),
        st.integers(0, 1 << 20),
        st.sampled_from([0, 1, 0x7FFF, 0xFFFF, 0x7FFFFFFF, 0xFFFFFFFF]),
    ),
)


def mutate(image: bytes, mutations: list[tuple[str, int, int]], meta_bias: bool) -> bytes:
    data = bytearray(image)
    for kind, where, value in mutations:
        # Most interesting bytes are metadata near the start: bias offsets there half the time.
        span = min(len(data), 16384) if meta_bias else len(data)
        if not data:
            break
        pos = where % span
        if kind == "cut":
            del data[pos:]
        elif kind == "flip":
            data[pos] ^= value
        elif kind == "word":  # an extreme 16/32-bit field value at an even offset
            pos &= ~1
            data[pos : pos + 4] = value.to_bytes(4, "little")[: len(data) - pos]
        else:
            data[pos] = value
    return bytes(data)


@pytest.mark.slow
@settings(max_examples=400, suppress_health_check=[HealthCheck.too_slow], deadline=None)
@given(
    name=st.sampled_from(["handmade_compact", *MKFS_VARIANTS]),
    mutations=st.lists(mutation, min_size=1, max_size=6),
    meta_bias=st.booleans(),
)
def test_damaged_images_raise_only_erofsgen_errors(
    seed_images: dict[str, bytes], name: str, mutations: list[tuple[str, int, int]], meta_bias: bool
) -> None:
    if name not in seed_images:
        pytest.skip("erofs-utils not installed")
    image = mutate(seed_images[name], mutations, meta_bias)
    started = time.monotonic()
    with contextlib.suppress(ErofsgenError):
        exercise(image, handmade=name.startswith("handmade"))
    assert time.monotonic() - started < TIME_LIMIT
