"""ztailpacking, extent limits and incompressible data in the compressed writer.

Every image is read back by our reader, fsck.erofs 1.5 (which knows ztailpacking) and the
kernel; the index itself is inspected through the reader's ZMap.
"""

from __future__ import annotations

import random
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from erofsgen import open_image
from erofsgen.cli import main as cli_main
from erofsgen.errors import InvalidInputError
from erofsgen.format.constants import DataLayout, FeatureIncompat, LclusterType, MapAdvise
from erofsgen.model import BytesData, Directory, File, Metadata
from erofsgen.reader.zmap import Extent, ZMap
from erofsgen.writer import WriteOptions, write_image
from tests.support.erofs_utils import ErofsUtils
from tests.support.kernel import MountImage
from tests.support.scenario import build_scenario_tree
from tests.support.textdata import compressible_text as _text
from tests.support.textdata import pieced_data

BS = 4096
MiB = 1 << 20
COMPRESSED = (DataLayout.COMPRESSED_FULL, DataLayout.COMPRESSED_COMPACT)


def _files() -> dict[str, bytes]:
    rng = random.Random(11)
    return {
        "one": b"x",
        "tiny": _text(200, 1),
        "small": _text(3000, 2),
        "block": _text(BS, 3),
        "block_plus_one": _text(BS + 1, 4),
        "two_blocks_minus_one": _text(2 * BS - 1, 5),
        "text": _text(300_000, 6),
        "random": rng.randbytes(50_000),
        "random_tail": _text(100_000, 7) + rng.randbytes(3000),
        "text_tail": rng.randbytes(3 * BS) + _text(1500, 8),
        "zeros": bytes(3 * MiB),
        "mixed": rng.randbytes(10_000) + b"z" * 50_000 + rng.randbytes(5_000) + _text(20_000, 9),
        # 3000+ lclusters: its compacted index alone outgrows a block, so its tail cannot be
        # inline and goes to a block of its own.
        "huge_index": _text(13 * MiB, 10),
    }


def _zmap(image: Path, name: str) -> tuple[DataLayout, MapAdvise, list[Extent]]:
    """A file's layout and, when it is compressed, its map advise and extents (else 0, [])."""
    with open_image(image) as img:
        info = img.inode(img.lookup(name))
        if info.layout not in COMPRESSED:
            return info.layout, MapAdvise(0), []
        zmap = ZMap(img.storage, img.superblock, info)
        return info.layout, zmap.advise, zmap.extents()


def _extents(image: Path, name: str) -> list[Extent]:
    layout, _advise, extents = _zmap(image, name)
    assert layout in COMPRESSED, name
    return extents


def _check_everywhere(
    image: Path, files: dict[str, bytes], tmp: Path, erofs_utils: ErofsUtils, kernel_mount: MountImage
) -> None:
    with open_image(image) as img:
        for name, data in files.items():
            assert img.read_bytes(name) == data, name
    tmp.mkdir(exist_ok=True)
    result = erofs_utils.fsck(image, f"--extract={tmp / 'out'}")
    assert result.returncode == 0, result.stdout + result.stderr
    for name, data in files.items():
        assert (tmp / "out" / name).read_bytes() == data, name
    with kernel_mount(image) as mnt:
        for name, data in files.items():
            assert (mnt / name).read_bytes() == data, name


@pytest.fixture(scope="module")
def files() -> dict[str, bytes]:
    return _files()


@pytest.mark.parametrize(
    "options",
    [
        ["-zlz4hc", "-Eztailpacking"],
        ["-zlz4", "-Eztailpacking,legacy-compress"],
        ["-zlz4hc", "-Eztailpacking", "-C65536"],
        ["-zlz4", "-Eztailpacking", "-C1048576", "-Elegacy-compress"],
    ],
)
def test_tails_inline_round_trip(
    tmp_path: Path,
    files: dict[str, bytes],
    options: list[str],
    erofs_utils: ErofsUtils,
    kernel_mount: MountImage,
) -> None:
    src = tmp_path / "src"
    src.mkdir()
    for name, data in files.items():
        (src / name).write_bytes(data)
    image = tmp_path / "img"
    assert cli_main(["pack", "--quiet", *options, str(src), str(image)]) == 0
    with open_image(image) as img:
        assert img.superblock.feature_incompat & FeatureIncompat.ZTAILPACKING
    _check_everywhere(image, files, tmp_path, erofs_utils, kernel_mount)
    # A block-sized text file compresses into an inline pcluster and no block at all.
    # With big pclusters the last pcluster holds more, and is less often under a block.
    big = any(o.startswith("-C") for o in options)
    for name in ("small", "block", "text_tail", *(() if big else ("random_tail",))):
        layout, advise, extents = _zmap(image, name)
        assert layout in COMPRESSED, name
        assert advise & MapAdvise.INLINE_PCLUSTER, name
        tail = extents[-1]
        assert tail.inline and tail.end == len(files[name]), name
        assert tail.physical % BS + tail.plen <= BS, name  # never across a block
    with open_image(image) as img:
        assert img.inode(img.lookup("block")).i_u == 0  # pcluster blocks of a compressed inode
    # The random tail stays raw inline (a PLAIN head), the text after random blocks compressed.
    if not big:
        assert _extents(image, "random_tail")[-1].head_type is LclusterType.PLAIN
    assert _extents(image, "text_tail")[-1].head_type is LclusterType.HEAD1
    huge_layout, huge_advise, huge_extents = _zmap(image, "huge_index")
    assert huge_layout in COMPRESSED
    assert not huge_advise & MapAdvise.INLINE_PCLUSTER and not huge_extents[-1].inline
    for name in ("one", "random"):
        assert _zmap(image, name)[0] not in COMPRESSED, name


def test_tail_that_does_not_fit_goes_to_a_block(
    tmp_path: Path, erofs_utils: ErofsUtils, kernel_mount: MountImage
) -> None:
    """Big xattr bodies leave no room after the index: the tail pcluster goes to a block, and a
    compressed tail that starts and ends in the EOF lcluster is stored raw (PLAIN) there."""
    rng = random.Random(3)
    files = {
        f"f{n}": _text(20_000 + 1000 * n, n) + rng.randbytes(3 * BS) + _text(1500 + 100 * n, 50 + n)
        for n in range(4)
    }
    xattrs = {b"user.big": b"v" * 3900}
    children = {
        name.encode(): File(Metadata(mode=0o644, xattrs=xattrs), BytesData(data))
        for name, data in files.items()
    }
    tree = Directory(Metadata(mode=0o755), children)  # type: ignore[arg-type]
    image = tmp_path / "img"
    write_image(tree, image, WriteOptions(compression="lz4hc", ztailpacking=True, xattr_share_threshold=10))
    _check_everywhere(image, files, tmp_path, erofs_utils, kernel_mount)
    for name, data in files.items():
        layout, advise, extents = _zmap(image, name)
        assert layout in COMPRESSED, name
        assert not advise & MapAdvise.INLINE_PCLUSTER, name
        tail = extents[-1]
        assert not tail.inline and tail.end == len(data)
        if tail.logical // BS == (len(data) - 1) // BS:
            assert tail.head_type is LclusterType.PLAIN, name


def test_max_extent_bytes_caps_every_extent(
    tmp_path: Path, erofs_utils: ErofsUtils, kernel_mount: MountImage
) -> None:
    files = {"zeros": bytes(2 * MiB + 123), "text": _text(700_000, 1), "exact": _text(64 * 1024 * 5, 2)}
    src = tmp_path / "src"
    src.mkdir()
    for name, data in files.items():
        (src / name).write_bytes(data)
    for cap, extra in ((16384, ["-C65536"]), (65536, ["-C65536", "-Eztailpacking"]), (8192, [])):
        image = tmp_path / f"img{cap}"
        args = ["pack", "--quiet", "-zlz4hc", f"--max-extent-bytes={cap}", *extra, str(src), str(image)]
        assert cli_main(args) == 0
        for name in files:
            extents = _extents(image, name)
            assert all(e.length <= cap for e in extents), (cap, name)
            # Zeros compress far beyond the cap: the cap is what cuts them.
            if name == "zeros":
                assert all(e.length == cap for e in extents[:-1])
        _check_everywhere(image, files, tmp_path / str(cap), erofs_utils, kernel_mount)


def test_incompressible_data_with_big_pclusters(
    tmp_path: Path, erofs_utils: ErofsUtils, kernel_mount: MountImage
) -> None:
    """Random data between compressible parts: raw where it does not compress (a block per PLAIN
    extent), compressed around it, and the whole no larger than mkfs.erofs makes it."""
    rng = random.Random(5)
    files = {
        # Small enough for mkfs.erofs, which compresses up to a pcluster's worth again for
        # every raw block.
        "sandwich": _text(MiB // 4, 1) + rng.randbytes(5 * MiB // 2 + 777) + _text(MiB // 4, 2),
        "random": rng.randbytes(MiB // 2 + 5),
    }
    src = tmp_path / "src"
    src.mkdir()
    for name, data in files.items():
        (src / name).write_bytes(data)
    for extra in ([], ["-Eztailpacking"]):
        image = tmp_path / f"img{len(extra)}"
        assert cli_main(["pack", "--quiet", "-zlz4hc", "-C1048576", *extra, str(src), str(image)]) == 0
        extents = _extents(image, "sandwich")
        raw = [e for e in extents if e.head_type is LclusterType.PLAIN and not e.inline]
        assert raw and all(e.length == BS and e.plen == BS for e in raw)
        # Most of the random part: pclusters on either side also take some along with text.
        assert sum(e.length for e in raw) >= MiB // 4
        assert any(e.head_type is LclusterType.HEAD1 for e in extents)
        _check_everywhere(image, files, tmp_path / f"out{len(extra)}", erofs_utils, kernel_mount)
        if not extra:  # (mkfs.erofs takes long here: once is enough)
            reference = tmp_path / "mkfs"
            erofs_utils.mkfs(reference, src, "-zlz4hc", "-C1048576", "--quiet")
            assert image.stat().st_size <= reference.stat().st_size


def test_workers_do_not_change_the_bytes(tmp_path: Path) -> None:
    rng = random.Random(17)
    src = tmp_path / "src"
    src.mkdir()
    for i in range(12):
        size = rng.choice([1, 100, 3000, BS, BS + 1, 20_000, 150_000])
        (src / f"f{i}").write_bytes(_text(size, i)[: size - size // 8] + rng.randbytes(size // 8))
    images = []
    for workers in ("1", "2"):
        image = tmp_path / f"img{workers}"
        args = ["pack", "--quiet", "-T0", "-zlz4hc", "-Eztailpacking", "-C16384", "--workers", workers]
        assert cli_main([*args, str(src), str(image)]) == 0
        images.append(image.read_bytes())
    assert images[0] == images[1]


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"compression": "lz4", "max_extent_bytes": 4095}, "below the block size"),
        ({"max_extent_bytes": 65536}, "needs a compression algorithm"),
    ],
)
def test_bad_extent_limits_are_refused(options: dict[str, object], message: str) -> None:
    with pytest.raises(InvalidInputError, match=message):
        WriteOptions(**options)  # type: ignore[arg-type]


def test_ztailpacking_without_compression_changes_nothing(tmp_path: Path) -> None:
    src = tmp_path / "src"
    src.mkdir()
    (src / "f").write_bytes(_text(10_000))
    plain, ztail = tmp_path / "plain", tmp_path / "ztail"
    assert cli_main(["pack", "--quiet", "-T0", "-Uclear", str(src), str(plain)]) == 0
    assert cli_main(["pack", "--quiet", "-T0", "-Uclear", "-Eztailpacking", str(src), str(ztail)]) == 0
    assert plain.read_bytes() == ztail.read_bytes()


def _mixed(n: int, seed: int) -> bytes:
    """`n` bytes of text, noise and runs in random proportions."""
    rng = random.Random(seed)
    out = bytearray()
    while len(out) < n:
        kind, size = rng.randrange(3), rng.randrange(1, 3 * BS)
        out += (
            _text(size, rng.randrange(99)) if kind == 0 else rng.randbytes(size) if kind == 1 else b"r" * size
        )
    return bytes(out[:n])


@pytest.mark.parametrize(
    "options",
    [
        WriteOptions(compression="lz4hc", ztailpacking=True),
        WriteOptions(compression="lz4", ztailpacking=True, compact_indexes=False, pcluster_size=16384),
        WriteOptions(compression="lz4hc", ztailpacking=True, block_size=512, pcluster_size=4096),
        WriteOptions(compression="lz4", ztailpacking=True, block_size=1024, max_extent_bytes=3000),
        WriteOptions(compression="lz4hc", ztailpacking=True, pcluster_size=65536, max_extent_bytes=20000),
    ],
    ids=["4k", "legacy-16k", "b512-4k", "b1024-cap", "64k-cap"],
)
def test_many_sizes_mount(tmp_path: Path, options: WriteOptions, kernel_mount: MountImage) -> None:
    """Sizes around block multiples and xattr bodies of every length, so tails land at every
    in-block position, inline or not; the kernel and our checker must agree with the source."""
    rng = random.Random(options.block_size + (options.max_extent_bytes or 0))
    bs = options.block_size
    files: dict[str, bytes] = {}
    children = {}
    for n in range(60):
        size = rng.choice([1, bs - 1, bs, bs + 1, 2 * bs - 1, 3 * bs + 7, rng.randrange(1, 20 * bs)])
        data = _mixed(size, n)
        name = f"f{n}"
        files[name] = data
        xattrs = {b"user.x": b"v" * rng.randrange(0, min(bs // 2, 1500))} if n % 3 else {}
        children[name.encode()] = File(Metadata(mode=0o644, xattrs=xattrs), BytesData(data))
    tree = Directory(Metadata(mode=0o755), children)  # type: ignore[arg-type]
    image = tmp_path / "img"
    write_image(tree, image, options)
    assert cli_main(["check", "--quiet", "--data", str(image)]) == 0
    with open_image(image) as img:
        assert img.superblock.feature_incompat & FeatureIncompat.ZTAILPACKING
        for name, data in files.items():
            assert img.read_bytes(name) == data, name
    with kernel_mount(image) as mnt:
        for name, data in files.items():
            assert (mnt / name).read_bytes() == data, name


@pytest.mark.parametrize(
    "options",
    [
        ["-zlz4hc", "-Eztailpacking"],
        ["-zlz4hc", "-Eztailpacking", "-C65536"],
        ["-zlz4", "-Eztailpacking,legacy-compress"],
    ],
)
def test_scenario_tree_no_larger_than_mkfs_erofs(
    tmp_path: Path, options: list[str], erofs_utils: ErofsUtils
) -> None:
    src = tmp_path / "src"
    build_scenario_tree(src, long_names=False)
    ours, theirs = tmp_path / "ours", tmp_path / "theirs"
    assert cli_main(["pack", "--quiet", *options, str(src), str(ours)]) == 0
    erofs_utils.mkfs(theirs, src, *options, "--quiet")
    assert erofs_utils.fsck(ours).returncode == 0
    assert ours.stat().st_size <= theirs.stat().st_size


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    pieces=st.lists(
        st.tuples(st.sampled_from(["text", "noise", "run"]), st.integers(1, 12_000), st.integers(0, 99)),
        max_size=5,
    ),
    block_size=st.sampled_from([512, 4096]),
    compact=st.booleans(),
    pcluster_blocks=st.sampled_from([1, 2, 16]),
    cap_blocks=st.sampled_from([None, 1, 3, 8]),
    xattr_size=st.integers(0, 600),  # moves the index's start and how much room the tail has
)
def test_any_file_round_trips_with_inline_tails(
    tmp_path: Path,
    pieces: list[tuple[str, int, int]],
    block_size: int,
    compact: bool,
    pcluster_blocks: int,
    cap_blocks: int | None,
    xattr_size: int,
) -> None:
    data = pieced_data(pieces)
    xattrs = {b"user.x": b"v" * xattr_size} if xattr_size else {}
    tree = Directory(Metadata(mode=0o755), {b"f": File(Metadata(mode=0o644, xattrs=xattrs), BytesData(data))})
    image = tmp_path / "img"
    options = WriteOptions(
        block_size=block_size,
        compression="lz4hc",
        compact_indexes=compact,
        pcluster_size=pcluster_blocks * block_size,
        ztailpacking=True,
        max_extent_bytes=None if cap_blocks is None else cap_blocks * block_size + 123,
    )
    write_image(tree, image, options)
    assert cli_main(["check", "--quiet", "--data", str(image)]) == 0
    with open_image(image) as img:
        assert img.read_bytes("f") == data
