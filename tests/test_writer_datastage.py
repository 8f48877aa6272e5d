"""The data stage: examined data is read exactly once, and no output depends on thread timing."""

from __future__ import annotations

import io
import os
import random
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path

import pytest

from erofsgen import open_image
from erofsgen.errors import InvalidInputError
from erofsgen.model import BytesData, Directory, File, Metadata, PathData, StreamData
from erofsgen.writer import WriteOptions, copier, datastage, filecopy, plan, write_image
from erofsgen.writer.header import Area, MetadataWriter
from erofsgen.writer.policy import LayoutPolicy

SIZES = [0, 1, 511, 512, 4095, 4096, 4097, 9000, 3 << 20]  # block edges and a multi-chunk one


class CountingStream(io.RawIOBase):
    """A forward-only stream that counts the bytes handed out and refuses to seek."""

    def __init__(self, data: bytes, log: list[str] | None = None, name: str = "") -> None:
        super().__init__()
        self.data = data
        self.pos = 0
        self.bytes_read = 0
        self.log = log
        self.name = name

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return False

    def readinto(self, buffer: bytearray | memoryview) -> int:  # type: ignore[override]
        n = min(len(buffer), len(self.data) - self.pos)
        buffer[:n] = self.data[self.pos : self.pos + n]
        self.pos += n
        self.bytes_read += n
        if self.log is not None and n:
            self.log.append(self.name)
        return n


def content(i: int, size: int) -> bytes:
    return bytes((i * 7 + k) % 251 for k in range(min(size, 251))) * (size // 251 + 1)


@dataclass
class StreamTree:
    root: Directory
    streams: list[CountingStream]


def stream_tree() -> StreamTree:
    streams = []
    sub = Directory(Metadata(0o755))
    for i, size in enumerate(SIZES):
        stream = CountingStream(content(i, size)[:size])
        streams.append(stream)
        sub.children[b"s%02d" % i] = File(Metadata(), StreamData(stream, size, f"<stream {i}>"))  # type: ignore[arg-type]
    return StreamTree(Directory(Metadata(0o755), {b"sub": sub}), streams)


def bytes_tree() -> Directory:
    sub = Directory(Metadata(0o755))
    for i, size in enumerate(SIZES):
        sub.children[b"s%02d" % i] = File(Metadata(), BytesData(content(i, size)[:size]))
    return Directory(Metadata(0o755), {b"sub": sub})


def test_streams_are_read_exactly_once(tmp_path: Path) -> None:
    tree = stream_tree()
    write_image(tree.root, tmp_path / "img")
    assert [s.bytes_read for s in tree.streams] == SIZES
    with open_image(tmp_path / "img") as img:
        for i, size in enumerate(SIZES):
            assert img.read_bytes(f"/sub/s{i:02d}") == content(i, size)[:size]
    # Spooled data is stored exactly as the same bytes held in memory would be.
    write_image(bytes_tree(), tmp_path / "ref")
    assert (tmp_path / "img").read_bytes() == (tmp_path / "ref").read_bytes()


def test_a_stream_cannot_be_opened_twice() -> None:
    data = StreamData(io.BytesIO(b"abc"), 3)
    data.open()
    with pytest.raises(OSError, match="already read"):
        data.open()


@pytest.mark.parametrize(("actual", "message"), [(99, "short of its size"), (101, "runs on past its size")])
def test_stream_of_the_wrong_length_is_refused(actual: int, message: str, tmp_path: Path) -> None:
    good = StreamData(io.BytesIO(b"g" * 100), 100)
    bad = StreamData(io.BytesIO(b"b" * actual), 100)
    root = Directory(Metadata(0o755), {b"good": File(Metadata(), good), b"bad": File(Metadata(), bad)})
    out = tmp_path / "img"
    with pytest.raises(InvalidInputError, match=message) as info:
        write_image(root, out)
    assert "/bad" in str(info.value)
    assert sorted(p.name for p in tmp_path.iterdir()) == []


def test_output_does_not_depend_on_worker_timing(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Several workers, jobs delayed at random: the image bytes stay the same."""
    log: list[str] = []
    images = []
    for run, workers in enumerate([1, 4, 4]):
        rng = random.Random(run)
        monkeypatch.setattr(datastage, "WORKERS", workers)
        monkeypatch.setattr(datastage, "job_hook", lambda index, r=rng: time.sleep(r.random() / 50))
        root = Directory(Metadata(0o755))
        for i in range(24):
            size = (i * 1777) % 9000
            stream = CountingStream(content(i, size)[:size], log, f"{run}:{i}")
            root.children[b"f%02d" % i] = File(Metadata(), StreamData(stream, size))  # type: ignore[arg-type]
        write_image(root, tmp_path / f"img{run}")
        images.append((tmp_path / f"img{run}").read_bytes())
    assert images[0] == images[1] == images[2]
    # and the jobs did run in different orders, so the equality above means something
    orders = [[e.split(":")[1] for e in dict.fromkeys(log) if e.startswith(f"{run}:")] for run in range(3)]
    assert orders[1] != orders[0] or orders[2] != orders[0]


def test_first_failure_in_order_is_reported(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """Two bad streams: the earlier one is blamed even when the later one fails first."""
    monkeypatch.setattr(datastage, "WORKERS", 2)
    monkeypatch.setattr(datastage, "job_hook", lambda index: time.sleep(0.2 if index == 0 else 0))
    root = Directory(Metadata(0o755))
    for i in range(2):
        root.children[b"bad%d" % i] = File(Metadata(), StreamData(io.BytesIO(b"x"), 2))
    with pytest.raises(InvalidInputError, match="/bad0"):
        write_image(root, tmp_path / "img")


@pytest.mark.parametrize("batch_files", [1, 2, 32])
def test_first_failure_among_compressed_files_is_reported_in_order(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, batch_files: int
) -> None:
    """Two files shrink: the earlier is blamed, in one batch or several, even when its job is
    delayed so that the later one fails first."""
    monkeypatch.setattr(datastage, "BATCH_FILES", batch_files)
    first_bad_job = 1 // batch_files  # the files are jobs (or batches) in name order
    monkeypatch.setattr(datastage, "job_hook", lambda index: time.sleep(0.2 if index == first_bad_job else 0))
    root = Directory(Metadata(0o755))
    for i in range(6):
        path = tmp_path / f"f{i}"
        path.write_bytes(content(i, 20000)[:20000])
        declared = 30000 if i in (1, 4) else 20000  # f1 and f4 are shorter than their size
        root.children[b"f%d" % i] = File(Metadata(), PathData(str(path), declared))
    with pytest.raises(InvalidInputError, match=r"^/f1: .*shrank"):
        write_image(root, tmp_path / "img", WriteOptions(compression="lz4"))


def test_header_areas_must_have_their_planned_size(tmp_path: Path) -> None:
    with open(tmp_path / "f", "wb+") as f:
        writer = MetadataWriter(f.fileno())
        writer.write_area(Area("table", 64, 4, b"abcd"))
        with pytest.raises(AssertionError, match="planned 8 bytes"):
            writer.write_area(Area("other", 128, 8, b"abc"))
        with pytest.raises(AssertionError, match="overlaps"):
            writer.write_area(Area("late", 60, 3, b"xyz"))


def test_policy_given_explicitly_matches_the_options_it_replaces(tmp_path: Path) -> None:
    write_image(bytes_tree(), tmp_path / "a", WriteOptions(inline_data=False, build_time_ns=5))
    policy = LayoutPolicy(build_time_ns=5, inline_files=False)
    write_image(bytes_tree(), tmp_path / "b", WriteOptions(policy=policy))
    write_image(bytes_tree(), tmp_path / "c", WriteOptions(build_time_ns=5))
    assert (tmp_path / "a").read_bytes() == (tmp_path / "b").read_bytes() != (tmp_path / "c").read_bytes()


class ReversedPolicy(LayoutPolicy):
    """Numbers children in reverse name order: another producer's choice, same pipeline."""

    def names_in_order(self, names: Iterable[bytes]) -> list[bytes]:
        return sorted(names, reverse=True)


def test_a_policy_changes_the_layout_not_the_content(tmp_path: Path) -> None:
    write_image(bytes_tree(), tmp_path / "a", WriteOptions(policy=ReversedPolicy()))
    write_image(bytes_tree(), tmp_path / "b")
    assert (tmp_path / "a").read_bytes() != (tmp_path / "b").read_bytes()
    with open_image(tmp_path / "a") as a:
        for i, size in enumerate(SIZES):
            assert a.read_bytes(f"/sub/s{i:02d}") == content(i, size)[:size]


PATH_SIZES = [0, 100, 4096, 5000, 16384, 20000, 70000, 300000, 4095, 1 << 20]


def path_tree(src: Path) -> Directory:
    root = Directory(Metadata(0o755))
    for i, size in enumerate(PATH_SIZES):
        path = src / f"f{i}"
        path.write_bytes(content(i, size)[:size])
        root.children[b"f%d" % i] = File(Metadata(), PathData(str(path), size))
    return root


def copier_delays(delay: float, every: int) -> Callable[[int], None]:
    """A copier hook that sleeps before every `every`-th file: the emitter waits, or runs behind."""

    def hook(index: int) -> None:
        if index % every == 0:
            time.sleep(delay)

    return hook


TIMINGS = [(64, None), (1, None), (1, copier_delays(0.02, 1)), (2, copier_delays(0.05, 3))]


def test_copier_thread_does_not_change_the_image(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The early files copied in lockstep with the emitter, far ahead of it, or far behind."""
    src = tmp_path / "src"
    src.mkdir()
    images = []
    for run, (batch, hook) in enumerate(TIMINGS):
        monkeypatch.setattr(copier, "BATCH", batch)
        monkeypatch.setattr(copier, "file_hook", hook)
        write_image(path_tree(src), tmp_path / f"img{run}")
        images.append((tmp_path / f"img{run}").read_bytes())
    assert all(image == images[0] for image in images)
    with open_image(tmp_path / "img0") as image:
        for i, size in enumerate(PATH_SIZES):
            assert image.read_bytes(f"/f{i}") == content(i, size)[:size]


@pytest.mark.parametrize("early_min_blocks", [10**9, 1, 4])
def test_copier_reports_the_first_failure_in_order(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, early_min_blocks: int
) -> None:
    """Two files vanish: the same one is blamed however far the copier had got."""
    src = tmp_path / "src"
    src.mkdir()
    root = path_tree(src)
    (src / "f5").unlink()
    (src / "f9").unlink()
    monkeypatch.setattr(plan, "EARLY_MIN_BLOCKS", early_min_blocks)
    blamed = []
    for batch, hook in TIMINGS:
        monkeypatch.setattr(copier, "BATCH", batch)
        monkeypatch.setattr(copier, "file_hook", hook)
        with pytest.raises(InvalidInputError, match="cannot read") as info:
            write_image(root, tmp_path / "img")
        blamed.append(str(info.value).split(":")[0])
    assert blamed[0] in ("/f5", "/f9") and blamed.count(blamed[0]) == len(TIMINGS)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["src"]


def test_interrupt_stops_the_copier_and_leaves_nothing(tmp_path: Path) -> None:
    """An interrupt while the copier is busy: its thread ends, no image, no temporary file."""
    src = tmp_path / "src"
    src.mkdir()
    root = path_tree(src)
    out = tmp_path / "out"
    out.mkdir()
    before = {t.name for t in threading.enumerate()}

    def interrupt(done: int, total: int) -> None:
        if done > 20000:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        write_image(root, out / "img", progress=interrupt)
    assert list(out.iterdir()) == []
    assert {t.name for t in threading.enumerate()} <= before


def test_early_files_are_hashed_while_the_rest_is_planned(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The copier and digest finish the early files before planning does: partial last blocks
    (no inline tails) must read as zeros, and the UUID must be the one of an unhurried run."""
    src = tmp_path / "src"
    src.mkdir()
    options = WriteOptions(inline_data=False)
    root = path_tree(src)
    (src / "last").write_bytes(b"z" * (4 * 4096 + 100))  # the last early file ends mid-block
    root.children[b"last"] = File(Metadata(), PathData(str(src / "last"), 4 * 4096 + 100))
    write_image(root, tmp_path / "plain", options)
    real = plan.finish_plan

    def slow(*args: object) -> object:
        time.sleep(0.3)
        return real(*args)  # type: ignore[arg-type]

    monkeypatch.setattr("erofsgen.writer.finish_plan", slow)
    write_image(root, tmp_path / "slow", options)
    assert (tmp_path / "slow").read_bytes() == (tmp_path / "plain").read_bytes()


@pytest.mark.parametrize("failure", ["short stream", "interrupt"])
def test_a_failure_while_a_large_file_is_copied_stops_the_copier(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, failure: str
) -> None:
    """Planning fails while the copier is inside a large file: the copy stops between chunks,
    not after the whole file, so no thread writes on once write_image has returned."""
    src = tmp_path / "src"
    src.mkdir()
    out = tmp_path / "out"
    out.mkdir()
    blocks = 2000
    (src / "big").write_bytes(b"a" * (blocks * 4096))
    root = Directory(Metadata(0o755))
    root.children[b"big"] = File(Metadata(), PathData(str(src / "big"), blocks * 4096))
    root.children[b"s"] = File(Metadata(), StreamData(io.BytesIO(b"x" * 10), 20))
    copying = threading.Event()
    finished = threading.Event()  # lets a copier that did not stop run out quickly
    real_copy = os.copy_file_range

    def slow_copy(src_fd: int, dst_fd: int, count: int, *offsets: int | None) -> int:
        copying.set()
        if not finished.is_set():
            time.sleep(0.05)  # the whole file: 2000 chunks, far beyond copier.STOP_WAIT
        return real_copy(src_fd, dst_fd, count, *offsets)

    def fail_once_copying(index: int) -> None:
        assert copying.wait(60)
        if failure == "interrupt":
            raise KeyboardInterrupt

    monkeypatch.setattr(filecopy, "KERNEL_COPY_CHUNK", 4096)
    monkeypatch.setattr(os, "copy_file_range", slow_copy)
    monkeypatch.setattr(datastage, "job_hook", fail_once_copying)
    expected = KeyboardInterrupt if failure == "interrupt" else InvalidInputError
    try:
        with pytest.raises(expected):
            write_image(root, out / "img")
        alive = [t.name for t in threading.enumerate() if t.name == "erofsgen-copy" and t.is_alive()]
    finally:
        finished.set()
    assert alive == []
    assert list(out.iterdir()) == []
