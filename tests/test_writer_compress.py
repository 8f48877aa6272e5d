"""Compressed regular files (LZ4, LZ4HC): round trips through our reader, fsck.erofs and the kernel."""

from __future__ import annotations

import io
import os
import random
import time
from pathlib import Path

import lz4.block
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from erofsgen import open_image
from erofsgen.cli import main as cli_main
from erofsgen.errors import InvalidInputError
from erofsgen.format.constants import CompressionAlgorithm, DataLayout, FeatureIncompat, LclusterType
from erofsgen.format.zmap import LCLUSTER_INDEX
from erofsgen.model import BytesData, Directory, File, Metadata, PathData, StreamData
from erofsgen.writer import WriteOptions, datastage, lz4dest, plan_image, write_image
from erofsgen.writer.compressed import full_indexes, lcluster_entries
from tests.support.erofs_utils import ErofsUtils
from tests.support.kernel import MountImage
from tests.support.scenario import build_scenario_tree
from tests.support.textdata import compressible_text as _text
from tests.support.textdata import pieced_data

BS = 4096
MiB = 1 << 20
COMPRESSED = (DataLayout.COMPRESSED_FULL, DataLayout.COMPRESSED_COMPACT)


def _files() -> dict[str, bytes]:
    rng = random.Random(7)
    return {
        "text": _text(300_000),
        "random": rng.randbytes(50_000),
        "empty": b"",
        "one": b"x",
        "block": _text(BS, 1),
        "block_plus_one": _text(BS + 1, 2),
        "two_blocks_minus_one": _text(2 * BS - 1, 3),
        "zeros": bytes(3 * MiB),
        "mixed": rng.randbytes(10_000) + b"z" * 50_000 + rng.randbytes(5_000) + _text(20_000, 4),
        "large": _text(5 * MiB, 5),
    }


def _tree(files: dict[str, bytes]) -> Directory:
    children = {name.encode(): File(Metadata(mode=0o644), BytesData(data)) for name, data in files.items()}
    return Directory(Metadata(mode=0o755), children)  # type: ignore[arg-type]


def _layouts(image: Path) -> dict[str, DataLayout]:
    with open_image(image) as img:
        return {name: img.inode(img.lookup(name)).layout for name in img.listdir("/")}


@pytest.fixture(scope="module")
def files() -> dict[str, bytes]:
    return _files()


@pytest.mark.parametrize(
    ("options", "layout"),
    [
        (["-zlz4"], DataLayout.COMPRESSED_COMPACT),
        (["-zlz4hc,12"], DataLayout.COMPRESSED_COMPACT),
        (["-zlz4hc", "-Elegacy-compress"], DataLayout.COMPRESSED_FULL),
        (["-zlz4hc", "-C65536"], DataLayout.COMPRESSED_COMPACT),
        (["-zlz4", "-C16384", "-Elegacy-compress"], DataLayout.COMPRESSED_FULL),
    ],
)
def test_files_round_trip_through_reader_fsck_and_kernel(
    tmp_path: Path,
    files: dict[str, bytes],
    options: list[str],
    layout: DataLayout,
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
        assert img.superblock.feature_incompat & FeatureIncompat.ZERO_PADDING
        if any(o.startswith("-C") for o in options):
            assert img.superblock.feature_incompat & FeatureIncompat.COMPR_CFGS
            assert img.superblock.u1 == 1  # LZ4 alone in the algorithm bitmap
            pcluster = int(next(o for o in options if o.startswith("-C"))[2:])
            config = img.superblock.compression_configs[CompressionAlgorithm.LZ4]
            assert config["max_pclusterblks"] == pcluster // BS
        else:
            assert not img.superblock.feature_incompat & FeatureIncompat.COMPR_CFGS
            assert img.superblock.u1 == lz4dest.LZ4_MAX_DISTANCE
        for name, data in files.items():
            assert img.read_bytes(name) == data, name
    layouts = _layouts(image)
    for name in ("text", "zeros", "mixed", "large", "two_blocks_minus_one"):
        assert layouts[name] is layout, name
    # One block plus its index is no smaller than a block and a byte.
    for name in ("random", "empty", "one", "block", "block_plus_one"):
        assert layouts[name] not in COMPRESSED, name  # nothing to gain: stored plain or inline
    result = erofs_utils.fsck(image, f"--extract={tmp_path / 'out'}")
    assert result.returncode == 0, result.stdout + result.stderr
    for name, data in files.items():
        assert (tmp_path / "out" / name).read_bytes() == data, name
    with kernel_mount(image) as mnt:
        for name, data in files.items():
            assert (mnt / name).read_bytes() == data, name
    assert image.stat().st_size < sum(len(d) for d in files.values()) // 3


def test_worked_example_of_full_indexes() -> None:
    """erofs-format.md §8.5: four extents, the last ending inside lcluster 26 (a dummy PLAIN)."""
    from array import array

    starts = array("Q", [0, 28147, 56145, 84514])
    heads = bytearray([LclusterType.HEAD1] * 4)
    index = full_indexes(lcluster_entries(starts, heads, array("H", [1] * 4), 106890, BS), 10)
    entries = [LCLUSTER_INDEX.unpack(index[i : i + 8]) for i in range(0, len(index), 8)]
    assert len(entries) == 27
    assert entries[0] == (LclusterType.HEAD1, 0, 10)
    assert [(e.di_u & 0xFFFF, e.di_u >> 16) for e in entries[1:6]] == [(d, 6 - d) for d in range(1, 6)]
    assert entries[6] == (LclusterType.HEAD1, 3571, 11)
    assert entries[13] == (LclusterType.HEAD1, 2897, 12)
    assert entries[20] == (LclusterType.HEAD1, 2594, 13)
    assert all(e.di_advise == LclusterType.NONHEAD for e in entries[21:26])
    assert entries[26] == (LclusterType.PLAIN, 394, 0)
    # A file ending on an lcluster boundary needs no dummy: the last NONHEADs point past EOF.
    one = lcluster_entries(array("Q", [0]), bytearray([LclusterType.HEAD1]), array("H", [1]), 3 * BS, BS)
    index = full_indexes(one, 0)
    assert [LCLUSTER_INDEX.unpack(index[i : i + 8]).di_u for i in (8, 16)] == [1 | 2 << 16, 2 | 1 << 16]


@pytest.mark.parametrize("algorithm", ["lz4", "lz4hc"])
@pytest.mark.parametrize("native", [True, False])
def test_dest_size_fills_the_pcluster_exactly(algorithm: str, native: bool) -> None:
    if native:
        assert lz4dest.native_available(), "the lz4 wheel exports LZ4_compress_destSize"
    compress = lz4dest.dest_size_compressor(algorithm, None, native=native)
    assert isinstance(compress, lz4dest.NativeDestSize if native else lz4dest.SearchDestSize)
    rng = random.Random(8)
    for data in (_text(200_000), rng.randbytes(20_000), bytes(MiB), _text(9000) + rng.randbytes(9000)):
        padded = b"#" * 100 + data
        stream, used = compress(padded, 100, len(padded), BS)
        assert 0 < len(stream) <= BS and 0 < used <= len(data)
        assert stream[0] != 0  # 0PADDING: the stream's first byte must not look like padding
        assert lz4.block.decompress(stream, uncompressed_size=used) == data[:used]


@pytest.mark.parametrize("level", [1, 9, 12])
def test_a_reused_lz4hc_state_gives_the_same_streams(level: int) -> None:
    lib = lz4dest._native()
    assert lib is not None and lib.hc_reset is not None, "the lz4 wheel exports the streaming LZ4HC API"
    reused = lz4dest.NativeDestSize(lib, level)
    fresh = lz4dest.NativeDestSize(lib, level, reuse_state=False)
    assert reused.reuse_state and not fresh.reuse_state
    rng = random.Random(level)
    data = _text(300_000, level) + rng.randbytes(30_000) + bytes(70_000) + _text(100_000, 1)
    for capacity in (BS, 4 * BS):
        pos = 0
        while pos < len(data):
            end = min(len(data), pos + 255 * capacity)
            stream, used = reused(data, pos, end, capacity)
            assert fresh(data, pos, end, capacity) == (stream, used)
            pos += used


@pytest.mark.parametrize("native", [True, False])
def test_native_and_fallback_compressors_give_valid_images(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, native: bool, erofs_utils: ErofsUtils
) -> None:
    if not native:
        monkeypatch.setattr(lz4dest, "_native", lambda: None)
    rng = random.Random(9)
    files = {"text": _text(400_000, 6), "mixed": rng.randbytes(30_000) + _text(30_000), "zeros": bytes(MiB)}
    image = tmp_path / "img"
    write_image(_tree(files), image, WriteOptions(compression="lz4hc"))
    with open_image(image) as img:
        for name, data in files.items():
            assert img.read_bytes(name) == data
    assert all(layout is DataLayout.COMPRESSED_COMPACT for layout in _layouts(image).values())
    assert erofs_utils.fsck(image).returncode == 0


def test_streams_and_paths_compress_like_bytes(tmp_path: Path) -> None:
    text, noise = _text(100_000, 10), random.Random(11).randbytes(40_000)
    (tmp_path / "p").write_bytes(text)
    children = {
        b"stream": File(Metadata(mode=0o644), StreamData(io.BytesIO(text), len(text))),
        b"noise": File(Metadata(mode=0o644), StreamData(io.BytesIO(noise), len(noise))),
        b"path": File(Metadata(mode=0o644), PathData(str(tmp_path / "p"), len(text))),
        b"bytes": File(Metadata(mode=0o644), BytesData(text)),
    }
    image = tmp_path / "img"
    write_image(Directory(Metadata(mode=0o755), children), image, WriteOptions(compression="lz4"))  # type: ignore[arg-type]
    layouts = _layouts(image)
    assert layouts["noise"] not in COMPRESSED
    with open_image(image) as img:
        for name in ("stream", "path", "bytes"):
            assert layouts[name] is DataLayout.COMPRESSED_COMPACT
            assert img.read_bytes(name) == text
        assert img.read_bytes("noise") == noise  # read once, kept in the spool, stored plain


def test_a_file_that_shrinks_while_compressed_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "f"
    path.write_bytes(_text(50_000))
    tree = Directory(Metadata(mode=0o755), {b"f": File(Metadata(mode=0o644), PathData(str(path), 90_000))})
    with pytest.raises(InvalidInputError, match=r"^/f: .*shrank while packing"):
        write_image(tree, tmp_path / "img", WriteOptions(compression="lz4"))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["f"]


@pytest.mark.parametrize("batch_files", [1, 3, 32])
def test_bytes_do_not_depend_on_worker_timing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, batch_files: int
) -> None:
    monkeypatch.setattr(datastage, "BATCH_FILES", batch_files)  # small files are compressed in batches
    rng = random.Random(12)
    files = {
        f"f{i}": _text(rng.randrange(BS, 60_000), i) + rng.randbytes(rng.randrange(0, BS)) for i in range(12)
    }
    outputs: list[bytes] = []
    for delays in (None, {i: (16 - i) * 0.003 for i in range(16)}):
        if delays is not None:
            monkeypatch.setattr(datastage, "job_hook", lambda i, d=delays: time.sleep(d.get(i, 0)))
        image = tmp_path / f"img{len(outputs)}"
        write_image(_tree(files), image, WriteOptions(compression="lz4hc", build_time_ns=0))
        outputs.append(image.read_bytes())
    assert outputs[0] == outputs[1]


@pytest.mark.parametrize("budget", [0, 3 * BS])
@pytest.mark.parametrize("extended", [[], ["-Eztailpacking"]])
def test_pclusters_through_the_spool_give_the_same_bytes(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, files: dict[str, bytes], budget: int, extended: list[str]
) -> None:
    """Streamed files' pclusters wait in memory or, past the budget, in the spool: same image.

    Without ztailpacking the incompressible file is written from its raw pieces, spooled or not.
    (The threads' path: processes put every pclusters in the spool.)
    """
    monkeypatch.setattr(datastage, "USE_PROCESSES", False)
    src = tmp_path / "src"
    src.mkdir()
    for name, data in files.items():
        (src / name).write_bytes(data)
    args = ["pack", "--quiet", "-T0", "-zlz4hc", *extended, str(src)]
    assert cli_main([*args, str(tmp_path / "memory")]) == 0
    spooled: list[None] = []
    spool_write = datastage._spool_write
    monkeypatch.setattr(datastage, "STREAM_BUDGET", budget)
    monkeypatch.setattr(datastage, "job_hook", lambda i: time.sleep(0.05 if i == 0 else 0))
    monkeypatch.setattr(datastage, "_spool_write", lambda *a: spooled.append(spool_write(*a)))
    assert cli_main([*args, str(tmp_path / "spool")]) == 0
    assert len(spooled) > 1
    assert (tmp_path / "memory").read_bytes() == (tmp_path / "spool").read_bytes()
    with open_image(tmp_path / "spool") as img:
        for name, data in files.items():
            assert img.read_bytes(name) == data


def test_planning_alone_leaves_the_pclusters_in_the_spool(files: dict[str, bytes]) -> None:
    """plan_image with the caller's stage: its forms' pieces are where an emitter would read them."""
    options = WriteOptions(compression="lz4hc")
    with datastage.DataStage(BS, compressor=datastage.stage_compressor(options)) as stage:
        layout = plan_image(_tree(files), options, stage)
        forms = [p.data for p in layout.inodes if p.streamed]
        assert forms and all(isinstance(piece, int) for f in forms for piece in f.pieces)  # type: ignore[attr-defined]
        assert stage.budget is not None and stage.budget.left == datastage.STREAM_BUDGET
        text = next(p for p in layout.inodes if p.name == b"text")
        assert text.layout is DataLayout.COMPRESSED_COMPACT
        spool = stage.spool
        assert spool is not None
        first = os.pread(spool.fileno(), BS, text.data.spool_offset)  # type: ignore[attr-defined]
        stream = first.lstrip(b"\0")
        assert lz4.block.decompress(stream, uncompressed_size=BS * 4)[:100] == files["text"][:100]


def test_compressed_files_take_the_first_data_blocks_in_inode_order(files: dict[str, bytes]) -> None:
    layout = plan_image(_tree(files), WriteOptions(compression="lz4hc"))
    streamed = sorted((p for p in layout.inodes if p.streamed), key=lambda p: p.ino)
    assert [p.node for p in streamed] == [p.node for p in sorted(layout.inodes, key=lambda p: p.ino)
                                          if p.size > BS]  # fmt: skip
    block = layout.data_start
    for plan in streamed:
        if plan.nblocks:
            assert plan.startblk == block
            block += plan.nblocks
    others = [p.startblk for p in layout.inodes if p.nblocks and not p.streamed]
    assert all(start >= block for start in others)
    assert any(p.layout in COMPRESSED for p in streamed) and any(p.layout not in COMPRESSED for p in streamed)


def test_bytes_do_not_depend_on_the_number_of_workers(tmp_path: Path) -> None:
    rng = random.Random(13)
    src = tmp_path / "src"
    src.mkdir()
    for i in range(10):
        (src / f"f{i}").write_bytes(
            _text(rng.randrange(BS, 80_000), i) + rng.randbytes(rng.randrange(0, 3 * BS))
        )
    images = []
    for workers in ("1", "2", "5"):
        image = tmp_path / f"img{workers}"
        assert (
            cli_main(["pack", "--quiet", "-T0", "-zlz4hc", "--workers", workers, str(src), str(image)]) == 0
        )
        images.append(image.read_bytes())
    assert images[0] == images[1] == images[2]


@settings(max_examples=40, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    pieces=st.lists(
        st.tuples(st.sampled_from(["text", "noise", "run"]), st.integers(1, 20_000), st.integers(0, 99)),
        max_size=6,
    ),
    block_size=st.sampled_from([512, 4096]),
    algorithm=st.sampled_from(["lz4", "lz4hc"]),
    compact=st.booleans(),
    pcluster_blocks=st.sampled_from([1, 2, 16]),
    xattr_size=st.integers(0, 40),  # moves the index's start: compacted packs align to 32 bytes
)
def test_any_file_round_trips_through_our_reader(
    tmp_path: Path,
    pieces: list[tuple[str, int, int]],
    block_size: int,
    algorithm: str,
    compact: bool,
    pcluster_blocks: int,
    xattr_size: int,
) -> None:
    data = pieced_data(pieces)
    image = tmp_path / "img"
    xattrs = {b"user.x": b"v" * xattr_size} if xattr_size else {}
    tree = Directory(Metadata(mode=0o755), {b"f": File(Metadata(mode=0o644, xattrs=xattrs), BytesData(data))})
    options = WriteOptions(
        block_size=block_size,
        compression=algorithm,
        compact_indexes=compact,
        pcluster_size=pcluster_blocks * block_size,
    )
    write_image(tree, image, options)
    with open_image(image) as img:
        assert img.read_bytes("f") == data


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"compression": "brotli"}, "'brotli' is not supported"),
        ({"compression": "lz4", "compression_level": 3}, "lz4 takes no level"),
        ({"compression": "lz4hc", "compression_level": 13}, "0 to 12"),
        ({"compression": "lz4", "pcluster_size": 6000}, "not a multiple of the block size"),
        ({"compression": "lz4", "pcluster_size": 2 << 20}, "is over 1048576 bytes"),
        ({"compression_level": 3}, "needs a compression algorithm"),
        ({"compression": "lz4", "chunk_size": 4096}, "cannot be chunked"),
        ({"compression": 1}, "WriteOptions.compression must be str or None"),
        ({"workers": 0}, "workers 0 is not from 1 to 256"),
    ],
)
def test_bad_compression_options_are_refused(options: dict[str, object], message: str) -> None:
    with pytest.raises(InvalidInputError, match=message):
        WriteOptions(**options)  # type: ignore[arg-type]


def test_cli_spellings(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    src = tmp_path / "src"
    src.mkdir()
    (src / "f").write_bytes(_text(40_000))
    for args in (["-z", "lz4"], ["-zlz4hc"], ["-zlz4hc,12"], ["-zlz4", "-C", "4096"]):
        image = tmp_path / "img"
        assert cli_main(["pack", "--quiet", *args, str(src), str(image)]) == 0, args
        assert _layouts(image)["f"] is DataLayout.COMPRESSED_COMPACT
    with pytest.raises(SystemExit) as exit_info:
        cli_main(["pack", "--quiet", "-zbrotli", str(src), str(tmp_path / "x")])
    assert exit_info.value.code == 2
    assert "'brotli' is not a supported algorithm" in capsys.readouterr().err
    assert cli_main(["pack", "--quiet", "-zlz4", "-C6000", str(src), str(tmp_path / "x")]) == 2
    assert "not a multiple of the block size" in capsys.readouterr().err


@pytest.mark.slow
def test_scenario_tree_size_is_close_to_mkfs_erofs(tmp_path: Path, erofs_utils: ErofsUtils) -> None:
    """mkfs.erofs 1.5 -zlz4hc uses compacted indexes; full ones cost a little more."""
    src = tmp_path / "src"
    build_scenario_tree(src, long_names=False)
    ours, theirs = tmp_path / "ours", tmp_path / "theirs"
    assert cli_main(["pack", "--quiet", "-zlz4hc", str(src), str(ours)]) == 0
    erofs_utils.mkfs(theirs, src, "-zlz4hc", "--quiet")
    assert erofs_utils.fsck(ours).returncode == 0
    assert ours.stat().st_size <= theirs.stat().st_size * 1.10 + 2 * BS


@pytest.mark.parametrize("pcluster", [BS, 4 * BS])
def test_compacted_indexes_at_every_alignment_mount(
    tmp_path: Path, erofs_utils: ErofsUtils, kernel_mount: MountImage, pcluster: int
) -> None:
    """xattr bodies of different sizes start the index at every 8-byte step of a 32-byte line:
    the leading 4-byte packs then number 0, 2, 4 or 6 before the 2-byte ones."""
    data = {f"f{n}": _text(40_000 + 997 * n, n) + random.Random(n).randbytes(n * 300) for n in range(12)}
    children = {
        name.encode(): File(Metadata(mode=0o644, xattrs={b"user.k": b"v" * (4 * n)}), BytesData(content))
        for n, (name, content) in enumerate(data.items())
    }
    image = tmp_path / "img"
    tree = Directory(Metadata(mode=0o755), children)  # type: ignore[arg-type]
    write_image(tree, image, WriteOptions(compression="lz4", pcluster_size=pcluster))
    assert set(_layouts(image).values()) == {DataLayout.COMPRESSED_COMPACT}
    result = erofs_utils.fsck(image, f"--extract={tmp_path / 'out'}")
    assert result.returncode == 0, result.stdout + result.stderr
    with kernel_mount(image) as mnt:
        for name, content in data.items():
            assert (mnt / name).read_bytes() == content
            assert (tmp_path / "out" / name).read_bytes() == content


@pytest.mark.parametrize(
    ("head", "hc_first"),
    [(b"\x1f\x8b\x08\x00", False), (b"\x89PNG\r\n\x1a\n", False), (b"PK\x03\x04", False), (b"", True)],
    ids=["gzip", "png", "zip", "no-magic"],
)
def test_data_compressed_already_goes_through_the_fast_probe_first(head: bytes, hc_first: bool) -> None:
    """A buffer that begins like a compressed format skips LZ4HC while fast LZ4 cannot shrink it."""
    import dataclasses

    lib = lz4dest._native()
    assert lib is not None and lib.hc_next is not None
    calls: list[str] = []

    def counted(name: str, function: object) -> object:
        def call(*args: object) -> object:
            calls.append(name)
            return function(*args)  # type: ignore[operator]

        return call

    wrapped = dataclasses.replace(lib, hc_next=counted("hc", lib.hc_next), hc=counted("hc", lib.hc))
    compress = lz4dest.NativeDestSize(wrapped, 9)
    data = head + random.Random(5).randbytes(300_000)
    stream, used = compress(data, 0, len(data), BS)
    assert ("hc" in calls) is hc_first
    assert used <= BS  # stored raw either way: nothing to gain
    text = head + _text(300_000, 2)  # a false start: LZ4HC runs once fast LZ4 can shrink it
    calls.clear()
    stream, used = compress(text, 0, len(text), BS)
    assert calls == ["hc"] and used > 2 * BS
    assert lz4.block.decompress(stream, uncompressed_size=used) == text[:used]
