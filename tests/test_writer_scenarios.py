"""erofsgen packing the scenario tree: reproducible bytes, and images no larger than mkfs.erofs's.

Whether the images read back right (kernel, fsck.erofs, reader, extract, check) is the image
matrix's job: tests/test_matrix.py with its producers in tests/support/producers.py.
"""

from __future__ import annotations

import os
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from erofsgen.cli import main as cli_main
from tests.support.erofs_utils import ErofsUtils


def pack(source: Path, image: Path, *options: str) -> None:
    status = cli_main(["pack", "--quiet", *options, str(source), str(image)])
    assert status == 0
    assert image.stat().st_size > 0


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
