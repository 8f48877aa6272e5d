"""Where `pack` and write_image put the image: files are replaced, devices and pipes written in place."""

from __future__ import annotations

import errno
import itertools
import os
import stat
import subprocess
import sys
import tempfile
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from erofsgen.cli import main as cli_main
from erofsgen.errors import ImageWriteError, InvalidInputError
from erofsgen.model import BytesData, Directory, File, Metadata
from erofsgen.reader import open_image
from erofsgen.writer import WriteOptions, write_image

from .support.kernel import MountImage

REPO = Path(__file__).resolve().parents[1]
CLEAR = WriteOptions(uuid=uuid.UUID(int=0))
OLD = b"old image"


def tree(size: int = 100_000) -> Directory:
    data = bytes(range(256)) * (size // 256) + b"tail"
    return Directory(Metadata(0o755), {b"f": File(Metadata(0o644), BytesData(data))})


def reference(tmp_path: Path, size: int = 100_000) -> bytes:
    ref = tmp_path / "reference.img"
    write_image(tree(size), ref, CLEAR)
    return ref.read_bytes()


def source_dir(path: Path, size: int) -> Path:
    path.mkdir()
    (path / "f").write_bytes(os.urandom(size))
    return path


def pack(*args: str, stdout: int | None = None) -> subprocess.Popen[bytes]:
    """`python -m erofsgen pack ARGS` with this checkout's package."""
    return subprocess.Popen(
        [sys.executable, "-m", "erofsgen", "pack", *args], cwd=REPO, stdout=stdout, stderr=subprocess.PIPE
    )


def needs_root() -> None:
    if os.geteuid() != 0:
        pytest.skip("needs root")


def test_character_device_is_written_not_replaced(tmp_path: Path) -> None:
    """A private /dev/null node: the image goes into it and the node stays a device."""
    needs_root()
    null = tmp_path / "null"
    os.mknod(null, 0o600 | stat.S_IFCHR, os.makedev(1, 3))
    link = tmp_path / "link"
    link.symlink_to(null)
    write_image(tree(), null)
    assert cli_main(["pack", "--quiet", str(source_dir(tmp_path / "src", 10)), str(link)]) == 0
    assert stat.S_ISCHR(null.lstat().st_mode) and link.is_symlink()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["link", "null", "src"]


def test_fifo_gets_the_same_bytes_as_a_file(tmp_path: Path) -> None:
    source = source_dir(tmp_path / "src", 300_000)
    ref = tmp_path / "ref.img"
    assert pack("--quiet", "-U", "clear", str(source), str(ref)).wait() == 0
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    received = tmp_path / "received"
    with received.open("wb") as sink:
        reader = subprocess.Popen(["cat", str(fifo)], stdout=sink)
    try:
        proc = pack("--quiet", "-U", "clear", str(source), str(fifo))
        _, err = proc.communicate(timeout=120)
        assert proc.returncode == 0, err
        assert reader.wait(timeout=120) == 0
    finally:
        reader.kill()
    assert stat.S_ISFIFO(fifo.lstat().st_mode)
    assert received.read_bytes() == ref.read_bytes()


@pytest.mark.parametrize("target", ["/dev/stdout", "-"])
def test_image_to_stdout_keeps_the_summary_out_of_it(tmp_path: Path, target: str) -> None:
    source = source_dir(tmp_path / "src", 100_000)
    ref = tmp_path / "ref.img"
    assert pack("--quiet", "-U", "clear", str(source), str(ref)).wait() == 0
    proc = pack("-U", "clear", str(source), target, stdout=subprocess.PIPE)
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 0, err
    assert out == ref.read_bytes()
    assert err.startswith(b"/dev/stdout: 2 inodes,") and err.count(b"\n") == 1
    assert not (REPO / "-").exists()  # "-" is standard output, not a file of that name


def test_reader_closing_the_pipe_early_is_one_line(tmp_path: Path) -> None:
    # Well over a pipe's buffer, so pack is still writing when the reader goes away.
    source = source_dir(tmp_path / "src", 4 << 20)
    proc = pack("--quiet", str(source), "/dev/stdout", stdout=subprocess.PIPE)
    assert proc.stdout is not None
    assert len(proc.stdout.read(2048)) == 2048
    proc.stdout.close()
    _, err = proc.communicate(timeout=120)
    text = err.decode()
    assert proc.returncode == 2, text
    assert text.startswith("erofsgen: error: /dev/stdout: cannot write the image: the reader closed the pipe")
    assert text.count("\n") == 1


def test_symlink_to_a_file_replaces_the_file(tmp_path: Path) -> None:
    real_dir = tmp_path / "real"
    real_dir.mkdir()
    real = real_dir / "image.erofs"
    real.write_bytes(OLD)
    link = tmp_path / "link.erofs"
    link.symlink_to(os.path.relpath(real, tmp_path))
    write_image(tree(), link, CLEAR)
    assert link.is_symlink() and real.read_bytes() == reference(tmp_path / "..", 100_000)
    assert sorted(p.name for p in real_dir.iterdir()) == ["image.erofs"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["link.erofs", "real"]


def test_replaced_image_keeps_mode_and_owner(tmp_path: Path) -> None:
    """A rebuilt private image stays private, as one written in place (mkfs.erofs, `>`) does."""
    image = tmp_path / "private.erofs"
    image.write_bytes(OLD)
    os.chmod(image, 0o600)
    owner = (1234, 5678) if os.geteuid() == 0 else (os.getuid(), os.getgid())
    os.chown(image, *owner)
    write_image(tree(), image, CLEAR)
    st = image.stat()
    assert image.read_bytes() == reference(tmp_path)
    assert (stat.S_IMODE(st.st_mode), st.st_uid, st.st_gid) == (0o600, *owner)
    fresh = tmp_path / "fresh.erofs"
    write_image(tree(), fresh, CLEAR)
    assert stat.S_IMODE(fresh.stat().st_mode) == 0o666 & ~_umask()


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def test_dangling_symlink_creates_its_target(tmp_path: Path) -> None:
    link = tmp_path / "link.erofs"
    link.symlink_to("made.erofs")
    write_image(tree(), link)
    assert link.is_symlink() and open_image(tmp_path / "made.erofs").lookup("/f")


@pytest.mark.parametrize("name", ["new/", "dir/"])
def test_trailing_slash_is_refused(name: str, tmp_path: Path) -> None:
    (tmp_path / "dir").mkdir()
    with pytest.raises(InvalidInputError, match="ends in '/'"):
        write_image(tree(), f"{tmp_path}/{name}")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["dir"]
    assert list((tmp_path / "dir").iterdir()) == []


@contextmanager
def immutable(path: Path) -> Iterator[None]:
    if subprocess.run(["chattr", "+i", str(path)], capture_output=True).returncode != 0:
        pytest.skip("chattr +i not supported here")
    try:
        yield
    finally:
        subprocess.run(["chattr", "-i", str(path)], check=True)


def test_writable_image_in_unwritable_directory_is_refused_clearly(tmp_path: Path) -> None:
    needs_root()
    image = tmp_path / "d" / "image.erofs"
    image.parent.mkdir()
    image.write_bytes(OLD)
    with immutable(image.parent), pytest.raises(InvalidInputError) as info:
        write_image(tree(), image)
    assert str(info.value).startswith(
        f"{image}: cannot create the image: directory {image.parent} is not writable"
    )
    assert image.read_bytes() == OLD


def test_immutable_image_names_the_image_and_stays(tmp_path: Path) -> None:
    needs_root()
    image = tmp_path / "image.erofs"
    image.write_bytes(OLD)
    with immutable(image), pytest.raises(ImageWriteError) as info:
        write_image(tree(), image)
    assert str(info.value) == f"{image}: cannot write the image: Operation not permitted"
    assert info.value.errno == errno.EPERM
    assert image.read_bytes() == OLD
    assert sorted(p.name for p in tmp_path.iterdir()) == ["image.erofs"]


def test_full_tmpdir_for_a_streamed_image_says_so(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    needs_root()
    small = tmp_path / "small"
    small.mkdir()
    null = tmp_path / "null"
    os.mknod(null, 0o600 | stat.S_IFCHR, os.makedev(1, 3))
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=64k", "tmpfs", str(small)], check=True)
    try:
        monkeypatch.setattr(tempfile, "tempdir", str(small))
        with pytest.raises(ImageWriteError) as info:
            write_image(tree(1 << 20), null)
        assert str(info.value) == (
            f"{null}: cannot write the image to a temporary file in {small} (see TMPDIR): "
            "No space left on device (the image needs 1052672 bytes)"
        )
        assert list(small.iterdir()) == []
    finally:
        subprocess.run(["umount", str(small)], check=True)


def test_read_only_file_system_names_the_image(tmp_path: Path) -> None:
    needs_root()
    rw, ro = tmp_path / "rw", tmp_path / "ro"
    rw.mkdir()
    ro.mkdir()
    (rw / "image.erofs").write_bytes(OLD)
    subprocess.run(["mount", "--bind", str(rw), str(ro)], check=True)
    try:
        subprocess.run(["mount", "-o", "remount,bind,ro", str(ro)], check=True)
        image = ro / "image.erofs"
        with pytest.raises(InvalidInputError) as info:
            write_image(tree(), image)
        assert str(info.value).startswith(f"{image}: cannot create the image: ")
        assert "Read-only file system" in str(info.value)
        assert image.read_bytes() == OLD
    finally:
        subprocess.run(["umount", str(ro)], check=True)


def test_image_is_synced_before_the_rename_and_the_directory_after(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    events: list[str] = []
    real_fsync, real_replace = os.fsync, os.replace

    def fsync(fd: int) -> None:
        events.append("fsync dir" if stat.S_ISDIR(os.fstat(fd).st_mode) else "fsync file")
        real_fsync(fd)

    def replace(src: str, dst: str) -> None:
        events.append("rename")
        real_replace(src, dst)

    monkeypatch.setattr(os, "fsync", fsync)
    monkeypatch.setattr(os, "replace", replace)
    write_image(tree(), tmp_path / "a.img")
    assert events == ["fsync file", "rename", "fsync dir"]
    events.clear()
    write_image(tree(), tmp_path / "b.img", sync=False)
    assert events == ["rename"]
    events.clear()
    src = str(source_dir(tmp_path / "src", 10))
    assert cli_main(["pack", "--quiet", "--no-sync", src, str(tmp_path / "c.img")]) == 0
    assert events == ["rename"]


@contextmanager
def loop_device(backing: Path) -> Iterator[str]:
    res = subprocess.run(["losetup", "-f", "--show", str(backing)], capture_output=True, text=True)
    assert res.returncode == 0, res.stderr
    device = res.stdout.strip()
    try:
        yield device
    finally:
        subprocess.run(["losetup", "-d", device], check=True)


def test_block_device_is_written_in_place(tmp_path: Path, kernel_mount: MountImage) -> None:
    """Like mkfs.erofs: the image goes to the device from offset 0; the device node stays."""
    source = source_dir(tmp_path / "src", 300_000)
    ref = tmp_path / "ref.img"
    assert pack("--quiet", "-U", "clear", str(source), str(ref)).wait() == 0
    image = ref.read_bytes()
    backing = tmp_path / "disk"
    backing.write_bytes(b"\xaa" * (4 << 20))
    with loop_device(backing) as device:
        proc = pack("--quiet", "-U", "clear", str(source), device)
        _, err = proc.communicate(timeout=120)
        assert proc.returncode == 0, err
        assert stat.S_ISBLK(os.stat(device).st_mode)
    content = backing.read_bytes()
    assert content[: len(image)] == image
    assert content[len(image) :] == b"\xaa" * (len(content) - len(image))  # the rest untouched
    with kernel_mount(backing) as mnt:
        assert (mnt / "f").read_bytes() == (source / "f").read_bytes()


def test_block_device_too_small_or_mounted_is_refused(tmp_path: Path, kernel_mount: MountImage) -> None:
    source = source_dir(tmp_path / "src", 300_000)
    small = tmp_path / "small"
    small.write_bytes(b"\xaa" * 8192)
    with loop_device(small) as device:
        proc = pack("--quiet", str(source), device)
        _, err = proc.communicate(timeout=120)
        assert proc.returncode == 2
        assert err.decode().startswith(f"erofsgen: error: {device}: the image needs ")
        assert "but the device holds only 8192" in err.decode()
    assert small.read_bytes() == b"\xaa" * 8192
    image = tmp_path / "image.erofs"
    write_image(tree(), image)
    with kernel_mount(image) as mnt:
        device = next(
            line.split()[0] for line in Path("/proc/mounts").read_text().splitlines() if str(mnt) in line
        )
        proc = pack("--quiet", str(source), device)
        _, err = proc.communicate(timeout=120)
        assert proc.returncode == 2
        busy = "cannot open the output: Device or resource busy (is it mounted?)"
        assert err.decode() == f"erofsgen: error: {device}: {busy}\n"


def test_image_inside_its_source(tmp_path: Path) -> None:
    """The source is scanned before the image (or its temporary file) exists there: no self-loop.

    A rebuild then packs the previous image as a plain file, as mkfs.erofs does.
    """
    source = source_dir(tmp_path / "src", 10_000)
    image = source / "self.img"
    assert cli_main(["pack", "--quiet", "-U", "clear", str(source), str(image)]) == 0
    with open_image(image) as img:
        assert img.listdir("/") == ["f"]
    first = image.read_bytes()
    assert cli_main(["pack", "--quiet", "-U", "clear", str(source), str(image)]) == 0
    with open_image(image) as img:
        assert sorted(img.listdir("/")) == ["f", "self.img"]
        with img.open("/self.img") as inner:
            assert inner.read() == first
    assert sorted(p.name for p in source.iterdir()) == ["f", "self.img"]


def test_synced_image_is_written_back_as_its_data_is_finished(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A compressed image synced in place hands its data to the kernel in order, as it is
    finished; unsynced or streamed into a device, it does not; the bytes are the same."""
    from erofsgen.writer import writeback

    calls: list[tuple[int, int]] = []
    monkeypatch.setattr(writeback, "STEP", 8192)
    monkeypatch.setattr(writeback, "start_writeback", lambda fd, at, n: calls.append((at, n)))
    text = b"".join(b"line %d of a compressible file\n" % i for i in range(20_000))
    root = Directory(
        Metadata(0o755),
        {
            b"a": File(Metadata(0o644), BytesData(text)),
            **{name: File(Metadata(0o644), BytesData(os.urandom(1_100_000))) for name in (b"b", b"c")},
        },
    )
    options = WriteOptions(uuid=uuid.UUID(int=0), compression="lz4hc")
    write_image(root, tmp_path / "synced.img", options)
    assert len(calls) >= 2
    for (at, n), (next_at, _) in itertools.pairwise(calls):
        assert n >= 8192 and next_at == at + n  # in order, nothing handed over twice
    synced = (tmp_path / "synced.img").read_bytes()
    assert calls[-1][0] + calls[-1][1] <= len(synced)
    calls.clear()
    write_image(root, tmp_path / "unsynced.img", options, sync=False)
    write_image(root, "/dev/null", options)
    assert calls == []
    assert (tmp_path / "unsynced.img").read_bytes() == synced
    with open_image(tmp_path / "synced.img") as image:
        assert image.read_bytes("/a") == text


def test_writeback_is_advice_that_never_fails() -> None:
    from erofsgen.writer.writeback import start_writeback

    read, write = os.pipe()
    try:
        start_writeback(write, 0, 1 << 20)  # not a file: the call fails, quietly
    finally:
        os.close(read)
        os.close(write)
    with tempfile.TemporaryFile() as f:
        f.write(b"x" * 100_000)
        f.flush()
        start_writeback(f.fileno(), 0, 100_000)
        start_writeback(f.fileno(), 1 << 40, 4096)  # past the end
