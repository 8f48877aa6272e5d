"""`erofsgen mkcomposefs` and `erofsgen composefs-info`, and the object store they share."""

from __future__ import annotations

import os
import stat
import subprocess
import sys
from pathlib import Path

import pytest

from erofsgen.cli import main as cli_main
from erofsgen.composefs.dump import read_dump
from erofsgen.composefs.image import image_bytes
from erofsgen.composefs.scan import ScanOptions, scan_directory
from erofsgen.composefs.store import fill_store, object_path
from erofsgen.verity import fsverity_digest, fsverity_digest_path

from .composefs_cases import CASES, SIMPLE
from .support.kernel import MountImage

SIMPLE_V0 = "9f3f5620ee0c54708516467d0d58741e7963047c7106b245d94c298259d0fa01"
SIMPLE_V1 = "ad6db6427568a1e4fdc772cbab7b6063f5eb4b33cb62982a740ba9213e5962b5"
REPO = Path(__file__).resolve().parent.parent


def erofsgen(*argv: str, data: bytes | None = None) -> subprocess.CompletedProcess[bytes]:
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    return subprocess.run(
        [sys.executable, "-m", "erofsgen", *argv], input=data, capture_output=True, env=env, check=False
    )


def test_from_file_writes_the_vector(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    dump = tmp_path / "simple.dump"
    dump.write_text(SIMPLE)
    image = tmp_path / "simple.img"
    assert cli_main(["mkcomposefs", "--from-file", "--print-digest", str(dump), str(image)]) == 0
    assert capsys.readouterr().out == SIMPLE_V0 + "\n"
    assert fsverity_digest(image.read_bytes()).hex() == SIMPLE_V0
    assert cli_main(["mkcomposefs", "--from-file", "--print-digest-only", "--min-version=1", str(dump)]) == 0
    assert capsys.readouterr().out == SIMPLE_V1 + "\n"


def test_version_options_follow_mkcomposefs(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """Defaults 0..1; once either is given the other defaults to 0 (and max is raised to min)."""
    text, _, _ = CASES["whiteouts-auto"]
    dump = tmp_path / "w.dump"
    dump.write_text(text)
    root = read_dump(text.encode())[1]
    expect = {
        (): image_bytes(root, min_version=0, max_version=1),
        ("--min-version=0",): image_bytes(root, min_version=0, max_version=0),
        ("--max-version=1",): image_bytes(root, min_version=0, max_version=1),
        ("--min-version=1",): image_bytes(root, min_version=1, max_version=1),
    }
    for opts, image in expect.items():
        assert cli_main(["mkcomposefs", "--from-file", "--print-digest-only", *opts, str(dump)]) == 0
        assert capsys.readouterr().out == fsverity_digest(image).hex() + "\n"


def test_stdin_to_stdout_and_dump_back() -> None:
    made = erofsgen("mkcomposefs", "--from-file", "-", "-", data=SIMPLE.encode())
    assert made.returncode == 0, made.stderr
    assert fsverity_digest(made.stdout).hex() == SIMPLE_V0


def test_bad_dump_names_the_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    dump = tmp_path / "bad.dump"
    dump.write_text("/ 0 40755 2 0 0 0 0.0 - - -\n/x 0 120777 1 0 0 0 0.0 - - -\n")
    assert cli_main(["mkcomposefs", "--from-file", str(dump), str(tmp_path / "img")]) == 2
    assert capsys.readouterr().err == f"erofsgen: error: {dump}:2: invalid symlink: empty target\n"
    assert not (tmp_path / "img").exists()
    dump.write_text("/ 0 40755 2 0 0 0 0.0 - - -\n/big 9500000000000000 100644 1 0 0 0 0.0 - - -\n")
    assert cli_main(["mkcomposefs", "--from-file", str(dump), str(tmp_path / "img")]) == 2
    assert "/big: file of 9500000000000000 bytes is too large" in capsys.readouterr().err
    assert not (tmp_path / "img").exists()


def test_usage_errors(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert cli_main(["mkcomposefs", "--from-file", "--print-digest-only", "-", "img"]) == 2
    assert "cannot be given with --print-digest-only" in capsys.readouterr().err
    assert cli_main(["mkcomposefs", str(tmp_path)]) == 2
    assert "no IMAGE" in capsys.readouterr().err
    assert cli_main(["mkcomposefs", "--skip-xattrs", "--user-xattrs", str(tmp_path), "x"]) == 2
    assert "exclude each other" in capsys.readouterr().err


def make_source(top: Path) -> None:
    (top / "d" / "e").mkdir(parents=True)
    (top / "small").write_bytes(b"small file")
    (top / "big").write_bytes(bytes(range(256)) * 400)
    (top / "big-copy").write_bytes(bytes(range(256)) * 400)
    (top / "d" / "b65").write_bytes(b"x" * 65)
    (top / "empty").write_bytes(b"")
    os.symlink("target", top / "d" / "link")
    os.mkfifo(top / "fifo")
    os.setxattr(top / "small", "user.note", b"hello")
    for path in top.rglob("*"):
        if not path.is_symlink():
            os.chmod(path, 0o755 if path.is_dir() else 0o644)
    os.chmod(top, 0o755)


def test_directory_scan_equals_the_dump_it_describes(tmp_path: Path) -> None:
    src = tmp_path / "src"
    src.mkdir()
    make_source(src)
    root = scan_directory(str(src), ScanOptions(use_epoch=True, threads=2))
    st = os.stat(src)
    digest = fsverity_digest_path(src / "big").hex()
    d65 = fsverity_digest(b"x" * 65).hex()
    dsmall = fsverity_digest(b"small file").hex()
    ids = f"{st.st_uid} {st.st_gid}"
    text = (
        f"/ 0 40755 1 {ids} 0 0.0 - - -\n"
        f"/big 102400 100644 1 {ids} 0 0.0 {digest[:2]}/{digest[2:]} - {digest}\n"
        f"/big-copy 102400 100644 1 {ids} 0 0.0 {digest[:2]}/{digest[2:]} - {digest}\n"
        f"/d 0 40755 1 {ids} 0 0.0 - - -\n"
        f"/d/b65 65 100644 1 {ids} 0 0.0 {d65[:2]}/{d65[2:]} - {d65}\n"
        f"/d/e 0 40755 1 {ids} 0 0.0 - - -\n"
        f"/d/link 6 120777 1 {ids} 0 0.0 target - -\n"
        f"/empty 0 100644 1 {ids} 0 0.0 - - -\n"
        f"/fifo 0 10644 1 {ids} 0 0.0 - - -\n"
        f"/small 10 100644 1 {ids} 0 0.0 {dsmall[:2]}/{dsmall[2:]} small\\x20file {dsmall} user.note=hello\n"
    )
    assert image_bytes(root) == image_bytes(read_dump(text.encode())[1])


def test_digest_store(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    src = tmp_path / "src"
    src.mkdir()
    make_source(src)
    store = tmp_path / "objects"
    image = tmp_path / "img"
    argv = ["mkcomposefs", "--digest-store", str(store), "--threads=2", str(src), str(image)]
    assert cli_main(argv) == 0
    files = sorted(p.relative_to(store) for p in store.rglob("*") if p.is_file())
    big = fsverity_digest_path(src / "big")
    b65 = fsverity_digest_path(src / "d" / "b65")
    assert [str(p) for p in files] == sorted(
        f"{d.hex()[:2]}/{d.hex()[2:]}" for d in (big, b65)
    )  # files over 64 bytes, each content once, no temporary files left
    obj = Path(os.fsdecode(object_path(str(store), big)))
    assert obj.read_bytes() == (src / "big").read_bytes()
    assert stat.S_IMODE(obj.stat().st_mode) == 0o644
    before = obj.stat().st_ino
    assert cli_main(argv) == 0  # a second image over the same store: nothing written twice
    assert obj.stat().st_ino == before
    assert fill_store(str(store), [(big, str(src / "big").encode())]) == 0
    capsys.readouterr()
    assert cli_main(["composefs-info", "objects", str(image)]) == 0
    objects = capsys.readouterr().out.splitlines()
    assert objects == [str(p) for p in files]
    assert cli_main(["composefs-info", "missing-objects", "--basedir", str(store), str(image)]) == 0
    assert capsys.readouterr().out == ""
    obj.unlink()
    assert cli_main(["composefs-info", "missing-objects", "--basedir", str(store), str(image)]) == 0
    assert capsys.readouterr().out.splitlines() == [str(obj.relative_to(store))]


def test_info_ls_and_dump_round_trip(tmp_path: Path) -> None:
    text, lo, hi = CASES["hardlinks"]
    image = tmp_path / "img"
    image.write_bytes(image_bytes(read_dump(text.encode())[1], min_version=lo, max_version=hi))
    listed = erofsgen("composefs-info", "ls", str(image))
    assert listed.returncode == 0, listed.stderr
    lines = listed.stdout.decode().splitlines()
    assert lines[0] == "/a/\t"
    assert any(line.startswith("/a/file\t@ 07/") for line in lines)
    dumped = erofsgen("composefs-info", "dump", str(image))
    assert dumped.returncode == 0, dumped.stderr
    again = erofsgen("mkcomposefs", f"--min-version={lo}", f"--max-version={hi}", "--from-file", "-", "-",
                     data=dumped.stdout)  # fmt: skip
    assert again.stdout == image.read_bytes()


def test_mount_over_the_object_store(
    tmp_path: Path, kernel_mount: MountImage, capsys: pytest.CaptureFixture[str]
) -> None:
    del kernel_mount  # for its skip (or failure under EROFSGEN_REQUIRE_KERNEL=1)
    src = tmp_path / "src"
    src.mkdir()
    make_source(src)
    store, image, mnt = tmp_path / "objects", tmp_path / "img", tmp_path / "mnt"
    mnt.mkdir()
    assert (
        cli_main(["mkcomposefs", "--digest-store", str(store), "--print-digest", str(src), str(image)]) == 0
    )
    digest = capsys.readouterr().out.strip()
    assert cli_main(["mount", str(image), str(mnt), "--objects", str(store), "--digest", "00" * 32]) == 2
    assert "is not the expected" in capsys.readouterr().err
    assert cli_main(["mount", str(image), str(mnt), "--objects", str(store), "--digest", digest]) == 0
    try:
        for path in sorted(src.rglob("*")):
            rel = path.relative_to(src)
            got = mnt / rel
            assert os.lstat(got).st_mode == os.lstat(path).st_mode, rel
            if path.is_symlink():
                assert os.readlink(got) == os.readlink(path)
            elif path.is_file():
                assert got.read_bytes() == path.read_bytes(), rel  # big ones come from the store
        assert os.getxattr(mnt / "small", "user.note") == b"hello"
    finally:
        assert cli_main(["umount", str(mnt)]) == 0
    assert not os.listdir(mnt)


def test_image_targets_are_handled_as_pack_handles_them(tmp_path: Path) -> None:
    """A failed build keeps the old image; a FIFO is written in place, never unlinked; a reader
    that closes the pipe early is one line naming standard output."""
    src = tmp_path / "src"
    src.mkdir()
    make_source(src)
    image = tmp_path / "img"
    image.write_bytes(b"old image")
    bad = tmp_path / "bad.dump"
    bad.write_text("/ 0 40755 2 0 0 0 0.0 - - -\n/x 0 100644 1 0 0 0 0.0 - - - bad-xattr\n")
    assert erofsgen("mkcomposefs", "--from-file", str(bad), str(image)).returncode == 2
    assert image.read_bytes() == b"old image"
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    reader = subprocess.Popen(["cat", str(fifo)], stdout=subprocess.PIPE)
    assert erofsgen("mkcomposefs", str(src), str(fifo)).returncode == 0
    received, _ = reader.communicate(timeout=60)
    assert stat.S_ISFIFO(os.lstat(fifo).st_mode)
    assert erofsgen("mkcomposefs", str(src), str(image)).returncode == 0
    assert received == image.read_bytes()
    piped = subprocess.Popen(
        [sys.executable, "-m", "erofsgen", "mkcomposefs", "/usr/share", "-"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env={**os.environ, "PYTHONPATH": str(REPO)},
    )
    assert piped.stdout is not None and len(piped.stdout.read(1000)) == 1000
    piped.stdout.close()
    err = piped.communicate(timeout=120)[1].decode()
    assert piped.returncode == 2
    assert err == "erofsgen: error: standard output: cannot write the image: the reader closed the pipe\n"
