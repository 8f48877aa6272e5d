"""Compressed images with fragments (the packed inode), all-fragments and dedupe, from mkfs 1.9.

The vectors in specs/vectors/images/mkfs-1.9 were written by erofs-utils 1.9.3 from one tree,
described by its MANIFEST (path, mode, size, sha256); see the README there. Every reader path
(read, extract, check, dump) and the kernel must give that tree; damaged packed inodes and
fragment offsets must be refused as corruption, naming where.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import stat
import time
from collections import Counter
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from erofsgen import open_image
from erofsgen.errors import CorruptImageError, ErofsgenError
from erofsgen.format.constants import EROFS_SUPER_OFFSET, LclusterType, MapAdvise
from erofsgen.format.superblock import CHECKSUM_OFFSET, SUPERBLOCK, checksum_length, sb_checksum
from erofsgen.reader import Image
from erofsgen.reader import check as check_module
from erofsgen.reader import data as data_module
from erofsgen.reader.check import check_image
from erofsgen.reader.decompress import decode_raw
from erofsgen.reader.dump import PACKED_INODE_PATH, Structure, iter_image, rebuild_check
from erofsgen.reader.zmap import Extent
from tests.support.kernel import MountImage
from tests.test_reader_fuzz import TIME_LIMIT, exercise, mutate, mutation

VECTORS = Path(__file__).resolve().parent.parent / "specs" / "vectors" / "images" / "mkfs-1.9"
IMAGES = sorted(VECTORS.glob("*.erofs"))
IDS = [p.stem for p in IMAGES]
BLOCK = 4096


def _manifest() -> list[str]:
    return (VECTORS / "MANIFEST").read_text().splitlines()


def _line(rel: str, mode: int, data: bytes | None) -> str:
    size, digest = ("-", "-") if data is None else (str(len(data)), hashlib.sha256(data).hexdigest())
    return f"{rel} {mode:o} {size} {digest}"


def image_manifest(img: Image) -> list[str]:
    """The MANIFEST lines of an image's tree, read through the Image API."""
    lines = []
    for rel in [line.split()[0] for line in _manifest()]:
        st = img.stat(rel)
        if stat.S_ISDIR(st.mode):
            data = None
        elif stat.S_ISLNK(st.mode):
            data = os.fsencode(img.readlink(rel))
        else:
            with img.open(rel) as f:
                data = f.read()
        lines.append(_line(rel, st.mode, data))
    return lines


def tree_manifest(root: Path) -> list[str]:
    """The MANIFEST lines of a directory tree on disk (every entry, sorted by path)."""
    lines = []
    for path in sorted([root, *root.rglob("*")]):
        rel = "/" + path.relative_to(root).as_posix() if path != root else "/"
        st = path.lstat()
        if stat.S_ISLNK(st.st_mode):
            data: bytes | None = os.fsencode(os.readlink(path))
        elif stat.S_ISDIR(st.st_mode):
            data = None
        else:
            data = path.read_bytes()
        lines.append(_line(rel, st.st_mode, data))
    return lines


def test_vectors_are_small_and_cover_the_features() -> None:
    assert len(IMAGES) >= 6
    assert sum(p.stat().st_size for p in IMAGES) < 1 << 20
    seen: Counter[str] = Counter()
    for path in IMAGES:
        with open_image(path) as img:
            pclusters: Counter[int] = Counter()
            for line in _manifest():
                rel = line.split()[0]
                info = img.inode(img.lookup(rel))
                if not info.compressed or not info.size:
                    continue
                zmap = img.data_nid(info.nid).zmap
                assert zmap is not None
                seen["whole-file fragment"] += zmap.whole_fragment
                seen["full-index fragment"] += bool(
                    zmap.advise & MapAdvise.FRAGMENT_PCLUSTER and not zmap.whole_fragment and info.layout == 1
                )
                for ext in zmap.extents():
                    seen["tail fragment"] += ext.fragment and ext.logical > 0
                    seen["partial ref"] += ext.partial_ref
                    if not ext.fragment:
                        pclusters[ext.physical] += 1
            seen["shared pcluster"] += sum(1 for n in pclusters.values() if n > 1)
    features = (
        "whole-file fragment",
        "full-index fragment",
        "tail fragment",
        "partial ref",
        "shared pcluster",
    )
    for feature in features:
        assert seen[feature], feature


@pytest.mark.parametrize("path", IMAGES, ids=IDS)
def test_read_matches_manifest(path: Path) -> None:
    with open_image(path) as img:
        assert image_manifest(img) == _manifest()


@pytest.mark.parametrize("path", IMAGES, ids=IDS)
def test_random_access_reads(path: Path) -> None:
    """Reads starting and ending anywhere (inside fragments too) agree with the whole file."""
    with open_image(path) as img:
        for rel in ("/text/b.txt", "/text/a.txt", "/bin/random.bin", "/repeat.txt", "/small/s5.txt"):
            with img.open(rel) as f:
                whole = f.read()
                for start, length in ((0, 1), (5000, 9000), (len(whole) - 7, 100), (4095, 4097), (1, 65536)):
                    f.seek(start)
                    assert f.read(length) == whole[start : start + length], (rel, start, length)


@pytest.mark.parametrize("path", IMAGES, ids=IDS)
def test_check_reports_nothing(path: Path) -> None:
    with open_image(path) as img:
        assert [str(p) for p in check_image(img, data=True)] == []


@pytest.mark.parametrize("path", IMAGES, ids=IDS)
def test_extract_gives_the_tree(path: Path, tmp_path: Path) -> None:
    dest = tmp_path / "out"
    with open_image(path) as img:
        img.extract(dest)
    assert tree_manifest(dest) == _manifest()


@pytest.mark.parametrize("path", IMAGES, ids=IDS)
def test_dump_shows_the_packed_inode(path: Path) -> None:
    with open_image(path) as img:
        items = list(iter_image(img))
        packed = img.superblock.packed_nid
        assert not [i for i in items if not isinstance(i, Structure)]
        fragments = [i for i in items if isinstance(i, Structure) and i.kind == "fragment"]
        if not packed:  # dedupe only: no packed inode, no fragments
            assert not fragments
            return
        cores = [
            i for i in items if isinstance(i, Structure) and i.kind.startswith("inode (") and i.nid == packed
        ]
        assert [c.path for c in cores] == [PACKED_INODE_PATH]
        assert fragments and all(f"nid {packed}" in f.location for f in fragments)
        assert not rebuild_check(img).failures


@pytest.mark.parametrize("path", IMAGES, ids=IDS)
def test_kernel_reads_the_manifest(path: Path, kernel_mount: MountImage) -> None:
    with kernel_mount(path) as mnt:
        assert tree_manifest(mnt) == _manifest()


# -- corrupt variants ---------------------------------------------------------------------


def _patched(src: Path, dest: Path, at: int, data: bytes) -> Path:
    """A copy of `src` with `data` written at `at`; the superblock checksum (which covers the
    inodes in block 0) is made valid again, so only the change itself is wrong."""
    raw = bytearray(src.read_bytes())
    raw[at : at + len(data)] = data
    end = EROFS_SUPER_OFFSET + checksum_length(BLOCK)
    raw[CHECKSUM_OFFSET : CHECKSUM_OFFSET + 4] = sb_checksum(raw[:end], BLOCK).to_bytes(4, "little")
    dest.write_bytes(raw)
    return dest


def _with_superblock_field(src: Path, dest: Path, name: str, value: int) -> Path:
    """A copy of `src` whose 8-byte superblock field `name` is `value`."""
    pos = EROFS_SUPER_OFFSET
    for sub in SUPERBLOCK.schema.subcons:
        if sub.name == name:
            break
        pos += sub.sizeof()
    else:
        raise KeyError(name)
    return _patched(src, dest, pos, value.to_bytes(8, "little"))


def _read_all(path: Path) -> None:
    with open_image(path) as img:
        for line in _manifest():
            rel, mode = line.split()[:2]
            if stat.S_ISREG(int(mode, 8)):
                with img.open(rel) as f:
                    f.read()


@pytest.mark.parametrize(
    ("nid", "words"),
    [(36, "not a regular file"), (1 << 40, "packed_nid"), (0, "no packed inode")],
    ids=["directory", "beyond-image", "zero"],
)
def test_bad_packed_nid_is_corruption(tmp_path: Path, nid: int, words: str) -> None:
    bad = _with_superblock_field(VECTORS / "frag-lz4hc.erofs", tmp_path / "bad.erofs", "packed_nid", nid)
    with pytest.raises(CorruptImageError, match=words):
        _read_all(bad)
    with open_image(bad) as img:
        assert check_image(img, data=True)


def _whole_fragment_header(img: Image, rel: str) -> tuple[int, int]:
    """(map header offset, fragment offset) of a file stored whole in the packed inode."""
    info = img.inode(img.lookup(rel))
    zmap = img.data_nid(info.nid).zmap
    assert zmap is not None and zmap.whole_fragment and info.map_header_offset is not None
    return info.map_header_offset, zmap.fragment_offset


def test_whole_fragment_past_the_packed_inode(tmp_path: Path) -> None:
    src = VECTORS / "allfrag-lz4hc.erofs"
    with open_image(src) as img:
        header, _ = _whole_fragment_header(img, "/text/b.txt")
        packed_size = img.inode(img.superblock.packed_nid).size
        nid = img.lookup("/text/b.txt")
    bad_offset = packed_size - 100  # the 17288-byte file would run past the end
    bad = _patched(src, tmp_path / "bad.erofs", header, (bad_offset | 1 << 63).to_bytes(8, "little"))
    with open_image(bad) as img:
        with pytest.raises(CorruptImageError, match=f"nid {nid}.*offset {bad_offset:#x}") as exc:
            img.open("/text/b.txt").read()
        assert exc.value.nid == nid and exc.value.offset == bad_offset
        assert img.open("/text/a.txt").read() == (img.open("/text/copy.txt").read())
        problems = [p for p in check_image(img, data=True) if p.nid == nid]
        assert len(problems) == 1 and problems[0].area == "fragment" and problems[0].offset == bad_offset


def test_tail_fragment_past_the_packed_inode(tmp_path: Path) -> None:
    src = VECTORS / "frag-lz4hc.erofs"
    with open_image(src) as img:
        nid = img.lookup("/text/a.txt")
        info = img.inode(nid)
        zmap = img.data_nid(nid).zmap
        assert zmap is not None and zmap.advise & MapAdvise.FRAGMENT_PCLUSTER and not zmap.whole_fragment
        assert info.layout == 3 and info.map_header_offset is not None  # compact: 32-bit offset
        header = info.map_header_offset
    bad_offset = 0xFFFF0000
    bad = _patched(src, tmp_path / "bad.erofs", header, bad_offset.to_bytes(4, "little"))
    with open_image(bad) as img:
        with img.open("/text/a.txt") as f:
            assert len(f.read(4096)) == 4096  # the compressed head is intact
            with pytest.raises(CorruptImageError, match=f"offset {bad_offset:#x}") as exc:
                f.read()
        assert exc.value.nid == nid


def test_fragment_in_the_packed_inode_itself(tmp_path: Path) -> None:
    """A packed inode pointing at itself must not recurse: it is corruption."""
    src = VECTORS / "allfrag-lz4hc.erofs"
    with open_image(src) as img:
        packed = img.superblock.packed_nid
        header = img.inode(packed).map_header_offset
        assert header is not None
    bad = _patched(src, tmp_path / "bad.erofs", header, (1 << 63).to_bytes(8, "little"))
    with pytest.raises(CorruptImageError, match="packed inode itself"):
        _read_all(bad)


@pytest.mark.parametrize(("logical", "length"), [(BLOCK + 1390, 2524), (1390, 2706), (1390, 4096), (0, 100)])
def test_interlaced_raw_extent(logical: int, length: int) -> None:
    """Raw interlaced data: the first part sits at logical % BS of the pcluster's last block,
    also when the extent ends before that block does (an EOF extent, as in packed inodes)."""
    raw = bytes(range(256)) * (2 * BLOCK // 256)  # a two-block pcluster
    ext = Extent(logical, length, 0, len(raw), 0, LclusterType.PLAIN, None, True, False, False)
    skip = len(raw) - BLOCK + logical % BLOCK
    first = min(BLOCK - logical % BLOCK, length)
    assert decode_raw(raw, ext, BLOCK, None) == raw[skip : skip + first] + raw[: length - first]


@pytest.mark.slow
@settings(max_examples=200, suppress_health_check=[HealthCheck.too_slow], deadline=None)
@given(
    index=st.integers(0, len(IMAGES) - 1),
    mutations=st.lists(mutation, min_size=1, max_size=6),
    meta_bias=st.booleans(),
)
def test_damaged_vectors_raise_only_erofsgen_errors(
    index: int, mutations: list[tuple[str, int, int]], meta_bias: bool
) -> None:
    """Damage to packed inodes, fragment headers and shared pclusters stays an erofsgen error."""
    image = mutate(IMAGES[index].read_bytes(), mutations, meta_bias)
    started = time.monotonic()
    with contextlib.suppress(ErofsgenError):
        exercise(image)
    assert time.monotonic() - started < TIME_LIMIT


def test_extract_in_parallel_and_in_small_pieces(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Fragments longer than one copy piece are read piece by piece (here: pieces of 1000 bytes)."""
    monkeypatch.setattr(data_module, "COPY_PIECE", 1000)
    monkeypatch.setattr(check_module, "_PIECE", 1000)
    for path in IMAGES:
        dest = tmp_path / path.stem
        with open_image(path) as img:
            assert image_manifest(img) == _manifest()
            assert check_image(img, data=True) == []
            img.extract(dest, parallel=True)
        assert tree_manifest(dest) == _manifest()
