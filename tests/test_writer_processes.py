"""Compression in forked processes: the threads' bytes, errors that name the file, no process left."""

from __future__ import annotations

import itertools
import os
import random
import signal
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from erofsgen import open_image
from erofsgen.cli import main as cli_main
from erofsgen.errors import ErofsgenError, InvalidInputError
from erofsgen.model import Directory, EntryData
from erofsgen.sources.directory import tree_from_directory
from erofsgen.writer import WriteOptions, cutting_ahead, datastage, processes, write_image
from tests.support.pause import PausedCommand
from tests.support.textdata import compressible_text

BS = 4096


@pytest.fixture(scope="module")
def source(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Files for several batches and jobs of their own: text, random data, sizes at block edges."""
    root = tmp_path_factory.mktemp("src")
    rng = random.Random(3)
    for i in range(150):
        size = rng.choice([BS - 1, BS + 1, 3 * BS, 20_000, 70_000])
        data = compressible_text(size, i) if i % 3 else rng.randbytes(size)
        (root / f"f{i:03}").write_bytes(data)
    for i in range(20):
        (root / f"s{i:02}").write_bytes(compressible_text(1 + 150 * i, i))  # held whole in the record
    (root / "sub").mkdir()
    (root / "sub" / "large").write_bytes(compressible_text(3 << 20, 99))
    (root / "sub" / "mixed").write_bytes(
        rng.randbytes(30_000) + bytes(100_000) + compressible_text(50_000, 7)
    )
    return root


class Forks:
    """Every CompressionProcesses made, and how many batches each cut."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.made: list[processes.CompressionProcesses] = []
        self.counts: list[int] = []  # processes forked by each
        self.batches = 0
        made, cut = processes.CompressionProcesses.__init__, processes.CompressionProcesses.cut

        def init(pool: processes.CompressionProcesses, *args: object, **kwargs: object) -> None:
            made(pool, *args, **kwargs)  # type: ignore[arg-type]
            self.made.append(pool)
            self.counts.append(len(pool.processes))

        def counted(pool: processes.CompressionProcesses, forms: list[object]) -> None:
            self.batches += 1
            cut(pool, forms)  # type: ignore[arg-type]

        monkeypatch.setattr(processes.CompressionProcesses, "__init__", init)
        monkeypatch.setattr(processes.CompressionProcesses, "cut", counted)


@pytest.fixture
def forks(monkeypatch: pytest.MonkeyPatch) -> Forks:
    return Forks(monkeypatch)


def children() -> list[int]:
    """This process's child processes."""
    tasks = Path(f"/proc/{os.getpid()}/task")
    return [int(c) for task in tasks.iterdir() for c in (task / "children").read_text().split()]


@pytest.fixture(autouse=True)
def no_process_left() -> Iterator[None]:
    before = set(children())
    yield
    assert set(children()) == before, "a compression process outlived the build"


@pytest.mark.parametrize(
    "options",
    [
        WriteOptions(compression="lz4hc", build_time_ns=0),
        WriteOptions(compression="lz4", ztailpacking=True, build_time_ns=0),
        WriteOptions(compression="lz4hc", pcluster_size=65536, workers=3, build_time_ns=0),
        WriteOptions(compression="zstd", pcluster_size=16384, max_extent_bytes=20_000, build_time_ns=0),
        WriteOptions(compression="lzma", ztailpacking=True, workers=1, build_time_ns=0),
        WriteOptions(compression="deflate", compact_indexes=False, build_time_ns=0),
    ],
    ids=["lz4hc", "lz4-ztail", "lz4hc-C64k-3", "zstd-C16k-extent", "lzma-ztail-1", "deflate-full"],
)
def test_processes_cut_what_threads_cut(
    source: Path, tmp_path: Path, forks: Forks, monkeypatch: pytest.MonkeyPatch, options: WriteOptions
) -> None:
    tree = tree_from_directory(source)
    write_image(tree, tmp_path / "processes.img", options)
    assert len(forks.made) == 1 and forks.batches > 1
    assert forks.counts == [options.workers or datastage.usable_cpus()]
    monkeypatch.setattr(datastage, "USE_PROCESSES", False)
    write_image(tree, tmp_path / "threads.img", options)
    assert len(forks.made) == 1
    assert (tmp_path / "processes.img").read_bytes() == (tmp_path / "threads.img").read_bytes()
    with open_image(tmp_path / "processes.img") as image:
        for path in sorted(source.rglob("*")):
            if path.is_file():
                assert image.read_bytes(str(path.relative_to(source))) == path.read_bytes()


def test_no_fork_beside_another_thread(source: Path, tmp_path: Path, forks: Forks) -> None:
    """A fork copies only the calling thread (and whatever locks the others hold): threads then."""
    release = threading.Event()
    other = threading.Thread(target=release.wait)
    other.start()
    try:
        write_image(tree_from_directory(source), tmp_path / "a.img", WriteOptions(compression="lz4"))
    finally:
        release.set()
        other.join()
    assert forks.made == []
    with open_image(tmp_path / "a.img") as image:
        assert image.read_bytes("sub/mixed") == (source / "sub" / "mixed").read_bytes()


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (lambda p: p.unlink(), "cannot read"),
        (lambda p: p.write_bytes(p.read_bytes() + b"more"), "file changed size while packing"),
        (lambda p: p.write_bytes(b"short" * 10_000), "file shrank while packing"),
    ],
    ids=["vanished", "grew", "shrank"],
)
def test_a_changed_file_is_named_and_nothing_is_left(
    source: Path, tmp_path: Path, forks: Forks, change: object, message: str
) -> None:
    copy = tmp_path / "src"
    copy.mkdir()
    for path in source.iterdir():
        if path.is_file():
            (copy / path.name).write_bytes(path.read_bytes())
    (copy / "big").write_bytes(compressible_text(200_000, 5))
    tree = tree_from_directory(copy)
    change(copy / "big")  # type: ignore[operator]
    out = tmp_path / "out"
    out.mkdir()
    with pytest.raises(InvalidInputError, match=message) as caught:
        write_image(tree, out / "a.img", WriteOptions(compression="lz4hc"))
    assert caught.value.path == "/big"
    assert forks.batches and list(out.iterdir()) == []


def test_a_killed_process_fails_the_build_clearly(
    source: Path, tmp_path: Path, forks: Forks, monkeypatch: pytest.MonkeyPatch
) -> None:
    def kill_them(index: int) -> None:
        if index == 3:
            os.kill(forks.made[0].processes[0].pid, signal.SIGKILL)
            os.kill(forks.made[0].processes[1].pid, signal.SIGKILL)

    monkeypatch.setattr(datastage, "job_hook", kill_them)
    out = tmp_path / "out"
    out.mkdir()
    with pytest.raises(ErofsgenError, match=r"a compression process \(\d+\) stopped unexpectedly"):
        write_image(tree_from_directory(source), out / "a.img", WriteOptions(compression="lz4hc", workers=2))
    assert list(out.iterdir()) == []


def test_cli_error_in_a_process_is_one_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    copy = tmp_path / "src"
    copy.mkdir()
    (copy / "a").write_bytes(compressible_text(50_000, 1))
    (copy / "b").write_bytes(compressible_text(50_000, 2))
    cut_ahead = datastage.DataStage.cut_ahead

    def remove_b_first(stage: datastage.DataStage, data: EntryData) -> None:
        if data.name == b"b":
            os.unlink(data.path)  # found by the scan, gone before it is read
        cut_ahead(stage, data)

    with pytest.MonkeyPatch.context() as m:
        m.setattr(datastage.DataStage, "cut_ahead", remove_b_first)
        status = cli_main(["pack", "--quiet", "-zlz4hc", str(copy), str(tmp_path / "a.img")])
    err = capsys.readouterr().err
    assert status == 2
    assert err == f"erofsgen: error: /b: cannot read {copy / 'b'}: No such file or directory\n"
    assert not (tmp_path / "a.img").exists()


def test_killed_writer_takes_its_processes_with_it(tmp_path: Path) -> None:
    """SIGKILL leaves no cleanup to the writer: its processes die with it (PR_SET_PDEATHSIG)."""
    src = tmp_path / "src"
    src.mkdir()
    for i in range(4):
        (src / f"f{i}").write_bytes(os.urandom(300_000))
    child = PausedCommand(
        "copy_file_range", ["pack", "--quiet", "-zlz4hc", str(src), str(tmp_path / "a.img")]
    )
    child.wait_paused()
    tasks = Path(f"/proc/{child.proc.pid}/task")
    forked = [int(c) for task in tasks.iterdir() for c in (task / "children").read_text().split()]
    assert forked
    child.proc.kill()
    child.finish()
    deadline = time.monotonic() + 30  # bounded wait for a state, not a timing assertion
    while any(Path(f"/proc/{pid}").exists() for pid in forked):
        assert time.monotonic() < deadline, "a compression process outlived its writer"
        time.sleep(0.05)
    assert [p.name for p in tmp_path.iterdir()] == ["src"]


def test_spool_room_is_freed_once_in_the_image(
    source: Path, tmp_path: Path, forks: Forks, monkeypatch: pytest.MonkeyPatch
) -> None:
    """What the processes put in the spool is punched out once written: nothing stays there."""
    from erofsgen.writer import emit, writeback

    punched: list[tuple[int, int]] = []
    left: list[int] = []

    def punch(fd: int, offset: int, length: int) -> None:
        writeback.punch_hole(fd, offset, length)
        punched.append((offset, length))
        left.append(os.fstat(fd).st_blocks)

    monkeypatch.setattr(emit, "punch_hole", punch)
    write_image(tree_from_directory(source), tmp_path / "a.img", WriteOptions(compression="lz4hc"))
    assert forks.made and len(punched) > 100
    ranges = sorted(punched)
    assert all(a + n <= b for (a, n), (b, _) in itertools.pairwise(ranges))
    assert left[-1] == 0


def test_small_files_are_read_ahead_while_the_others_are_cut(
    source: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Files held whole in their records are read by the copier thread during compression."""
    from erofsgen.writer import copier

    read_ahead: list[int] = []
    monkeypatch.setattr(copier, "file_hook", read_ahead.append)
    write_image(tree_from_directory(source), tmp_path / "a.img", WriteOptions(compression="lz4hc"))
    small = [p for p in source.iterdir() if p.is_file() and 0 < p.stat().st_size <= 3000]
    assert small and len(read_ahead) == len(small)
    with open_image(tmp_path / "a.img") as image:
        for path in small:
            assert image.read_bytes(path.name) == path.read_bytes()


def test_a_small_file_gone_before_its_read_ahead_is_named(tmp_path: Path) -> None:
    src = tmp_path / "src"
    src.mkdir()
    (src / "big").write_bytes(compressible_text(100_000, 1))
    (src / "small").write_bytes(b"a line\n" * 20)
    tree = tree_from_directory(src)
    (src / "small").unlink()
    with pytest.raises(InvalidInputError, match="cannot read") as caught:
        write_image(tree, tmp_path / "a.img", WriteOptions(compression="lz4hc"))
    assert caught.value.path == "/small"
    assert not (tmp_path / "a.img").exists()


def scan_cutting_ahead(
    source: Path, stage: datastage.DataStage | None, seen: list[bytes] | None = None
) -> Directory:
    def found(data: EntryData) -> None:
        if seen is not None:
            seen.append(data.path)
        if stage is not None:
            stage.cut_ahead(data)

    return tree_from_directory(source, on_file=found)


@pytest.mark.parametrize(
    "options",
    [
        WriteOptions(compression="lz4hc", build_time_ns=0),
        WriteOptions(compression="lzma", ztailpacking=True, pcluster_size=16384, build_time_ns=0),
    ],
    ids=["lz4hc", "lzma-ztail-C16k"],
)
def test_files_cut_during_the_scan_give_the_same_bytes(
    source: Path, tmp_path: Path, forks: Forks, monkeypatch: pytest.MonkeyPatch, options: WriteOptions
) -> None:
    claimed: list[int] = []
    claim = datastage.DataStage._claim

    def counted(stage: datastage.DataStage, *args: object) -> object:
        claimed.append(1)
        return claim(stage, *args)  # type: ignore[arg-type]

    monkeypatch.setattr(datastage.DataStage, "_claim", counted)
    with cutting_ahead(options) as stage:
        assert stage is not None
        tree = scan_cutting_ahead(source, stage)
        assert forks.batches  # cut while the scan went on
        write_image(tree, tmp_path / "ahead.img", options, stage=stage)
    write_image(tree_from_directory(source), tmp_path / "after.img", options)
    assert (tmp_path / "ahead.img").read_bytes() == (tmp_path / "after.img").read_bytes()
    assert len(claimed) == sum(1 for p in source.rglob("*") if p.is_file() and p.stat().st_size > BS)


def test_the_scan_finds_files_in_inode_order(source: Path) -> None:
    """Breadth first, names bytewise: the order the writer numbers inodes in."""
    seen: list[bytes] = []
    scan_cutting_ahead(source, None, seen)
    expected = []
    level = [source]
    while level:
        below = []
        for directory in level:
            for entry in sorted(os.listdir(os.fsencode(directory))):
                path = os.path.join(os.fsencode(directory), entry)
                if os.path.isdir(path):
                    below.append(Path(os.fsdecode(path)))
                else:
                    expected.append(path)
        level = below
    assert seen == expected


def test_a_file_cut_ahead_fails_only_if_the_writer_reaches_it(source: Path, tmp_path: Path) -> None:
    """Its error names its image path when it is in the tree; left out, it costs nothing."""
    copy = tmp_path / "src"
    (copy / "sub").mkdir(parents=True)
    (copy / "sub" / "gone").write_bytes(compressible_text(80_000, 1))
    (copy / "kept").write_bytes(compressible_text(80_000, 2))
    options = WriteOptions(compression="lz4hc")

    def scan(stage: datastage.DataStage) -> Directory:
        def found(data: EntryData) -> None:
            if data.name == b"gone":
                os.unlink(data.path)  # gone before its cut
            stage.cut_ahead(data)

        return tree_from_directory(copy, on_file=found)

    with cutting_ahead(options) as stage:
        assert stage is not None
        tree = scan(stage)
        with pytest.raises(InvalidInputError, match="cannot read") as caught:
            write_image(tree, tmp_path / "a.img", options, stage=stage)
    assert caught.value.path == "/sub/gone" and not (tmp_path / "a.img").exists()
    (copy / "sub" / "gone").write_bytes(b"back")
    with cutting_ahead(options) as stage:
        assert stage is not None
        tree = scan(stage)
        sub = tree.children[b"sub"]
        assert isinstance(sub, Directory)
        del sub.children[b"gone"]
        write_image(tree, tmp_path / "b.img", options, stage=stage)
    with open_image(tmp_path / "b.img") as image:
        assert image.listdir("/sub") == [] and image.read_bytes("kept") == (copy / "kept").read_bytes()


def test_a_stage_serves_the_options_it_was_made_for(source: Path, tmp_path: Path) -> None:
    other = WriteOptions(compression="lz4")
    with (
        cutting_ahead(WriteOptions(compression="lz4")) as stage,
        pytest.raises(InvalidInputError, match="other"),
    ):
        write_image(tree_from_directory(source), tmp_path / "a.img", other, stage=stage)
    with cutting_ahead(WriteOptions(compression="lz4", fragments=True)) as none:
        assert none is None


def test_a_fork_that_fails_leaves_the_work_to_threads(
    source: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The second fork fails (a process limit): the first process is ended, nothing leaks."""
    real_fork = os.fork
    forked: list[int] = []

    def fork() -> int:
        if forked:
            raise BlockingIOError(11, "Resource temporarily unavailable")
        pid = real_fork()
        if pid:
            forked.append(pid)
        return pid

    descriptors = len(os.listdir("/proc/self/fd"))
    monkeypatch.setattr(os, "fork", fork)
    options = WriteOptions(compression="lz4hc", workers=2, build_time_ns=0)
    write_image(tree_from_directory(source), tmp_path / "a.img", options)
    assert len(forked) == 1 and not Path(f"/proc/{forked[0]}").exists()
    assert len(os.listdir("/proc/self/fd")) == descriptors
    monkeypatch.setattr(datastage, "USE_PROCESSES", False)
    write_image(tree_from_directory(source), tmp_path / "b.img", options)
    assert (tmp_path / "a.img").read_bytes() == (tmp_path / "b.img").read_bytes()


def test_cutting_ahead_refuses_wrong_types_and_a_second_image(source: Path, tmp_path: Path) -> None:
    options = WriteOptions(compression="lz4hc")
    with pytest.raises(InvalidInputError, match="options must be WriteOptions, not dict"):
        cutting_ahead({"compression": "lz4hc"}).__enter__()  # type: ignore[arg-type]
    with pytest.raises(InvalidInputError, match="on_file must be callable, not int"):
        tree_from_directory(source, on_file=3)  # type: ignore[arg-type]
    with pytest.raises(InvalidInputError, match="stage must come from cutting_ahead"):
        write_image(tree_from_directory(source), tmp_path / "x.img", options, stage="stage")  # type: ignore[arg-type]
    with cutting_ahead(options) as stage:
        assert stage is not None
        with pytest.raises(InvalidInputError, match="EntryData or PathData, not bytes"):
            stage.cut_ahead(b"/etc/hosts")  # type: ignore[arg-type]
        tree = scan_cutting_ahead(source, stage)
        write_image(tree, tmp_path / "a.img", options, stage=stage)
        with pytest.raises(InvalidInputError, match="serves one image"):
            write_image(tree, tmp_path / "b.img", options, stage=stage)
    assert not (tmp_path / "b.img").exists() and not (tmp_path / "x.img").exists()
