"""The scenario list packed by erofsgen, judged by the kernel, fsck.erofs and dump.erofs."""

from __future__ import annotations

import os
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from erofsgen import open_image
from erofsgen.cli import main as cli_main
from tests.support.compare import assert_same_tree
from tests.support.erofs_utils import ErofsUtils
from tests.support.kernel import MountImage
from tests.support.snapshot import image_snapshot, snapshot


def pack(source: Path, image: Path, *options: str) -> None:
    status = cli_main(["pack", "--quiet", *options, str(source), str(image)])
    assert status == 0
    assert image.stat().st_size > 0


def test_scenario_tree_mounts_exactly(
    scenario_tree: Path, tmp_path: Path, kernel_mount: MountImage, erofs_utils: ErofsUtils
) -> None:
    image = tmp_path / "scenario.img"
    pack(scenario_tree, image)
    expected = snapshot(scenario_tree)
    with kernel_mount(image) as mnt:
        assert_same_tree(expected, snapshot(mnt))
    assert_same_tree(expected, image_snapshot(image))
    with open_image(image) as img:
        img.extract(tmp_path / "extracted")
    assert_same_tree(expected, snapshot(tmp_path / "extracted"))
    # 1.5 can parse the image but chokes on 255-byte names (a bug of that version), so fsck
    # and dump are run on the short-name tree below.


def test_scenario_tree_passes_fsck_and_dump(
    scenario_tree_short_names: Path, tmp_path: Path, kernel_mount: MountImage, erofs_utils: ErofsUtils
) -> None:
    image = tmp_path / "short.img"
    pack(scenario_tree_short_names, image)
    result = erofs_utils.fsck(image)
    assert result.returncode == 0, f"{erofs_utils.version_text}: {result.stdout}{result.stderr}"
    with_extract = erofs_utils.fsck(image, f"--extract={tmp_path / 'fsck-out'}")
    assert with_extract.returncode == 0, with_extract.stdout + with_extract.stderr
    # fsck's extraction must equal the source too (it does not restore xattrs or owners in 1.5).
    assert_same_tree(
        snapshot(scenario_tree_short_names),
        snapshot(tmp_path / "fsck-out"),
        ignore_root_meta=True,
        ignore_mtime=True,
        ignore_owner=True,
        ignore_fields=("xattrs", "hardlinks", "nlink", "mode"),
    )
    info = erofs_utils.dump(image, "-s")
    assert "Filesystem root nid" in info
    listing = erofs_utils.dump(image, "--path=/", "--ls")
    assert "big_pcluster" not in listing
    with kernel_mount(image) as mnt:
        assert_same_tree(snapshot(scenario_tree_short_names), snapshot(mnt))


@pytest.mark.parametrize("block_size", [512, 1024, 2048])
def test_small_block_sizes_mount_exactly(
    block_size: int, tmp_path: Path, kernel_mount: MountImage, tmp_path_factory: pytest.TempPathFactory
) -> None:
    from tests.support.scenario import build_scenario_tree

    source = tmp_path_factory.mktemp(f"bs{block_size}") / "tree"
    build_scenario_tree(source, long_names=True, blksz=block_size)
    image = tmp_path / f"b{block_size}.img"
    pack(source, image, "-b", str(block_size))
    assert image.stat().st_size % block_size == 0
    with kernel_mount(image) as mnt:
        assert_same_tree(snapshot(source), snapshot(mnt))


@pytest.mark.parametrize(
    "options",
    [
        ["-E", "force-inode-extended"],
        ["-E", "force-inode-compact"],
        ["-E", "noinline_data"],
        ["-T", "1700000000"],
        ["-x", "0"],
    ],
    ids=lambda o: " ".join(o),
)
def test_layout_options_mount_exactly(
    options: list[str],
    scenario_tree_short_names: Path,
    tmp_path: Path,
    kernel_mount: MountImage,
    erofs_utils: ErofsUtils,
) -> None:
    image = tmp_path / "opt.img"
    pack(scenario_tree_short_names, image, *options)
    assert erofs_utils.fsck(image).returncode == 0
    ignore_mtime = "-T" in options or "force-inode-compact" in options
    with kernel_mount(image) as mnt:
        assert_same_tree(snapshot(scenario_tree_short_names), snapshot(mnt), ignore_mtime=ignore_mtime)
        if "-T" in options:
            assert {e.mtime_ns for e in snapshot(mnt).entries.values()} == {1700000000 * 10**9}


def test_dropping_xattrs(scenario_tree_short_names: Path, tmp_path: Path, kernel_mount: MountImage) -> None:
    image = tmp_path / "noxattr.img"
    pack(scenario_tree_short_names, image, "-x", "-1")
    with kernel_mount(image) as mnt:
        assert_same_tree(
            snapshot(scenario_tree_short_names),
            snapshot(mnt),
            ignore_fields=("xattrs", "mode"),  # ACLs are xattrs; the mode bits they set stay
        )
        assert all(not e.xattrs for e in snapshot(mnt).entries.values())


def test_long_xattr_prefixes(scenario_tree: Path, tmp_path: Path, kernel_mount: MountImage) -> None:
    image = tmp_path / "prefix.img"
    prefixes = ["trusted.overlay.", "user.attr", "user.kkkkkkkk", "user.k"]
    pack(scenario_tree, image, *(f"--xattr-prefix={p}" for p in prefixes))
    plain = tmp_path / "plain.img"
    pack(scenario_tree, plain)
    assert image.stat().st_size <= plain.stat().st_size
    with kernel_mount(image) as mnt:
        assert_same_tree(snapshot(scenario_tree), snapshot(mnt))


def test_automatic_long_prefixes(scenario_tree: Path, tmp_path: Path, kernel_mount: MountImage) -> None:
    image, plain = tmp_path / "auto.img", tmp_path / "plain.img"
    pack(scenario_tree, image, "--xattr-prefix=auto")
    pack(scenario_tree, plain)
    with open_image(image) as img:
        assert img.superblock.long_prefixes, "the scenario's 40-xattr file should call for a prefix"
    assert image.stat().st_size <= plain.stat().st_size
    with kernel_mount(image) as mnt:
        assert_same_tree(snapshot(scenario_tree), snapshot(mnt))


def test_copy_of_tree_packs_bit_for_bit(scenario_tree: Path, tmp_path: Path) -> None:
    """Other inode numbers and another source path give the same image."""
    copy = tmp_path / "elsewhere" / "copy"
    copy.parent.mkdir()
    subprocess.run(["cp", "-a", str(scenario_tree), str(copy)], check=True)
    images = []
    for i, source in enumerate((scenario_tree, copy)):
        image = tmp_path / f"r{i}.img"
        pack(source, image, "-T", "1234567890", "--mkfs-time")
        images.append(image.read_bytes())
    assert images[0] == images[1]


def test_listing_order_does_not_matter(
    scenario_tree: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    first = tmp_path / "first.img"
    pack(scenario_tree, first, "-T", "1234567890", "--mkfs-time")
    real_scandir = os.scandir

    class Reversed:
        """os.scandir listing its entries backwards."""

        def __init__(self, path: bytes) -> None:
            with real_scandir(path) as it:
                self.entries = list(it)[::-1]

        def __enter__(self) -> Iterator[os.DirEntry[bytes]]:
            return iter(self.entries)

        def __exit__(self, *exc: object) -> None:
            pass

    monkeypatch.setattr(os, "scandir", Reversed)  # only the directory walk lists directories
    second = tmp_path / "second.img"
    pack(scenario_tree, second, "-T", "1234567890", "--mkfs-time")
    assert first.read_bytes() == second.read_bytes()


def test_source_date_epoch_is_reproducible(
    scenario_tree_short_names: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("SOURCE_DATE_EPOCH", "1600000000")
    first, second = tmp_path / "a.img", tmp_path / "b.img"
    pack(scenario_tree_short_names, first)
    pack(scenario_tree_short_names, second)
    assert first.read_bytes() == second.read_bytes()


def test_default_build_is_reproducible(scenario_tree_short_names: Path, tmp_path: Path) -> None:
    first, second = tmp_path / "a.img", tmp_path / "b.img"
    pack(scenario_tree_short_names, first)
    pack(scenario_tree_short_names, second)
    assert first.read_bytes() == second.read_bytes()


@pytest.mark.parametrize("options", [[], ["-T", "0"], ["-x", "-1"], ["--all-root"]], ids=str)
def test_no_larger_than_mkfs(
    options: list[str], scenario_tree_short_names: Path, tmp_path: Path, erofs_utils: ErofsUtils
) -> None:
    sources = [scenario_tree_short_names]
    doc = Path("/usr/share/doc")
    if doc.is_dir():
        sources.append(doc)
    for source in sources:
        ours, theirs = tmp_path / "ours.img", tmp_path / "theirs.img"
        pack(source, ours, *options)
        erofs_utils.mkfs(theirs, source, *[o for o in options])
        mine, reference = ours.stat().st_size, theirs.stat().st_size
        assert mine <= reference, f"{source}: erofsgen {mine} B > {erofs_utils.version_text} {reference} B"
        ours.unlink()
        theirs.unlink()


def test_pack_needs_no_leftovers(tmp_path: Path) -> None:
    source = tmp_path / "src"
    source.mkdir()
    (source / "f").write_bytes(b"x")
    pack(source, tmp_path / "out.img")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out.img", "src"]
