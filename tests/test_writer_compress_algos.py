"""Zstandard, DEFLATE and MicroLZMA compressed files: encoders, config records, kernel round trips."""

from __future__ import annotations

import random
import zlib
from pathlib import Path

import pytest
import zstandard
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from erofsgen import open_image
from erofsgen.cli import main as cli_main
from erofsgen.errors import InvalidInputError
from erofsgen.format.constants import CompressionAlgorithm, DataLayout, FeatureIncompat, LclusterType
from erofsgen.model import BytesData, Directory, File, Metadata
from erofsgen.reader.decompress import decode_extent
from erofsgen.reader.zmap import Extent
from erofsgen.writer import WriteOptions, codecs, lzmadest, write_image
from erofsgen.writer.deflatedest import DeflateDestSize
from tests.support.kernel import MountImage
from tests.support.textdata import compressible_text as _text
from tests.support.textdata import pieced_data
from tests.test_writer_compress import COMPRESSED, _files, _layouts, _tree

BS = 4096
MiB = 1 << 20
ALGORITHMS = {
    "zstd": CompressionAlgorithm.ZSTD,
    "deflate": CompressionAlgorithm.DEFLATE,
    "lzma": CompressionAlgorithm.LZMA,
}


@pytest.fixture(scope="module")
def files() -> dict[str, bytes]:
    return _files()


def _decode(algorithm: CompressionAlgorithm, stream: bytes, length: int) -> bytes:
    """Decoded independently of the writer: libzstd and zlib directly, MicroLZMA by our reader."""
    if algorithm == CompressionAlgorithm.ZSTD:
        assert zstandard.get_frame_parameters(stream).content_size == length
        return zstandard.ZstdDecompressor().decompress(stream)
    if algorithm == CompressionAlgorithm.DEFLATE:
        inflater = zlib.decompressobj(-15)
        out = inflater.decompress(stream)
        assert inflater.eof and not inflater.unused_data  # one whole stream, nothing after it
        return out
    extent = Extent(0, length, 0, len(stream), 0, LclusterType.HEAD1, algorithm, False, False, False)
    return decode_extent(stream, extent, zero_padding=True, blksz=BS, configs={})


@pytest.mark.parametrize("name", list(ALGORITHMS))
@pytest.mark.parametrize("capacity", [BS, 16 * BS])
def test_streams_fit_and_decode_to_exactly_their_prefix(name: str, capacity: int) -> None:
    compress = codecs.dest_size_compressor(name, None, capacity, BS)
    assert compress.algorithm == ALGORITHMS[name]
    rng = random.Random(21)
    text = _text(2 * MiB, 3)
    for data in (text, rng.randbytes(100_000), bytes(MiB), rng.randbytes(3000) + text[:200_000]):
        padded = b"#" * 33 + data
        stream, used = compress(padded, 33, len(padded), capacity)
        assert len(stream) <= capacity and used <= len(data)
        if not used:
            continue
        assert stream[0] != 0  # 0PADDING: the first byte must not look like padding
        assert _decode(ALGORITHMS[name], stream, used) == data[:used]
    stream, used = compress(text, 0, len(text), capacity)
    assert len(stream) > capacity * 0.97, "compressible data fills its pcluster"
    assert used > 2 * capacity


def test_deflate_never_returns_a_stream_starting_with_zero() -> None:
    # zlib stores incompressible input in a non-final stored block, whose first byte is 0.
    noise = random.Random(22).randbytes(200_000)
    stream, used = DeflateDestSize(6, BS)(noise, 0, len(noise), 16 * BS)
    assert (stream, used) == (b"", 0)


@pytest.mark.parametrize("name", list(ALGORITHMS))
@pytest.mark.parametrize(
    "extra",
    [[], ["-C65536"], ["-Elegacy-compress"], ["-C16384", "-Elegacy-compress"]],
    ids=["default", "pcluster64k", "legacy", "pcluster16k_legacy"],
)
def test_files_round_trip_through_reader_and_kernel(
    tmp_path: Path, files: dict[str, bytes], name: str, extra: list[str], kernel_mount: MountImage
) -> None:
    src = tmp_path / "src"
    src.mkdir()
    for file_name, data in files.items():
        (src / file_name).write_bytes(data)
    image = tmp_path / "img"
    assert cli_main(["pack", "--quiet", f"-z{name}", *extra, str(src), str(image)]) == 0
    algorithm = ALGORITHMS[name]
    pcluster = int(extra[0][2:]) if extra and extra[0].startswith("-C") else BS
    layout = DataLayout.COMPRESSED_FULL if "-Elegacy-compress" in extra else DataLayout.COMPRESSED_COMPACT
    with open_image(image) as img:
        sb = img.superblock
        assert sb.feature_incompat & FeatureIncompat.ZERO_PADDING
        assert sb.feature_incompat & FeatureIncompat.COMPR_CFGS
        assert sb.u1 == 1 << algorithm  # available_compr_algs: this algorithm alone
        config = sb.compression_configs[algorithm]
        if algorithm == CompressionAlgorithm.ZSTD:
            assert config["windowlog"] == min(20, (pcluster * 8).bit_length() - 1) - 10
        elif algorithm == CompressionAlgorithm.LZMA:
            assert config["dict_size"] == 1024 * BS
        else:
            assert config["windowbits"] == 15
        for file_name, data in files.items():
            assert img.read_bytes(file_name) == data, file_name
        extents = img.extents_nid(img.lookup("text"))
        assert algorithm in {getattr(e, "algorithm", None) for e in extents} <= {algorithm, None}
    layouts = _layouts(image)
    for file_name in ("text", "zeros", "mixed", "large", "two_blocks_minus_one"):
        assert layouts[file_name] is layout, file_name
    for file_name in ("random", "empty", "one", "block", "block_plus_one"):
        assert layouts[file_name] not in COMPRESSED, file_name
    with kernel_mount(image) as mnt:
        for file_name, data in files.items():
            assert (mnt / file_name).read_bytes() == data, file_name
    assert image.stat().st_size < sum(len(d) for d in files.values()) // 3


def test_extreme_lzma_presets_round_trip_through_the_kernel(
    tmp_path: Path, files: dict[str, bytes], kernel_mount: MountImage
) -> None:
    """-zlzma,100+N is preset N with LZMA_PRESET_EXTREME, as mkfs.erofs spells it."""
    src = tmp_path / "src"
    src.mkdir()
    for file_name, data in files.items():
        (src / file_name).write_bytes(data)
    images = {}
    for level in ("9", "109"):
        images[level] = tmp_path / f"img{level}"
        assert cli_main(["pack", "--quiet", "-T0", f"-zlzma,{level}", str(src), str(images[level])]) == 0
    assert images["109"].read_bytes() != images["9"].read_bytes()  # another encoder setting
    with kernel_mount(images["109"]) as mnt:
        for file_name, data in files.items():
            assert (mnt / file_name).read_bytes() == data, file_name


@pytest.mark.parametrize("spelling", ["-zzstd,level=19", "-zdeflate,level=1", "-zlzma,level=0"])
def test_workers_and_level_spellings_give_the_same_bytes(tmp_path: Path, spelling: str) -> None:
    rng = random.Random(23)
    src = tmp_path / "src"
    src.mkdir()
    for i in range(8):
        (src / f"f{i}").write_bytes(
            _text(rng.randrange(BS, 90_000), i) + rng.randbytes(rng.randrange(0, 3 * BS))
        )
    short = spelling.replace("level=", "")
    images: list[bytes] = []
    for args in (
        [spelling, "--workers", "1"],
        [spelling, "--workers", "2"],
        [short, "--workers", "3"],
        [short, "--workers", "2", "-C32768"],
        [short, "--workers", "1", "-C32768"],
    ):
        image = tmp_path / f"img{len(images)}"
        assert cli_main(["pack", "--quiet", "-T0", *args, str(src), str(image)]) == 0
        images.append(image.read_bytes())
    assert images[0] == images[1] == images[2]
    assert images[3] == images[4]
    assert images[0] != images[3]


@settings(max_examples=12, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    pieces=st.lists(
        st.tuples(st.sampled_from(["text", "noise", "run"]), st.integers(1, 30_000), st.integers(0, 99)),
        min_size=1,
        max_size=5,
    ),
    name=st.sampled_from(list(ALGORITHMS)),
    level=st.sampled_from([None, 1]),
    compact=st.booleans(),
    pcluster_blocks=st.sampled_from([1, 3, 16]),
)
def test_any_file_round_trips_through_the_kernel(
    tmp_path_factory: pytest.TempPathFactory,
    kernel_mount: MountImage,
    pieces: list[tuple[str, int, int]],
    name: str,
    level: int | None,
    compact: bool,
    pcluster_blocks: int,
) -> None:
    data = pieced_data(pieces)
    image = tmp_path_factory.mktemp("any") / "img"
    options = WriteOptions(
        compression=name,
        compression_level=level,
        compact_indexes=compact,
        pcluster_size=pcluster_blocks * BS,
    )
    write_image(_tree({"f": data}), image, options)
    with open_image(image) as img:
        assert img.read_bytes("f") == data
    with kernel_mount(image) as mnt:
        assert (mnt / "f").read_bytes() == data


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"compression": "zstd", "compression_level": 0}, r"level 0 is not valid for zstd \(1 to 22\)"),
        ({"compression": "zstd", "compression_level": 23}, r"level 23 is not valid for zstd \(1 to 22\)"),
        ({"compression": "deflate", "compression_level": 10}, r"not valid for deflate \(0 to 9\)"),
        ({"compression": "lzma", "compression_level": -1}, r"not valid for lzma \(0 to 9, or 100 to 109"),
        ({"compression": "lzma", "compression_level": 10}, r"not valid for lzma \(0 to 9, or 100 to 109"),
        ({"compression": "lzma", "compression_level": 110}, r"not valid for lzma \(0 to 9, or 100 to 109"),
        ({"compression": "deflate", "compression_level": 100}, r"not valid for deflate \(0 to 9\)$"),
        ({"compression": "xz"}, r"'xz' is not supported \(only lz4, lz4hc, zstd, deflate, lzma\)"),
    ],
)
def test_bad_levels_and_algorithms_are_refused(options: dict[str, object], message: str) -> None:
    with pytest.raises(InvalidInputError, match=message):
        WriteOptions(**options)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("argument", "message"),
    [
        ("-zzstd,23", "compression level 23 is not valid for zstd (1 to 22)"),
        ("-zdeflate,level=10", "compression level 10 is not valid for deflate (0 to 9)"),
        ("-zlzma,level=x", "'level=x' is not a compression level"),
        ("-zzstd,dictsize=4096", "'dictsize' is not a compression option (only level=LEVEL)"),
        ("-zlz4,level=1", "lz4 takes no level"),
        ("-zxz", "'xz' is not a supported algorithm"),
    ],
)
def test_bad_cli_levels_and_algorithms_are_refused(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], argument: str, message: str
) -> None:
    with pytest.raises(SystemExit) as exit_info:
        cli_main(["pack", "--quiet", argument, str(tmp_path), str(tmp_path / "img")])
    assert exit_info.value.code == 2
    assert message in capsys.readouterr().err
    assert not (tmp_path / "img").exists()


def test_lzma_without_microlzma_is_a_clear_error(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    assert lzmadest.available(), "Python's liblzma here is 5.4 or later"
    monkeypatch.setattr(lzmadest, "_library", lambda: None)
    tree = Directory(Metadata(mode=0o755), {b"f": File(Metadata(mode=0o644), BytesData(_text(50_000)))})
    with pytest.raises(InvalidInputError, match=r"needs liblzma 5\.4 or later \(lzma_microlzma_encoder\)"):
        write_image(tree, tmp_path / "img", WriteOptions(compression="lzma"))
    assert not (tmp_path / "img").exists()


@pytest.mark.parametrize("name", list(ALGORITHMS))
def test_nothing_compressible_leaves_plain_files(tmp_path: Path, name: str) -> None:
    noise = random.Random(24).randbytes(3 * BS + 5)
    image = tmp_path / "img"
    write_image(_tree({"noise": noise}), image, WriteOptions(compression=name))
    assert _layouts(image)["noise"] not in COMPRESSED
    with open_image(image) as img:
        assert not img.superblock.feature_incompat & FeatureIncompat.ZERO_PADDING
        assert img.read_bytes("noise") == noise


@pytest.mark.parametrize("name", ["deflate", "lzma"])
def test_big_pclusters_probe_incompressible_data_with_two_blocks(name: str) -> None:
    compress = codecs.dest_size_compressor(name, None, 16 * BS, BS)
    assert isinstance(compress, codecs.RawProbe)
    noise = random.Random(25).randbytes(300_000)
    stream, used = compress(noise, 0, len(noise), 16 * BS)
    assert len(stream) <= 2 * BS  # the probe's answer: no need to fill 16 blocks
    assert used <= -(-len(stream) // BS) * BS  # so this extent is stored raw
    # Data that compresses still gets its whole pcluster.
    text = random.Random(26).randbytes(3000) + _text(500_000, 8)
    stream, used = compress(text, 0, len(text), 16 * BS)
    assert len(stream) > 15 * BS and used > 32 * BS
    assert _decode(ALGORITHMS[name], stream, used) == text[:used]
