"""SIGTERM and SIGHUP end a command the way Ctrl-C does: cleanup runs, one line, exit 128 + N."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from types import FrameType

import pytest

from erofsgen.cli import main as cli_main
from erofsgen.model import BytesData, Directory, File, Metadata
from erofsgen.writer import write_image

from .support.pause import PausedCommand, open_temporary_files

OLD_IMAGE = b"the previous image, which must survive"


def source_tree(root: Path, files: int = 4, size: int = 256 * 1024) -> Path:
    root.mkdir()
    for i in range(files):
        (root / f"f{i}").write_bytes(os.urandom(size))
    return root


@pytest.mark.parametrize(
    ("signum", "status"), [(signal.SIGTERM, 143), (signal.SIGHUP, 129)], ids=["SIGTERM", "SIGHUP"]
)
@pytest.mark.parametrize(
    ("options", "pause_at"), [([], "pwrite"), (["-zlz4hc"], "copy_file_range")], ids=["plain", "compressed"]
)
def test_signal_during_pack_leaves_nothing_and_keeps_the_old_image(
    signum: signal.Signals, status: int, options: list[str], pause_at: str, tmp_path: Path
) -> None:
    source = source_tree(tmp_path / "src")
    out_dir = tmp_path / "out"
    out_dir.mkdir()
    image = out_dir / "img.erofs"
    image.write_bytes(OLD_IMAGE)
    # Paused in the main thread's first write to the image: the temporary image exists, the
    # copier (or, compressed, the workers and their compression processes) and the digest
    # threads run.
    child = PausedCommand(pause_at, ["pack", "--quiet", *options, str(source), str(image)])
    child.wait_paused()
    assert open_temporary_files(child.proc.pid, out_dir), "no temporary file"
    forked = child_processes(child.proc.pid)
    assert len(forked) == (len(os.sched_getaffinity(0)) if options else 0)
    child.proc.send_signal(signum)
    code, err = child.finish()
    assert code == status, err
    assert err == f"erofsgen: error: terminated by {signum.name}\n"
    assert sorted(p.name for p in out_dir.iterdir()) == ["img.erofs"]
    assert image.read_bytes() == OLD_IMAGE
    assert not [pid for pid in forked if Path(f"/proc/{pid}").exists()], "a compression process outlived pack"


def child_processes(pid: int) -> list[int]:
    return [
        int(c)
        for task in Path(f"/proc/{pid}/task").iterdir()
        for c in (task / "children").read_text().split()
    ]


@pytest.mark.parametrize(
    ("signum", "line"),
    [(signal.SIGTERM, "terminated by SIGTERM"), (signal.SIGINT, "interrupted")],
    ids=["SIGTERM", "SIGINT"],
)
def test_fifo_without_reader_waits_and_a_signal_ends_it(
    signum: signal.Signals, line: str, tmp_path: Path
) -> None:
    """Like `cat > fifo`, pack waits for a reader to open the FIFO; a signal still ends it cleanly."""
    source = source_tree(tmp_path / "src", files=1)
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    proc = subprocess.Popen(
        [sys.executable, "-m", "erofsgen", "pack", "--quiet", str(source), str(fifo)],
        cwd=Path(__file__).resolve().parents[1],
        stderr=subprocess.PIPE,
    )
    try:
        wchan = Path(f"/proc/{proc.pid}/wchan")
        deadline = time.monotonic() + 120  # bounded wait for a state, not a timing assertion
        while wchan.read_text() != "wait_for_partner":  # the kernel's FIFO open, waiting for a reader
            assert proc.poll() is None and time.monotonic() < deadline, "pack never waited on the FIFO"
            time.sleep(0.05)
        proc.send_signal(signum)
        _, err = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    assert (proc.returncode, err.decode()) == (128 + signum, f"erofsgen: error: {line}\n")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["fifo", "src"]


def test_ignored_sighup_stays_ignored(tmp_path: Path) -> None:
    """Under `nohup`, SIGHUP must not stop pack; SIGTERM still does."""
    source = source_tree(tmp_path / "src", files=1)
    image = tmp_path / "img.erofs"
    child = PausedCommand(
        "pwrite",
        ["pack", "--quiet", str(source), str(image)],
        preexec_fn=lambda: signal.signal(signal.SIGHUP, signal.SIG_IGN),
    )
    child.wait_paused()
    child.proc.send_signal(signal.SIGHUP)
    child.proc.send_signal(signal.SIGTERM)  # delivered in order: SIGHUP is seen (and ignored) first
    code, err = child.finish()
    assert (code, err) == (143, "erofsgen: error: terminated by SIGTERM\n")
    assert not image.exists()


def small_image(path: Path, files: int = 3, size: int = 64 * 1024) -> Path:
    tree = Directory(
        Metadata(0o755),
        {b"f%d" % i: File(Metadata(0o644), BytesData(os.urandom(size))) for i in range(files)},
    )
    write_image(tree, path)
    return path


def test_sigterm_during_extract(tmp_path: Path) -> None:
    image = small_image(tmp_path / "img.erofs")
    dest = tmp_path / "dest"
    child = PausedCommand("utime", ["extract", "--quiet", str(image), str(dest)])  # after a file's data
    child.wait_paused()
    child.proc.send_signal(signal.SIGTERM)
    code, err = child.finish()
    assert (code, err) == (143, "erofsgen: error: terminated by SIGTERM\n")


def test_sigterm_during_cat(tmp_path: Path) -> None:
    image = small_image(tmp_path / "img.erofs", files=1)
    child = PausedCommand("pread", ["cat", str(image), "/f0"], stdout=subprocess.PIPE)
    child.wait_paused()
    child.proc.send_signal(signal.SIGTERM)
    code, err = child.finish()
    assert (code, err) == (143, "erofsgen: error: terminated by SIGTERM\n")


def test_main_restores_the_signal_handlers(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    def mine(signum: int, frame: FrameType | None) -> None:
        raise AssertionError("not expected to run")

    previous = {s: signal.signal(s, mine) for s in (signal.SIGTERM, signal.SIGHUP)}
    try:
        source = source_tree(tmp_path / "src", files=1, size=10)
        assert cli_main(["pack", "--quiet", str(source), str(tmp_path / "ok.img")]) == 0
        assert cli_main(["pack", "--quiet", str(source), str(tmp_path / "no" / "x.img")]) == 2
        assert signal.getsignal(signal.SIGTERM) is mine
        assert signal.getsignal(signal.SIGHUP) is mine
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)
    capsys.readouterr()
