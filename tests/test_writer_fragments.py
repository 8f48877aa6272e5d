"""-E fragments, -E all-fragments, -E dedupe: the packed inode and shared pclusters, as Linux reads them.

Trees with many identical files and tails are packed with each option set; the kernel and our
reader must give every file back, identical fragments and pclusters must be stored once, and
the bytes must not depend on the workers. The mkfs.erofs 1.9 vectors' tree gives a size
comparison with mkfs.erofs itself.
"""

from __future__ import annotations

import io
import os
import random
import shutil
import subprocess
import sys
import tempfile
import threading
from pathlib import Path

import pytest

from erofsgen import open_image
from erofsgen.cli import main as cli_main
from erofsgen.errors import InvalidInputError
from erofsgen.format.constants import (
    CompressionAlgorithm,
    DataLayout,
    FeatureIncompat,
    FileType,
    LclusterType,
    MapAdvise,
)
from erofsgen.format.zmap import LCLUSTER_INDEX, MAP_HEADER
from erofsgen.model import BytesData, Directory, File, Metadata, PathData, StreamData
from erofsgen.reader import Image
from erofsgen.reader.check import check_image
from erofsgen.reader.zmap import Extent
from erofsgen.writer import WriteOptions, datastage, write_image
from erofsgen.writer.compressed import compress_file
from erofsgen.writer.fragments import FragmentedData
from erofsgen.writer.lz4dest import dest_size_compressor
from erofsgen.writer.plan import PlannedInode
from erofsgen.writer.stored import NO_DATA
from tests.support.kernel import MountImage
from tests.support.textdata import compressible_text

BS = 4096
VECTORS = Path(__file__).resolve().parent.parent / "specs" / "vectors" / "images" / "mkfs-1.9"


def _text(size: int, seed: int) -> bytes:
    return compressible_text(size, seed, vocabulary=48)


def _files() -> dict[str, bytes]:
    """Copies of files (whole, tails and pclusters repeat), small files, edges and a big one."""
    rng = random.Random(5)
    files = {
        "empty": b"",
        "one": b"x",
        "block": _text(BS, 1),
        "block_plus_one": _text(BS + 1, 2),
        "random": rng.randbytes(30_000),
        "zeros": bytes(3 << 20),  # its pclusters repeat within the file
        "mixed": rng.randbytes(9_000) + b"z" * 40_000 + _text(25_000, 3),
        "large": _text(2 << 20, 4),
        "tail_in_eof_lcluster": _text(5 * BS + 7, 6),
    }
    for i in range(6):
        files[f"copies/text{i}"] = _text(70_000, 10)  # identical: tails and pclusters once
        files[f"copies/small{i}"] = _text(1_500, 11)  # identical whole-file fragments
        files[f"copies/own{i}"] = _text(9_000 + 1_000 * i, 20 + i)
        files[f"copies/raw{i}"] = random.Random(30).randbytes(20_000)  # incompressible copies
    return files


@pytest.fixture(scope="module")
def source(tmp_path_factory: pytest.TempPathFactory) -> Path:
    src = tmp_path_factory.mktemp("fragments") / "src"
    for name, data in _files().items():
        (src / name).parent.mkdir(parents=True, exist_ok=True)
        (src / name).write_bytes(data)
    (src / "copies" / "hardlink").hardlink_to(src / "copies" / "text0")
    return src


def _pack(source: Path, image: Path, *options: str) -> None:
    assert cli_main(["pack", "--quiet", "-T0", "--all-root", *options, str(source), str(image)]) == 0


def _extents(img: Image, path: str) -> list[Extent]:
    return _extents_nid(img, img.lookup(path))


def _extents_nid(img: Image, nid: int) -> list[Extent]:
    return [e for e in img.extents_nid(nid) if isinstance(e, Extent)]


def _regular(source: Path) -> dict[str, bytes]:
    return {
        p.relative_to(source).as_posix(): p.read_bytes() for p in sorted(source.rglob("*")) if p.is_file()
    }


OPTION_SETS = [
    ("-zlz4hc", "-Efragments"),
    ("-zlz4hc", "-Eall-fragments"),
    ("-zlz4hc", "-Ededupe"),
    ("-zlz4", "-Efragments,dedupe"),
    ("-zlz4hc", "-Eall-fragments,dedupe"),
    ("-zlz4hc", "-C16384", "-Efragments,dedupe"),
    ("-zlz4hc", "-C65536", "-Ededupe"),
    ("-zlz4hc", "-Efragments,legacy-compress"),
    ("-zlz4hc", "-b1024", "-Efragments,dedupe"),
    ("-zlz4hc", "-Efragments=65536"),
    ("-zlz4", "-C16384", "-Eall-fragments=4096"),
    ("-zzstd", "-Efragments=131072,dedupe"),
]


@pytest.mark.parametrize("options", OPTION_SETS, ids=["_".join(o).replace("-", "") for o in OPTION_SETS])
def test_kernel_and_reader_give_every_file_back(
    tmp_path: Path, source: Path, options: tuple[str, ...], kernel_mount: MountImage
) -> None:
    image = tmp_path / "img"
    _pack(source, image, *options)
    files = _regular(source)
    with open_image(image) as img:
        for name, data in files.items():
            assert img.read_bytes(name) == data, name
        assert [str(p) for p in check_image(img, data=True)] == []
    with kernel_mount(image) as mnt:
        assert _regular(mnt) == files
        assert (mnt / "copies" / "hardlink").stat().st_nlink == 2


def test_fragments_hold_tails_and_small_files_once(tmp_path: Path, source: Path) -> None:
    image = tmp_path / "img"
    _pack(source, image, "-zlz4hc", "-Efragments")
    files = _files()
    with open_image(image) as img:
        sb = img.superblock
        assert sb.feature_incompat & FeatureIncompat.FRAGMENTS and sb.packed_nid
        packed = img.inode(sb.packed_nid)
        assert packed.file_type == FileType.REG_FILE and packed.compressed
        nids = {img.root_nid}
        for top, dirs, names in img.walk("/"):
            nids.update(img.lookup(f"{top.rstrip('/')}/{n}") for n in dirs + names)
        assert sb.packed_nid not in nids and sb.inos == len(nids) + 1  # counted, outside the tree
        offsets: dict[bytes, int] = {}
        stored = 0
        for name, data in files.items():
            if not data:
                continue
            extents = _extents(img, name)
            assert extents, name  # every non-empty file is compressed: it has a fragment
            tail = extents[-1]
            assert tail.fragment and tail.logical + tail.length == len(data), name
            piece = data[tail.logical :]
            zmap = img.data_nid(img.lookup(name)).zmap
            assert zmap is not None
            if tail.logical == 0:  # all fragment: no index, the offset in the map header
                assert len(extents) == 1 and zmap.whole_fragment, name
            else:
                assert zmap.advise & MapAdvise.FRAGMENT_PCLUSTER and not zmap.whole_fragment, name
            if len(data) <= BS:
                assert tail.logical == 0, name
            if piece not in offsets:
                offsets[piece] = tail.physical
                stored += len(piece)
            assert tail.physical == offsets[piece], f"{name}: an identical fragment stored twice"
        assert packed.size == stored  # nothing but the distinct fragments
        assert (
            _extents(img, "large")[-1].logical > 0 and _extents(img, "tail_in_eof_lcluster")[-1].logical > 0
        )


def test_all_fragments_keep_every_file_whole_in_the_packed_inode(tmp_path: Path, source: Path) -> None:
    image = tmp_path / "img"
    _pack(source, image, "-zlz4hc", "-Eall-fragments")
    files = _files()
    with open_image(image) as img:
        packed = img.inode(img.superblock.packed_nid)
        distinct = {data for data in files.values() if data}
        assert packed.size == sum(len(d) for d in distinct)
        for name, data in files.items():
            info = img.inode(img.lookup(name))
            if not data:
                assert not info.compressed
                continue
            assert info.layout is DataLayout.COMPRESSED_FULL, name
            (extent,) = _extents(img, name)
            assert extent.fragment and (extent.logical, extent.length) == (0, len(data)), name
        # Packed once and compressed, the tree takes far less than its copies.
        assert image.stat().st_size < packed.size // 4


def test_dedupe_shares_identical_pclusters(tmp_path: Path, source: Path) -> None:
    image, plain = tmp_path / "img", tmp_path / "plain"
    _pack(source, image, "-zlz4hc", "-Ededupe")
    _pack(source, plain, "-zlz4hc")
    with open_image(image) as img:
        sb = img.superblock
        assert sb.feature_incompat & FeatureIncompat.DEDUPE and not sb.packed_nid
        first = [e.physical for e in _extents(img, "copies/text0")]
        for i in range(1, 6):
            name = f"copies/text{i}"
            assert [e.physical for e in _extents(img, name)] == first, name
            info = img.inode(img.lookup(name))
            assert info.layout is DataLayout.COMPRESSED_FULL and info.i_u == 0  # no blocks of its own
        zeros = [e.physical for e in _extents(img, "zeros")]
        assert len(set(zeros)) < len(zeros)  # repeats inside one file are shared too
        assert all(not e.partial_ref for e in _extents(img, "mixed"))
        # Raw blocks are shared too: the first copy keeps them as PLAIN pclusters.
        raw = [[(e.physical, e.head_type) for e in _extents(img, f"copies/raw{i}")] for i in range(6)]
        assert raw[0] and all(r == raw[0] for r in raw)
        assert {t for _p, t in raw[0]} == {LclusterType.PLAIN}
        assert not _extents(img, "random")  # not shared with anything: plain, as without dedupe
    assert image.stat().st_size + 5 * (60_000 // 4 + 20_000) < plain.stat().st_size


@pytest.mark.parametrize("options", [("-Efragments,dedupe",), ("-Eall-fragments",), ("-Ededupe", "-C16384")])
def test_bytes_do_not_depend_on_the_workers(tmp_path: Path, source: Path, options: tuple[str, ...]) -> None:
    images: list[bytes] = []
    for workers in ("1", "2", "5", "2"):
        image = tmp_path / f"img{len(images)}"
        _pack(source, image, "-zlz4hc", "--workers", workers, *options)
        images.append(image.read_bytes())
    assert images[0] == images[1] == images[2] == images[3]


def test_options_need_compression() -> None:
    for name in ("fragments", "all_fragments", "dedupe"):
        with pytest.raises(InvalidInputError, match="need a compression algorithm"):
            WriteOptions(**{name: True})  # type: ignore[arg-type]
    assert WriteOptions(compression="lz4", all_fragments=True).fragment_mode == 2
    # Older kernels would look for the long-prefix table in the packed inode.
    for prefixes in ({"xattr_prefixes": (b"user.",)}, {"auto_xattr_prefixes": True}):
        with pytest.raises(InvalidInputError, match="long xattr prefixes cannot be combined with fragments"):
            WriteOptions(compression="lz4", fragments=True, **prefixes)
    assert WriteOptions(compression="lz4", dedupe=True, auto_xattr_prefixes=True).dedupe  # no packed inode
    with pytest.raises(InvalidInputError, match="packed inode needs fragments or all-fragments"):
        WriteOptions(compression="lz4", dedupe=True, packed_pcluster_size=8192)


@pytest.mark.parametrize("extended", ["-Efragments=65536", "-Eall-fragments=65536"])
def test_the_packed_inode_takes_its_own_pcluster_size(tmp_path: Path, source: Path, extended: str) -> None:
    """-E fragments=SIZE: the packed inode's pclusters up to SIZE, the files' one block; the LZ4
    config announces the larger."""
    image = tmp_path / "img"
    _pack(source, image, "-zlz4hc", extended)
    with open_image(image) as img:
        sb = img.superblock
        assert sb.feature_incompat & FeatureIncompat.COMPR_CFGS
        assert sb.compression_configs[CompressionAlgorithm.LZ4]["max_pclusterblks"] == 16
        packed = _extents_nid(img, sb.packed_nid)
        assert max(e.plen for e in packed) > BS and all(e.plen <= 16 * BS for e in packed)
        for path in ("large", "copies/text0"):
            assert all(e.plen <= BS for e in _extents(img, path) if not e.fragment), path
        for path, data in _regular(source).items():
            assert img.read_bytes(path) == data, path


@pytest.mark.parametrize(
    ("argument", "message"),
    [
        (
            "-Efragments=6000",
            "the packed inode's pcluster size 6000 is not a multiple of the block size 4096",
        ),
        ("-Eall-fragments=2097152", "the packed inode's pcluster size 2097152 is over 1048576 bytes"),
        ("-Efragments=64k", "-E fragments=64k: the size must be a number of bytes"),
    ],
)
def test_bad_packed_pcluster_sizes_are_refused(
    tmp_path: Path, source: Path, capsys: pytest.CaptureFixture[str], argument: str, message: str
) -> None:
    try:  # a malformed size is a usage error (argparse exits), a bad one an option error
        code = cli_main(["pack", "--quiet", "-zlz4hc", argument, str(source), str(tmp_path / "img")])
    except SystemExit as exc:
        code = exc.code  # type: ignore[assignment]
    assert code == 2
    assert message in capsys.readouterr().err
    assert not (tmp_path / "img").exists()


@pytest.mark.parametrize(
    ("vector", "options", "slack"),
    [
        ("frag-lz4hc", ("-zlz4hc", "-Efragments"), 1.1),
        ("allfrag-lz4hc", ("-zlz4hc", "-Eall-fragments"), 1.05),
        ("dedupe-lz4hc", ("-zlz4hc", "-Ededupe"), 1.0),
    ],
)
def test_size_is_close_to_mkfs_erofs_1_9(
    tmp_path: Path, vector: str, options: tuple[str, ...], slack: float
) -> None:
    """The tree of the mkfs.erofs 1.9.3 vectors, packed with the same options: about as small."""
    tree = tmp_path / "tree"
    subprocess.run([sys.executable, str(VECTORS / "make_tree.py"), str(tree)], check=True)
    image = tmp_path / "img"
    _pack(tree, image, *options)
    reference = (VECTORS / f"{vector}.erofs").stat().st_size
    assert image.stat().st_size <= reference * slack, (image.stat().st_size, reference)
    with open_image(image) as ours, open_image(VECTORS / f"{vector}.erofs") as theirs:
        for path in _regular(tree):
            assert ours.read_bytes(path) == theirs.read_bytes(path), path
    shutil.rmtree(tree)


def test_a_fragment_beyond_4_gib_switches_to_full_indexes(tmp_path: Path) -> None:
    """h_fragmentoff holds 32 bits: a later offset needs the tail head's block address for the rest."""
    data = _text(50_000, 3)
    with tempfile.TemporaryFile() as spool, tempfile.TemporaryFile() as out:
        fd = spool.fileno()
        form = FragmentedData(NO_DATA, len(data), fd, 0, compact=True, pcluster=BS, fragments=1)
        reader = io.BytesIO(data)

        def spool_write(target: int, chunk: bytes | bytearray, offset: int) -> None:
            os.pwrite(target, chunk, offset)

        compress_file(
            form, reader.read, dest_size_compressor("lz4hc", None), BS, spool_write, threading.Event()
        )
        assert 0 < form.tail_start < len(data) and form.starts
        node = File(Metadata(mode=0o644), BytesData(data))
        plan = PlannedInode(node, b"f", None, 2, FileType.REG_FILE, data=form, size=len(data))
        offsets = {}
        for fragment_offset in (0x1234_5678, (5 << 32) | 0x9ABC):
            form.fragment_offset = fragment_offset
            form.shape(plan, BS, True)
            plan.startblk = 7
            record = form.write(out.fileno(), plan, BS)  # pads to 8, then the map header and the index
            header = MAP_HEADER.unpack(record[:8])
            assert header.h_advise & MapAdvise.FRAGMENT_PCLUSTER
            assert header.h_reserved1 | header.h_idata_size << 16 == fragment_offset & 0xFFFFFFFF
            offsets[fragment_offset] = plan.layout
            if plan.layout is DataLayout.COMPRESSED_FULL:
                entries = [
                    LCLUSTER_INDEX.unpack(record[16 + 8 * i : 24 + 8 * i]) for i in range(-(-len(data) // BS))
                ]
                head = entries[form.tail_start // BS]
                assert head.di_advise & 3 == LclusterType.HEAD1 and head.di_clusterofs == form.tail_start % BS
                assert head.di_u == fragment_offset >> 32
                assert entries[0].di_u == 7  # the first pcluster, at the file's first block
                assert os.pread(out.fileno(), BS, 7 * BS) == os.pread(fd, BS, 0)
        assert offsets == {
            0x1234_5678: DataLayout.COMPRESSED_COMPACT,
            (5 << 32) | 0x9ABC: DataLayout.COMPRESSED_FULL,
        }


@pytest.mark.parametrize("option", ["-Efragments", "-Eall-fragments"])
def test_a_fragment_that_ends_an_earlier_one_takes_its_bytes(
    tmp_path: Path, option: str, kernel_mount: MountImage
) -> None:
    src = tmp_path / "src"
    src.mkdir()
    whole = _text(9_000, 40)
    (src / "a").write_bytes(whole)
    (src / "b").write_bytes(whole[-3_000:])  # all fragment: the end of a's
    (src / "c").write_bytes(whole[-40:])  # too short to be looked up by its end: stored again
    image = tmp_path / "img"
    _pack(src, image, "-zlz4hc", option)
    with open_image(image) as img:
        (a_tail,) = [e for e in _extents(img, "a") if e.fragment]
        (b,) = _extents(img, "b")
        (c,) = _extents(img, "c")
        assert a_tail.length >= 3_000
        assert b.physical == a_tail.physical + a_tail.length - 3_000
        assert img.inode(img.superblock.packed_nid).size == a_tail.length + 40
        assert c.physical == a_tail.length
    with kernel_mount(image) as mnt:
        assert _regular(mnt) == _regular(src)


@pytest.mark.parametrize(
    "options", [("-Eall-fragments",), ("-Efragments,dedupe", "-C16384"), ("-b1024", "-Eall-fragments")]
)
def test_the_packed_inode_is_compressed_in_segments(
    tmp_path: Path,
    source: Path,
    options: tuple[str, ...],
    kernel_mount: MountImage,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Its pieces are compressed in parallel; each ends on a block boundary, where the next begins."""
    segment = 8 * BS
    monkeypatch.setattr(datastage, "PACKED_SEGMENT", segment)
    images = []
    for workers in ("1", "3"):
        image = tmp_path / f"img{workers}"
        _pack(source, image, "-zlz4hc", "--workers", workers, *options)
        images.append(image.read_bytes())
    assert images[0] == images[1]
    with open_image(image) as img:
        packed = img.superblock.packed_nid
        assert img.inode(packed).size > 3 * segment
        starts = {e.logical for e in _extents_nid(img, packed)}
        assert set(range(0, img.inode(packed).size, segment)) <= starts
        for name, data in _regular(source).items():
            assert img.read_bytes(name) == data, name
    with kernel_mount(image) as mnt:
        assert _regular(mnt) == _regular(source)


@pytest.mark.parametrize("all_fragments", [False, True])
def test_streams_and_bytes_become_fragments_like_paths(
    tmp_path: Path, all_fragments: bool, kernel_mount: MountImage
) -> None:
    data = {"s": _text(40_000, 50), "b": _text(30_000, 50)[:25_000], "p": _text(40_000, 50)}
    (tmp_path / "p").write_bytes(data["p"])
    children = {
        b"s": File(Metadata(mode=0o644), StreamData(io.BytesIO(data["s"]), len(data["s"]))),
        b"b": File(Metadata(mode=0o644), BytesData(data["b"])),
        b"p": File(Metadata(mode=0o644), PathData(str(tmp_path / "p"), len(data["p"]))),
    }
    tree = Directory(Metadata(mode=0o755), children)  # type: ignore[arg-type]
    image = tmp_path / "img"
    options = WriteOptions(compression="lz4hc", fragments=True, all_fragments=all_fragments, dedupe=True)
    write_image(tree, image, options)
    with open_image(image) as img:
        for name, content in data.items():
            assert img.read_bytes(name) == content, name
        # The stream and the path hold the same bytes: one fragment, shared pclusters.
        assert [(e.physical, e.fragment) for e in _extents(img, "s")] == [
            (e.physical, e.fragment) for e in _extents(img, "p")
        ]
    with kernel_mount(image) as mnt:
        assert {n: (mnt / n).read_bytes() for n in data} == data
