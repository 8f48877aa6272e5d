"""The reader against mkfs.erofs images of the scenario tree: extract, stat, read, xattrs.

mkfs.erofs is the producer (Debian's 1.5 here; its version is in the pytest header). Every
option set packs the shared scenario tree (without 255-byte names, which 1.5 cannot pack);
`Image.extract` must reproduce it exactly, and the path API must agree with os.lstat & co.
"""

from __future__ import annotations

import os
import random
import stat
from collections.abc import Iterator
from pathlib import Path

import pytest

import erofsgen
from erofsgen.errors import InvalidInputError, NotFoundError
from erofsgen.format.constants import DataLayout, FileType
from erofsgen.format.device import DEVICE_SLOT
from erofsgen.format.superblock import CHECKSUM_OFFSET, sb_checksum
from erofsgen.reader import Image
from erofsgen.reader.zmap import Extent
from tests.support.compare import assert_same_tree
from tests.support.erofs_utils import ErofsUtils
from tests.support.scenario import SHARED_XATTR
from tests.support.snapshot import snapshot

# Option sets whose images must extract to exactly the source tree.
EXACT_OPTIONS = {
    "plain": [],
    "lz4": ["-zlz4"],
    "lz4hc": ["-zlz4hc"],
    "lz4hc_bigpcluster": ["-zlz4hc", "-C65536"],
    "lz4hc_ztailpacking": ["-zlz4hc", "-Eztailpacking"],
    "lz4_full_indexes": ["-zlz4", "-Elegacy-compress"],
    "chunks_4k": ["--chunksize=4096"],
}


def _mkfs(utils: ErofsUtils, tmp: Path, src: Path, opts: list[str], name: str = "img") -> Path:
    image = tmp / name
    utils.mkfs(image, src, "--quiet", *opts)
    return image


def _regular_files(root: Path) -> Iterator[Path]:
    for dirpath, _dirs, files in os.walk(root):
        for name in files:
            path = Path(dirpath) / name
            if stat.S_ISREG(path.lstat().st_mode):
                yield path


@pytest.mark.parametrize("opts", EXACT_OPTIONS.values(), ids=EXACT_OPTIONS.keys())
def test_extract_reproduces_tree(
    erofs_utils: ErofsUtils, scenario_tree_short_names: Path, tmp_path: Path, opts: list[str]
) -> None:
    image = _mkfs(erofs_utils, tmp_path, scenario_tree_short_names, opts)
    out = tmp_path / "out"
    with erofsgen.open_image(image) as img:
        result = img.extract(out)
    assert result.skipped == []
    assert_same_tree(snapshot(scenario_tree_short_names), snapshot(out))


@pytest.fixture(scope="module")
def ztail_image(tmp_path_factory: pytest.TempPathFactory, scenario_tree_short_names: Path) -> Path:
    from tests.support.erofs_utils import find_erofs_utils

    utils = find_erofs_utils()
    if utils is None:
        pytest.skip("erofs-utils not installed")
    tmp = tmp_path_factory.mktemp("ztail")
    return _mkfs(utils, tmp, scenario_tree_short_names, ["-zlz4hc", "-Eztailpacking"])


def test_stat_matches_lstat(ztail_image: Path, scenario_tree_short_names: Path) -> None:
    src = scenario_tree_short_names
    with erofsgen.open_image(ztail_image) as img:
        for dirpath, dirnames, filenames in img.walk():
            for name in dirnames + filenames:
                rel = (dirpath.rstrip("/") + "/" + name).lstrip("/")
                want = os.lstat(os.fsencode(src / rel))
                got = img.stat(rel)
                assert (got.mode, got.uid, got.gid, got.nlink) == (
                    want.st_mode,
                    want.st_uid,
                    want.st_gid,
                    want.st_nlink,
                ), rel
                assert got.mtime_ns == want.st_mtime_ns, rel
                assert got.mtime == got.mtime_ns // 1_000_000_000
                if not stat.S_ISDIR(want.st_mode):
                    assert got.size == want.st_size, rel
                if stat.S_ISCHR(want.st_mode) or stat.S_ISBLK(want.st_mode):
                    assert got.rdev == want.st_rdev, rel
                    assert (got.major, got.minor) == (os.major(want.st_rdev), os.minor(want.st_rdev))
                assert got.ino == got.nid == img.lookup(rel)


def test_walk_matches_os_walk(ztail_image: Path, scenario_tree_short_names: Path) -> None:
    src = os.fsencode(scenario_tree_short_names)
    want = {}
    for dirpath, dirnames, filenames in os.walk(src):
        rel = os.fsdecode(dirpath[len(src) :]) or "/"
        # Unlike os.walk, Image.walk lists symlinks to directories with the files.
        links = [d for d in dirnames if os.path.islink(os.path.join(dirpath, d))]
        dirs = [d for d in dirnames if d not in links]
        want[rel] = (sorted(map(os.fsdecode, dirs)), sorted(map(os.fsdecode, filenames + links)))
    with erofsgen.open_image(ztail_image) as img:
        got = {d: (sorted(dn), sorted(fn)) for d, dn, fn in img.walk()}
        assert got == want
        assert sorted(img.listdir("/")) == sorted(want["/"][0] + want["/"][1])
        entries = {e.name: e for e in img.scandir("/special")}
        assert entries["fifo"].type == FileType.FIFO and entries["sock"].type == FileType.SOCK


def test_contents_and_random_seeks(ztail_image: Path, scenario_tree_short_names: Path) -> None:
    rng = random.Random(7)
    with erofsgen.open_image(ztail_image) as img:
        for path in _regular_files(scenario_tree_short_names):
            rel = os.fsencode(path.relative_to(scenario_tree_short_names))
            data = path.read_bytes()
            assert img.read_bytes(rel) == data, rel
            with img.open(rel) as f:
                assert f.seekable() and f.readable() and f.size == len(data)
                for _ in range(4):
                    pos = rng.randrange(len(data) + 2)
                    n = rng.randrange(1, 9000)
                    f.seek(pos)
                    assert f.read(n) == data[pos : pos + n], (rel, pos, n)
                    assert f.tell() == min(pos + n, max(pos, len(data)))
                f.seek(-min(1, len(data)), os.SEEK_END)
                assert f.read() == data[-1:]
                buf = bytearray(10)
                f.seek(0)
                assert f.readinto(buf) == min(10, len(data))


def test_ztailpacking_inline_tails_are_used(ztail_image: Path) -> None:
    inline = 0
    with erofsgen.open_image(ztail_image) as img:
        for dirpath, _dirs, files in img.walk("/compressible"):
            for name in files:
                nid = img.lookup(f"{dirpath}/{name}")
                if img.inode(nid).compressed:
                    extents = img.extents_nid(nid)
                    inline += sum(1 for e in extents if isinstance(e, Extent) and e.inline)
    assert inline > 0


def test_xattrs_and_symlinks(ztail_image: Path, scenario_tree_short_names: Path) -> None:
    src = scenario_tree_short_names
    with erofsgen.open_image(ztail_image) as img:
        for rel in ("xattrs/many", "xattrs/shared_1", "acl/dir_default", "xattrs/chr", ".", "xattrs/symlink"):
            path = os.fsencode(src / rel)
            want = {
                n: os.getxattr(path, n, follow_symlinks=False)
                for n in os.listxattr(path, follow_symlinks=False)
            }
            assert img.xattrs(rel) == want, rel
            assert img.stat(rel).xattr_count == len(want)
        assert img.xattrs("xattrs/shared_4")[SHARED_XATTR[0]] == SHARED_XATTR[1]
        assert img.xattrs("sizes/s000001") == {}
        for name in os.listdir(src / "links"):
            assert img.readlink(f"links/{name}") == os.readlink(src / "links" / name)
        assert os.fsencode(img.readlink("links/non_utf8")) == b"\xff\xfe target"


def test_paths_bytes_relative_and_dots(ztail_image: Path) -> None:
    with erofsgen.open_image(ztail_image) as img:
        nid = img.lookup("/hardlinks/a/one")
        assert img.lookup("hardlinks/a/one") == nid
        assert img.lookup(b"hardlinks//a/./one") == nid
        assert img.lookup("hardlinks/b/../a/one") == nid
        assert img.lookup("hardlinks/b/two") == nid
        assert img.lookup("/") == img.lookup("..") == img.root_nid
        assert img.stat(b"names/\xff\xfe name").size == len(b"not utf-8\n")
        assert img.read_bytes("names/\udcff\udcfe name") == b"not utf-8\n"
        with pytest.raises(NotFoundError, match="nope"):
            img.lookup("sizes/nope")
        with pytest.raises(NotFoundError, match="not a directory"):
            img.lookup("sizes/s000001/x")
        with pytest.raises(NotFoundError):
            img.listdir("sizes/s000001")
        with pytest.raises(InvalidInputError):
            img.open("sizes")
        with pytest.raises(InvalidInputError):
            img.readlink("sizes/s000001")


def test_superblock_fields(ztail_image: Path) -> None:
    with erofsgen.open_image(ztail_image) as img:
        sb = img.superblock
        assert sb.checksum_verified is True
        assert sb.block_size == 4096 and sb.root_nid == img.root_nid
        assert sb.blocks * 4096 == ztail_image.stat().st_size
        assert sb.devices == ()
        root = img.stat("/")
        assert root.type == FileType.DIR and root.layout in (DataLayout.FLAT_INLINE, DataLayout.FLAT_PLAIN)


def test_extract_single_entries(ztail_image: Path, tmp_path: Path) -> None:
    with erofsgen.open_image(ztail_image) as img:
        img.extract(tmp_path / "one", "hardlinks/a/one")
        assert (tmp_path / "one").read_bytes() == img.read_bytes("hardlinks/a/one")
        img.extract(tmp_path / "sub", "hardlinks")
        assert (tmp_path / "sub" / "a" / "one").stat().st_ino == (
            tmp_path / "sub" / "b" / "two"
        ).stat().st_ino
        img.extract(tmp_path / "lnk", "links/relative")
        assert os.readlink(tmp_path / "lnk") == "../sizes/s000001"
        with pytest.raises(InvalidInputError):
            img.extract(tmp_path / "sub", "hardlinks")  # not empty
        with pytest.raises(InvalidInputError):
            img.extract(tmp_path / "one", "sizes/s000001")  # exists
        (tmp_path / "empty").mkdir()
        img.extract(tmp_path / "empty", "empty")


def test_no_xattrs_option(erofs_utils: ErofsUtils, scenario_tree_short_names: Path, tmp_path: Path) -> None:
    image = _mkfs(erofs_utils, tmp_path, scenario_tree_short_names, ["-x", "-1"])
    out = tmp_path / "out"
    with erofsgen.open_image(image) as img:
        img.extract(out)
        assert all(not img.xattrs_nid(img.lookup(d)) for d, _, _ in img.walk())
    # Without xattrs an ACL no longer masks the group bits, and capabilities vanish: compare
    # everything else.
    assert_same_tree(snapshot(scenario_tree_short_names), snapshot(out), ignore_fields=["xattrs", "mode"])


def test_fixed_time_and_all_root(
    erofs_utils: ErofsUtils, scenario_tree_short_names: Path, tmp_path: Path
) -> None:
    image = _mkfs(erofs_utils, tmp_path, scenario_tree_short_names, ["-T0", "--all-root"])
    out = tmp_path / "out"
    with erofsgen.open_image(image) as img:
        img.extract(out)
        assert img.superblock.epoch == 0
        for dirpath, dirnames, filenames in img.walk():
            for name in [*dirnames, *filenames]:
                st = img.stat(f"{dirpath}/{name}")
                assert (st.mtime_ns, st.uid, st.gid) == (0, 0, 0)
    assert_same_tree(snapshot(scenario_tree_short_names), snapshot(out), ignore_mtime=True, ignore_owner=True)


def _blob_image(utils: ErofsUtils, tmp: Path, src: Path) -> tuple[Path, Path]:
    blob = tmp / "blob"
    image = _mkfs(utils, tmp, src, ["--chunksize=65536", f"--blobdev={blob}"])
    return image, blob


def test_blob_device(erofs_utils: ErofsUtils, scenario_tree_short_names: Path, tmp_path: Path) -> None:
    image, blob = _blob_image(erofs_utils, tmp_path, scenario_tree_short_names)
    out = tmp_path / "out"
    with open(blob, "rb") as blob_file:
        with erofsgen.open_image(image, devices=[blob_file]) as img:
            assert len(img.superblock.devices) == 1
            img.extract(out)
        assert not blob_file.closed  # caller's file objects are left open
    assert_same_tree(snapshot(scenario_tree_short_names), snapshot(out))
    with pytest.raises(InvalidInputError, match="extra devices"):
        erofsgen.open_image(image, devices=[blob, blob])
    with erofsgen.open_image(image) as img:  # flat mode: the blob is not in the primary
        with pytest.raises(InvalidInputError, match="device slot 0"):
            img.read_bytes("sizes/s012289")
        assert img.read_bytes("sizes/s000000") == b""


def test_blob_device_in_flat_mode(
    erofs_utils: ErofsUtils, scenario_tree_short_names: Path, tmp_path: Path
) -> None:
    # Give the slot a unified address and append the blob: the kernel's flat layout.
    image, blob = _blob_image(erofs_utils, tmp_path, scenario_tree_short_names)
    primary = bytearray(image.read_bytes())
    with erofsgen.open_image(image) as img:
        slot = img.superblock.devices[0]
    uniaddr = len(primary) // 4096
    rec = DEVICE_SLOT.unpack(primary, slot.offset)._replace(uniaddr_lo=uniaddr)
    primary[slot.offset : slot.offset + DEVICE_SLOT.size] = DEVICE_SLOT.pack(rec)
    primary[CHECKSUM_OFFSET : CHECKSUM_OFFSET + 4] = sb_checksum(primary, 4096).to_bytes(4, "little")
    flat = tmp_path / "flat"
    flat.write_bytes(bytes(primary) + blob.read_bytes())
    out = tmp_path / "out"
    with erofsgen.open_image(flat) as img:
        assert img.superblock.devices[0].uniaddr == uniaddr
        img.extract(out)
    assert_same_tree(snapshot(scenario_tree_short_names), snapshot(out))


def test_large_files(erofs_utils: ErofsUtils, tmp_path: Path) -> None:
    src = tmp_path / "src"
    src.mkdir()
    rng = random.Random(3)
    words = [bytes(rng.choice(b"abcdefgh") for _ in range(rng.randint(2, 9))) for _ in range(2000)]
    files = {
        "random_3m": rng.randbytes(3 * 1024 * 1024 + 17),
        "text_5m": b" ".join(rng.choice(words) for _ in range(900_000))[: 5 * 1024 * 1024],
        "zeros_2m": bytes(2 * 1024 * 1024),
    }
    for name, data in files.items():
        (src / name).write_bytes(data)
    for opts in ([], ["-zlz4hc", "-C65536"], ["-zlz4", "-Elegacy-compress", "-C16384"]):
        image = _mkfs(erofs_utils, tmp_path, src, opts, name="big_" + "_".join(opts))
        with erofsgen.open_image(image) as img:
            _check_large(img, files, rng)


def _check_large(img: Image, files: dict[str, bytes], rng: random.Random) -> None:
    for name, data in files.items():
        with img.open(name) as f:
            chunks = []
            while piece := f.read(rng.randrange(1, 300_000)):
                chunks.append(piece)
            assert b"".join(chunks) == data, name
            for _ in range(20):
                pos = rng.randrange(len(data))
                f.seek(pos)
                assert f.read(70_000) == data[pos : pos + 70_000], (name, pos)
