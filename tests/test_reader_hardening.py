"""Hostile and unlucky inputs: long hard-link paths, failing destinations, files that are not
images, names that must be escaped in every message."""

from __future__ import annotations

import io
import os
import resource
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

import erofsgen
from erofsgen import ImageBuilder
from erofsgen.cli import main as cli_main
from erofsgen.errors import CorruptImageError, InvalidInputError
from erofsgen.reader import is_erofs
from tests.support.erofs_utils import ErofsUtils
from tests.support.tmpfs import mounted_tmpfs
from tests.test_check import patch

needs_root = pytest.mark.skipif(os.geteuid() != 0, reason="needs root (mounts a tmpfs)")
READ_COMMANDS = ("check", "ls", "extract", "cat", "dump", "inspect")


def _argv(command: str, image: Path, tmp: Path) -> list[str]:
    extra = {"extract": [str(tmp / "out")], "cat": ["some/file"]}.get(command, [])
    return [command, str(image), *extra]


def _cli(capsys: pytest.CaptureFixture[str], argv: list[str]) -> tuple[int, str, str]:
    status = cli_main(argv)
    out = capsys.readouterr()
    return status, out.out, out.err


def _open_chain(root: Path, parts: list[str]) -> int:
    """A descriptor of root/parts..., opened one component at a time (no PATH_MAX limit)."""
    fd = os.open(root, os.O_RDONLY | os.O_DIRECTORY)
    for part in parts:
        nfd = os.open(part, os.O_RDONLY | os.O_DIRECTORY, dir_fd=fd)
        os.close(fd)
        fd = nfd
    return fd


# -------------------------------------------------------------------------------- hard links


def test_hard_link_whose_first_path_exceeds_path_max(tmp_path: Path) -> None:
    """Both links live below 17 directories of 255-byte names (> 4096 bytes): whichever is
    created first, the second must be linked to it through directory descriptors."""
    chain_a = ["a" * 254 + str(k % 10) for k in range(17)]
    chain_b = ["b" * 254 + str(k % 10) for k in range(17)]
    first, second = "/".join([*chain_a, "file"]), "/".join([*chain_b, "link"])
    assert len(first) > 4096 and len(second) > 4096
    image = tmp_path / "img"
    with ImageBuilder(image) as builder:
        builder.add_file(first, b"shared content\n" * 100)
        builder.link(second, first)
    out = tmp_path / "out"
    with erofsgen.open_image(image) as img:
        result = img.extract(out)
    assert result.hardlinks == 1 and result.files == 1
    fd_a, fd_b = _open_chain(out, chain_a), _open_chain(out, chain_b)
    try:
        st_a = os.stat("file", dir_fd=fd_a, follow_symlinks=False)
        st_b = os.stat("link", dir_fd=fd_b, follow_symlinks=False)
        assert st_a.st_ino == st_b.st_ino and st_a.st_nlink == 2
        data = os.open("link", os.O_RDONLY, dir_fd=fd_b)
        try:
            assert os.read(data, 4096) == b"shared content\n" * 100
        finally:
            os.close(data)
    finally:
        os.close(fd_a)
        os.close(fd_b)


# -------------------------------------------------------------------------------- destinations


@pytest.fixture
def tiny_tmpfs(tmp_path: Path) -> Iterator[Path]:
    """A 256 KiB tmpfs, unmounted afterwards."""
    with mounted_tmpfs(tmp_path / "mnt", "256k") as mnt:
        yield mnt


def _big_image(tmp_path: Path) -> Path:
    image = tmp_path / "big.img"
    with ImageBuilder(image) as builder:
        builder.add_file("dir/big file", os.urandom(1 << 20))
    return image


@needs_root
def test_enospc_names_the_file(tmp_path: Path, tiny_tmpfs: Path, capsys: pytest.CaptureFixture[str]) -> None:
    status, out, err = _cli(capsys, ["extract", str(_big_image(tmp_path)), str(tiny_tmpfs / "out")])
    assert status == 2 and out == ""
    assert err == f"erofsgen: error: {tiny_tmpfs}/out/dir/big\\ file: No space left on device\n"


@needs_root
def test_erofs_names_the_destination(
    tmp_path: Path, tiny_tmpfs: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    (tiny_tmpfs / "out").mkdir()
    subprocess.run(["mount", "-o", "remount,ro", str(tiny_tmpfs)], check=True)
    status, _, err = _cli(capsys, ["extract", str(_big_image(tmp_path)), str(tiny_tmpfs / "out")])
    assert status == 2 and err.startswith(f"erofsgen: error: {tiny_tmpfs}/out") and err.count("\n") == 1
    assert "Read-only file system" in err and "[Errno" not in err


def _limit_file_size() -> None:
    signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # write then fails with EFBIG
    resource.setrlimit(resource.RLIMIT_FSIZE, (64 * 1024, 64 * 1024))


def test_efbig_names_the_file(tmp_path: Path) -> None:
    image, out = _big_image(tmp_path), tmp_path / "out"
    proc = subprocess.run(
        [sys.executable, "-m", "erofsgen", "extract", str(image), str(out)],
        capture_output=True,
        text=True,
        preexec_fn=_limit_file_size,
        cwd=Path(__file__).resolve().parents[1],
    )
    assert proc.returncode == 2, proc.stderr
    assert proc.stderr == f"erofsgen: error: {out}/dir/big\\ file: File too large\n"


# -------------------------------------------------------------------------------- not an image


@pytest.mark.parametrize("command", READ_COMMANDS)
@pytest.mark.parametrize(
    ("content", "reason"),
    [
        (bytes(range(256)) * 32, "bad magic 0x03020100"),
        (b"", "empty file"),
        (b"\0" * 100, "100 bytes, too short for a superblock"),
    ],
    ids=["junk", "empty", "short"],
)
def test_not_an_image_is_one_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], command: str, content: bytes, reason: str
) -> None:
    path = tmp_path / "not an image"
    path.write_bytes(content)
    status, out, err = _cli(capsys, _argv(command, path, tmp_path))
    assert status == 2 and out == ""
    assert err == f"erofsgen: error: {tmp_path}/not\\ an\\ image: not an EROFS image ({reason})\n"


@pytest.mark.parametrize("command", READ_COMMANDS)
def test_directory_and_missing_image_are_one_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], command: str
) -> None:
    for path, reason in ((tmp_path, "Is a directory"), (tmp_path / "missing", "No such file or directory")):
        status, out, err = _cli(capsys, _argv(command, path, tmp_path))
        assert status == 2 and out == ""
        assert err.startswith(f"erofsgen: error: {path}: ") and err.count("\n") == 1 and reason in err


@pytest.mark.parametrize("command", READ_COMMANDS)
def test_fifo_as_image_is_refused_without_waiting_for_a_writer(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], command: str
) -> None:
    fifo = tmp_path / "pipe"
    os.mkfifo(fifo)  # opening it for reading would block until a writer came: it must not
    status, out, err = _cli(capsys, _argv(command, fifo, tmp_path))
    assert status == 2 and out == ""
    assert err == f"erofsgen: error: {fifo}: cannot open image: not a regular file or a block device\n"


@pytest.mark.parametrize("source", [None, 3, "/", b"x"[0]])
def test_open_image_refuses_what_is_not_a_path_or_file(source: object) -> None:
    with pytest.raises(InvalidInputError, match="image"):
        erofsgen.open_image(source)  # type: ignore[arg-type]


def test_open_image_refuses_non_images(tmp_path: Path) -> None:
    with pytest.raises(InvalidInputError, match=r"not an EROFS image \(bad magic 0x00000000\)"):
        erofsgen.open_image(io.BytesIO(bytes(8192)))


# -------------------------------------------------------------------------------- is_erofs


def test_is_erofs(tmp_path: Path) -> None:
    image = _big_image(tmp_path)
    assert is_erofs(image) and is_erofs(str(image)) and erofsgen.is_erofs(image)
    with open(image, "rb") as f:
        f.seek(123)
        assert is_erofs(f) and f.tell() == 123  # the position is restored
    assert is_erofs(io.BytesIO(image.read_bytes()))
    for content in (b"", b"\0" * 100, bytes(8192), b"x" * 1028):
        assert not is_erofs(io.BytesIO(content))
        (tmp_path / "junk").write_bytes(content)
        assert not is_erofs(tmp_path / "junk")
    with pytest.raises(FileNotFoundError):  # as tarfile.is_tarfile does
        is_erofs(tmp_path / "missing")
    with pytest.raises(IsADirectoryError):
        is_erofs(tmp_path)


# -------------------------------------------------------------------------------- escaping


def test_messages_escape_names_as_ls_b(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    image = tmp_path / "img"
    with ImageBuilder(image) as builder:
        builder.add_file(b"ctl\x01one", b"1")
        builder.add_file(b"ctl\x01two", b"2")
        builder.mkdir(b"new\nline\xff")
    status, _, err = _cli(capsys, ["cat", str(image), "new\nline/x"])
    assert status == 2 and err == "erofsgen: error: new\\nline/x: no such file or directory\n"
    status, _, err = _cli(capsys, ["cat", str(image), os.fsdecode(b"new\nline\xff")])
    assert status == 2 and err == "erofsgen: error: new\\nline\\377: not a regular file (dir)\n"
    # Two entries with one name: the extract error shows it escaped, never as b'...'.
    raw = image.read_bytes()
    assert raw.count(b"ctl\x01two") == 1
    image.write_bytes(raw.replace(b"ctl\x01two", b"ctl\x01one"))
    with erofsgen.open_image(image, strict_checksum=False) as img, pytest.raises(CorruptImageError) as caught:
        img.extract(tmp_path / "out")
    assert "duplicate entry name ctl\\001one" in str(caught.value) and "b'" not in str(caught.value)


# -------------------------------------------------------------------------------- data copies


def test_chunk_holes_stay_holes(erofs_utils: ErofsUtils, tmp_path: Path) -> None:
    """Three chunks, the middle one made a hole: two runs are copied, the hole is skipped."""
    src = tmp_path / "src"
    src.mkdir()
    data = os.urandom(3 * 4096 * 64)
    (src / "f").write_bytes(data)
    image = tmp_path / "img"
    erofs_utils.mkfs(image, src, "--quiet", "--chunksize=262144")
    with erofsgen.open_image(image) as img:
        info = img.inode(img.lookup("f"))
    assert info.chunk_count == 3 and info.chunk_array_offset is not None
    patch(image, info.chunk_array_offset + 2 * info.chunk_entry_size - 4, b"\xff\xff\xff\xff")
    with erofsgen.open_image(image) as img:
        assert [(s.logical, s.device) for s in img.segments_nid(info.nid)] == [
            (0, 0),
            (262144, None),
            (524288, 0),
        ]
        img.extract(tmp_path / "out")
    out = tmp_path / "out" / "f"
    assert out.read_bytes() == data[:262144] + bytes(262144) + data[524288:]
    assert out.stat().st_blocks * 512 <= 2 * 262144 + 8192  # the hole was not written


def test_copy_without_descriptors(tmp_path: Path) -> None:
    """An image given as an in-memory file object: data goes through pread/pwrite."""
    data = os.urandom(300_000)
    image = tmp_path / "img"
    with ImageBuilder(image) as builder:
        builder.add_file("f", data)
    with erofsgen.open_image(io.BytesIO(image.read_bytes())) as img:
        img.extract(tmp_path / "out")
    assert (tmp_path / "out" / "f").read_bytes() == data
