"""`erofsgen pack`: option mapping (writer stubbed), errors, progress, and real images."""

from __future__ import annotations

import io
import os
import subprocess
import sys
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from erofsgen import writer
from erofsgen.cli import main
from erofsgen.cli.progress import Progress
from erofsgen.model import Directory, iter_tree
from erofsgen.writer.options import InodeFormat, WriteOptions
from tests.support.compare import assert_same_tree
from tests.support.erofs_utils import ErofsUtils
from tests.support.kernel import MountImage
from tests.support.snapshot import snapshot


@dataclass
class Capture:
    """What the stubbed write_image was called with."""

    calls: list[tuple[Directory, Any, WriteOptions]] = field(default_factory=list)

    @property
    def tree(self) -> Directory:
        return self.calls[-1][0]

    @property
    def options(self) -> WriteOptions:
        return self.calls[-1][2]


@pytest.fixture
def fake_writer(monkeypatch: pytest.MonkeyPatch) -> Capture:
    capture = Capture()

    def write_image(
        root: Directory,
        output: Any,
        options: WriteOptions,
        *,
        progress: Any = None,
        sync: bool = True,
        stage: Any = None,
    ) -> Any:
        capture.calls.append((root, output, options))
        if progress is not None:
            progress(10, 10)
        return SimpleNamespace(inodes=3, blocks=2, block_size=options.block_size, uuid=uuid.UUID(int=1))

    monkeypatch.setattr(writer, "write_image", write_image)
    monkeypatch.delenv("SOURCE_DATE_EPOCH", raising=False)
    return capture


@pytest.fixture
def src(tmp_path: Path) -> Path:
    root = tmp_path / "src"
    (root / "skip" / "inner").mkdir(parents=True)
    (root / "a.txt").write_bytes(b"a")
    (root / "b.log").write_bytes(b"b")
    os.link(root / "a.txt", root / "a-link")
    for path, seconds in ((root / "a.txt", 100), (root / "b.log", 300), (root, 200)):
        os.utime(path, ns=(seconds * 10**9, seconds * 10**9 + 5))
    os.chown(root / "b.log", 1000, 1000)
    return root


def _pack(src: Path, *args: str) -> int:
    return main(["pack", os.fspath(src), os.fspath(src.parent / "out.img"), *args])


def _mtimes(tree: Directory) -> dict[bytes, int]:
    return {path: node.meta.mtime_ns for path, node in iter_tree(tree) if path in (b"", b"a.txt", b"b.log")}


# --------------------------------------------------------------------------- option mapping


def test_defaults(fake_writer: Capture, src: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert _pack(src) == 0
    assert fake_writer.options == WriteOptions()
    assert fake_writer.calls[0][1] == os.fspath(src.parent / "out.img")
    out, err = capsys.readouterr()
    assert out == f"{src.parent / 'out.img'}: 3 inodes, 2 blocks of 4096 bytes, uuid {uuid.UUID(int=1)}\n"
    assert err == ""  # not a terminal: no progress display


def test_quiet(fake_writer: Capture, src: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert _pack(src, "--quiet") == 0
    assert capsys.readouterr() == ("", "")


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        (["-b", "1024"], {"block_size": 1024}),
        (["-b512"], {"block_size": 512}),
        (
            ["-U", "6e9c1a2e-3f4b-4c6d-8e9f-0a1b2c3d4e5f"],
            {"uuid": uuid.UUID("6e9c1a2e-3f4b-4c6d-8e9f-0a1b2c3d4e5f")},
        ),
        (["-Uclear"], {"uuid": uuid.UUID(int=0)}),
        (["-L", "rootfs"], {"label": "rootfs"}),
        (["-x", "-1"], {"xattrs": False, "xattr_share_threshold": 0}),
        (["-x0"], {"xattr_share_threshold": 0}),
        (["-x", "5"], {"xattr_share_threshold": 5}),
        (["-E", "force-inode-compact"], {"inode_format": InodeFormat.COMPACT}),
        (["-Eforce-inode-compact,force-inode-extended"], {"inode_format": InodeFormat.EXTENDED}),
        (["-E", "force-inode-extended", "-E", "force-inode-compact"], {"inode_format": InodeFormat.COMPACT}),
        (["-E", "noinline_data,nosbcrc"], {"inline_data": False, "sb_checksum": False}),
        (
            ["--xattr-prefix=trusted.overlay.", "--xattr-prefix", "user.long."],
            {"xattr_prefixes": (b"trusted.overlay.", b"user.long.")},
        ),
    ],
)
def test_write_options(fake_writer: Capture, src: Path, args: list[str], expected: dict[str, object]) -> None:
    assert _pack(src, *args) == 0
    for name, value in expected.items():
        assert getattr(fake_writer.options, name) == value, name


def test_random_uuid(fake_writer: Capture, src: Path) -> None:
    assert _pack(src, "-U", "random") == 0
    first = fake_writer.options.uuid
    assert _pack(src, "-U", "random") == 0
    assert first is not None and first.version == 4 and first != fake_writer.options.uuid


def test_drop_xattrs_skips_reading_them(fake_writer: Capture, src: Path) -> None:
    os.setxattr(src / "a.txt", "user.k", b"v")
    assert _pack(src) == 0
    assert any(node.meta.xattrs for _, node in iter_tree(fake_writer.tree))
    assert _pack(src, "-x", "-1") == 0
    assert not any(node.meta.xattrs for _, node in iter_tree(fake_writer.tree))


# --------------------------------------------------------------------------- times


def test_no_time_options_keep_times(fake_writer: Capture, src: Path) -> None:
    assert _pack(src) == 0
    assert fake_writer.options.build_time_ns is None
    assert _mtimes(fake_writer.tree) == {
        b"": 200 * 10**9 + 5,
        b"a.txt": 100 * 10**9 + 5,
        b"b.log": 300 * 10**9 + 5,
    }


def test_fixed_time(fake_writer: Capture, src: Path) -> None:
    assert _pack(src, "-T", "150") == 0
    assert fake_writer.options.build_time_ns == 150 * 10**9
    assert set(_mtimes(fake_writer.tree).values()) == {150 * 10**9}
    assert _pack(src, "-T150", "--all-time") == 0
    assert set(_mtimes(fake_writer.tree).values()) == {150 * 10**9}


def test_fixed_mkfs_time_only(fake_writer: Capture, src: Path) -> None:
    assert _pack(src, "-T", "150", "--mkfs-time") == 0
    assert fake_writer.options.build_time_ns == 150 * 10**9
    assert _mtimes(fake_writer.tree)[b"b.log"] == 300 * 10**9 + 5


def test_source_date_epoch_clamps(fake_writer: Capture, src: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SOURCE_DATE_EPOCH", "200")
    assert _pack(src) == 0
    assert fake_writer.options.build_time_ns == 200 * 10**9
    assert _mtimes(fake_writer.tree) == {b"": 200 * 10**9, b"a.txt": 100 * 10**9 + 5, b"b.log": 200 * 10**9}


def test_source_date_epoch_with_mkfs_time(
    fake_writer: Capture, src: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("SOURCE_DATE_EPOCH", "200")
    assert _pack(src, "--mkfs-time") == 0
    assert fake_writer.options.build_time_ns == 200 * 10**9
    assert _mtimes(fake_writer.tree)[b"b.log"] == 300 * 10**9 + 5


def test_fixed_time_wins_over_source_date_epoch(
    fake_writer: Capture, src: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("SOURCE_DATE_EPOCH", "200")
    assert _pack(src, "-T", "50") == 0
    assert fake_writer.options.build_time_ns == 50 * 10**9
    assert set(_mtimes(fake_writer.tree).values()) == {50 * 10**9}


def test_bad_source_date_epoch(
    fake_writer: Capture, src: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("SOURCE_DATE_EPOCH", "yesterday")
    assert _pack(src) == 2
    assert (
        capsys.readouterr().err == "erofsgen: error: SOURCE_DATE_EPOCH: 'yesterday' is not a UNIX timestamp\n"
    )
    assert fake_writer.calls == []


# --------------------------------------------------------------------------- owners and exclusions


def _owners(tree: Directory) -> set[tuple[int, int]]:
    return {(node.meta.uid, node.meta.gid) for _, node in iter_tree(tree)}


def test_all_root(fake_writer: Capture, src: Path) -> None:
    assert _pack(src, "--all-root") == 0
    assert _owners(fake_writer.tree) == {(0, 0)}


def test_forced_ids_and_offsets(fake_writer: Capture, src: Path) -> None:
    assert _pack(src, "--force-uid=7", "--gid-offset=10") == 0
    assert _owners(fake_writer.tree) == {(7, 10), (7, 1010)}
    assert _pack(src, "--force-gid", "3", "--uid-offset", "5") == 0
    assert _owners(fake_writer.tree) == {(5, 3), (1005, 3)}


def test_offset_applied_once_to_hard_links(fake_writer: Capture, src: Path) -> None:
    assert _pack(src, "--uid-offset=100") == 0
    node = fake_writer.tree.children[b"a.txt"]
    assert fake_writer.tree.children[b"a-link"] is node and node.meta.uid == 100


def test_exclusions(fake_writer: Capture, src: Path) -> None:
    assert _pack(src, "--exclude-path=/skip", "--exclude-regex", r"\.log$", "--exclude-path", "a-link") == 0
    assert set(fake_writer.tree.children) == {b"a.txt"}


# --------------------------------------------------------------------------- errors


@pytest.mark.parametrize(
    "args",
    [
        ["-E", "bogus"],
        ["-E", "nosbcrc,bogus"],
        ["-U", "nope"],
        ["-b", "8192"],
        ["-T", "x"],
        ["-T", "-1"],
        ["-T", str(2**63)],  # beyond a signed 64-bit mtime: refused as the option, not as a file's
    ],
)
def test_bad_options_are_usage_errors(
    fake_writer: Capture, src: Path, args: list[str], capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as info:
        _pack(src, *args)
    assert info.value.code == 2
    assert "erofsgen pack: error:" in capsys.readouterr().err
    assert fake_writer.calls == []


@pytest.mark.parametrize(
    ("args", "message"),
    [(["-L", "a-label-over-15-bytes"], "volume label"), (["--force-uid=-1"], "force_uid")],
)
def test_invalid_values_exit_2(
    fake_writer: Capture, src: Path, args: list[str], message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert _pack(src, *args) == 2
    err = capsys.readouterr().err
    assert err.startswith("erofsgen: error:") and message in err and err.count("\n") == 1
    assert fake_writer.calls == []


def test_offset_overflow_names_the_path(
    fake_writer: Capture, src: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert _pack(src, f"--uid-offset={2**32 - 1000}") == 2
    assert capsys.readouterr().err == "erofsgen: error: /b.log: uid 4294967296 is outside 0..4294967294\n"


@pytest.mark.parametrize("name", ["missing", "a.txt"])
def test_bad_source(fake_writer: Capture, src: Path, name: str, capsys: pytest.CaptureFixture[str]) -> None:
    source = src / name
    image = src.parent / "out.img"
    assert main(["pack", os.fspath(source), os.fspath(image)]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"erofsgen: error: {source}: ")
    assert ("No such file" if name == "missing" else "not a tar archive") in err
    assert fake_writer.calls == [] and not image.exists()


# --------------------------------------------------------------------------- progress display


class FakeTerminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_progress_draws_throttled_and_clears() -> None:
    clock = [100.0]
    stream = FakeTerminal()
    with Progress(stream=stream, clock=lambda: clock[0]) as bar:
        bar.scanned(10)
        bar.written(0, 3 * 1024 * 1024)  # within 0.1 s of the last draw: skipped
        clock[0] += 0.2
        bar.written(1024 * 1024, 3 * 1024 * 1024)
        bar.written(3 * 1024 * 1024, 3 * 1024 * 1024)  # the final update is always drawn
    text = stream.getvalue()
    assert "scanning: 10 entries" in text
    assert "1.0 MiB / 3.0 MiB" in text and "3.0 MiB / 3.0 MiB" in text
    assert "0 B / " not in text
    assert text.endswith("\r\x1b[K")


@pytest.mark.parametrize(("stream", "quiet"), [(FakeTerminal(), True), (io.StringIO(), False)])
def test_progress_is_silent_when_quiet_or_not_a_terminal(stream: io.StringIO, quiet: bool) -> None:
    with Progress(stream=stream, quiet=quiet) as bar:
        bar.scanned(1)
        bar.written(1, 1)
    assert stream.getvalue() == ""


# --------------------------------------------------------------------------- real images


def test_pack_writes_an_image(src: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("SOURCE_DATE_EPOCH", raising=False)
    image = tmp_path / "real.img"
    result = subprocess.run(
        [sys.executable, "-m", "erofsgen", "pack", os.fspath(src), os.fspath(image), "-T", "0"],
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith(f"{image}: ") and result.stderr == ""
    data = image.read_bytes()
    assert data[1024:1028] == bytes.fromhex("e2e1f5e0") and len(data) % 4096 == 0


def test_pack_missing_source_leaves_no_image(tmp_path: Path) -> None:
    image = tmp_path / "real.img"
    result = subprocess.run(
        [sys.executable, "-m", "erofsgen", "pack", os.fspath(tmp_path / "nope"), os.fspath(image)],
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 2
    assert result.stderr.startswith(f"erofsgen: error: {tmp_path / 'nope'}: ")
    assert list(tmp_path.iterdir()) == []


def test_pack_passes_fsck(src: Path, tmp_path: Path, erofs_utils: ErofsUtils) -> None:
    image = tmp_path / "real.img"
    assert main(["pack", os.fspath(src), os.fspath(image), "--quiet"]) == 0
    result = erofs_utils.fsck(image)
    assert result.returncode == 0, result.stdout + result.stderr


def test_pack_scenario_tree_mounts_identically(
    scenario_tree_short_names: Path, tmp_path: Path, kernel_mount: MountImage
) -> None:
    image = tmp_path / "scenario.img"
    assert main(["pack", os.fspath(scenario_tree_short_names), os.fspath(image), "--quiet"]) == 0
    with kernel_mount(image) as mounted:
        assert_same_tree(snapshot(scenario_tree_short_names), snapshot(mounted))
