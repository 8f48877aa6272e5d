"""Acceptance matrix: the scenario tree packed by mkfs.erofs (and by erofsgen) goes through the
read commands: `extract` reproduces the tree, `check --data` is clean, every structure parses
and rebuilds to identical bytes, and `dump` runs.

`tests/test_reader_mkfs.py` already extracts mkfs images through the library API; this matrix
drives the command line (`erofsgen extract/check/dump`, with `--device` for the blob image) and
adds the checker and the schema rebuild on every image. Debian's mkfs.erofs 1.5 keeps
everything the scenario records (modes, 32-bit owners, nanosecond mtimes, xattrs, hard links,
rdev) with default options (see tests/test_support.py), so the comparison is exact; with
`-x -1` xattrs are dropped and left out of the comparison.
"""

from __future__ import annotations

from pathlib import Path

import pytest

import erofsgen
from erofsgen.cli import main as cli_main
from erofsgen.reader.dump import rebuild_check
from tests.support.compare import assert_same_tree
from tests.support.erofs_utils import ErofsUtils
from tests.support.snapshot import snapshot

BLOB = "{blob}"
MKFS_MATRIX = {
    "default": [],
    "lz4": ["-zlz4"],
    "lz4hc": ["-zlz4hc"],
    "lz4hc_pcluster64k": ["-zlz4hc", "-C65536"],
    "lz4hc_ztailpacking": ["-zlz4hc", "-Eztailpacking"],
    "chunks_4k": ["--chunksize=4096"],
    "chunks_64k_blob": ["--chunksize=65536", f"--blobdev={BLOB}"],
    "no_xattrs": ["-x", "-1"],
}
PACK_MATRIX = {"default": [], "block_1024": ["-b", "1024"], "all_xattrs_shared": ["-x", "0"]}


def read_commands(image: Path, devices: list[Path], out: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """extract, check --data, dump, and the rebuild check: all must succeed."""
    dev = [arg for d in devices for arg in ("--device", str(d))]
    assert cli_main(["extract", "--quiet", str(image), str(out), *dev]) == 0
    assert capsys.readouterr().out == ""
    status = cli_main(["check", "--data", str(image), *dev])
    captured = capsys.readouterr()
    assert (status, captured.out) == (0, ""), captured.out
    assert captured.err.endswith(": 0 problems, 0 warnings\n")
    assert cli_main(["dump", str(image), *dev]) == 0
    text = capsys.readouterr().out
    assert text.startswith("superblock @0x400") and "\nerror:" not in text
    with erofsgen.open_image(image, [str(d) for d in devices]) as img:
        report = rebuild_check(img)
    assert report.ok, report.failures[:10]
    assert report.checked > 5000


@pytest.mark.parametrize("name", MKFS_MATRIX)
def test_mkfs_image_through_the_read_commands(
    erofs_utils: ErofsUtils,
    scenario_tree_short_names: Path,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    name: str,
) -> None:
    blob = tmp_path / "blob"
    opts = [o.replace(BLOB, str(blob)) for o in MKFS_MATRIX[name]]
    image = tmp_path / "image"
    erofs_utils.mkfs(image, scenario_tree_short_names, "--quiet", *opts)
    devices = [blob] if blob.exists() else []
    read_commands(image, devices, tmp_path / "out", capsys)
    ignore = ["xattrs"] if name == "no_xattrs" else []
    assert_same_tree(snapshot(scenario_tree_short_names), snapshot(tmp_path / "out"), ignore_fields=ignore)


@pytest.mark.parametrize("name", PACK_MATRIX)
def test_erofsgen_image_through_the_read_commands(
    scenario_tree: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str], name: str
) -> None:
    image = tmp_path / "image"
    assert cli_main(["pack", "--quiet", *PACK_MATRIX[name], str(scenario_tree), str(image)]) == 0
    read_commands(image, [], tmp_path / "out", capsys)
    assert_same_tree(snapshot(scenario_tree), snapshot(tmp_path / "out"))
