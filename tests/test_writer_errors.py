"""Bad input: a clear error naming the path, exit status 2, and no image or temporary file left."""

from __future__ import annotations

import errno
import os
import pickle
import signal
from pathlib import Path

import pytest

from erofsgen.cli import main as cli_main
from erofsgen.errors import ImageWriteError, InvalidInputError
from erofsgen.model import BytesData, Device, Directory, Fifo, File, Metadata, Node, PathData, Symlink
from erofsgen.sources.directory import tree_from_directory
from erofsgen.writer import WriteOptions, write_image

from .support.pause import PausedCommand, open_temporary_files
from .support.tmpfs import mounted_tmpfs


def tree_with(name: bytes, node: Node) -> Directory:
    return Directory(Metadata(0o755), {b"dir": Directory(Metadata(0o755), {name: node})})


def assert_fails_cleanly(tree: Directory, out: Path, message: str, path: str) -> None:
    with pytest.raises(InvalidInputError) as info:
        write_image(tree, out)
    text = str(info.value)
    assert message in text and path in text, text
    assert not out.exists()
    assert [p.name for p in out.parent.iterdir() if p.name.endswith(".tmp")] == []


@pytest.mark.parametrize(
    ("name", "node", "message"),
    [
        (b"a/b", File(Metadata()), "'/'"),
        (b"a\0b", File(Metadata()), "NUL"),
        (b"x" * 256, File(Metadata()), "longer than 255"),
        (b"..", File(Metadata()), "invalid file name"),
        (b"s", Symlink(Metadata(), b"t" * 4096), "symlink target"),
        (b"s", Symlink(Metadata(), b""), "symlink target"),
        (b"f", File(Metadata(uid=2**32 - 1)), "uid"),
        (b"f", File(Metadata(gid=-1)), "gid"),
        (b"f", File(Metadata(mode=0o170000)), "mode"),
        (b"f", File(Metadata(xattrs={b"user.v": b"v" * 65536})), "over 65535"),
        (b"f", File(Metadata(xattrs={b"user." + b"n" * 251: b""})), "too long"),
        (b"f", File(Metadata(xattrs={b"other.name": b"1"})), "no prefix"),
        (b"p", Fifo(Metadata(xattrs={b"user.x": b"1"})), "only allowed on regular files"),
        (b"f", File(Metadata(xattrs={b"system.posix_acl_access": b"junk"})), "not a POSIX ACL"),
        (b"f", File(Metadata(xattrs={b"system.posix_acl_default": b"\x02\0\0\0"})), "not allowed"),
        (b"d", Device(Metadata(), False, 4096, 0), "device number"),
        (b"f", File(Metadata(xattrs={b"user.%05d" % i: b"" for i in range(6000)})), "kernel's 65536"),
    ],
    ids=lambda v: v if isinstance(v, str) else None,
)
def test_invalid_trees_are_refused(name: bytes, node: Node, message: str, tmp_path: Path) -> None:
    assert_fails_cleanly(tree_with(name, node), tmp_path / "out.img", message, "/dir")


def test_directory_under_two_names_is_refused(tmp_path: Path) -> None:
    shared = Directory(Metadata(0o755))
    tree = Directory(Metadata(0o755), {b"a": shared, b"b": shared})
    assert_fails_cleanly(tree, tmp_path / "out.img", "more than one name", "/b")


def test_vanished_file(tmp_path: Path) -> None:
    tree = tree_with(b"gone", File(Metadata(), PathData(str(tmp_path / "missing"), 10)))
    assert_fails_cleanly(tree, tmp_path / "out.img", "cannot read", "/dir/gone")


@pytest.mark.parametrize("change", [-1, +1, -5000])
def test_file_changing_size_while_packing(change: int, tmp_path: Path) -> None:
    src = tmp_path / "src"
    src.mkdir()
    victim = src / "victim"
    victim.write_bytes(b"v" * 10000)
    tree = tree_from_directory(src)
    victim.write_bytes(b"v" * (10000 + change))
    assert_fails_cleanly(tree, tmp_path / "out.img", "while packing", "/victim")


def test_interrupt_leaves_nothing_and_keeps_the_old_image(tmp_path: Path) -> None:
    out = tmp_path / "out.img"
    out.write_bytes(b"previous image")
    tree = Directory(
        Metadata(0o755), {b"f%d" % i: File(Metadata(), BytesData(b"x" * 5000)) for i in range(5)}
    )

    def interrupt(done: int, total: int) -> None:
        if done > 5000:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        write_image(tree, out, progress=interrupt)
    assert out.read_bytes() == b"previous image"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out.img"]


def test_cli_reports_one_line_and_exit_2(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    src = tmp_path / "src"
    (src / "d").mkdir(parents=True)
    os.mkfifo(src / "d" / "p")
    os.setxattr(src / "d", "user.ok", b"1")
    out = tmp_path / "out.img"
    status = cli_main(["pack", "--quiet", "--uid-offset=4294967295", str(src), str(out)])
    err = capsys.readouterr().err
    assert status == 2
    assert err.startswith("erofsgen: error: ") and err.count("\n") == 1 and "Traceback" not in err
    assert not out.exists()


def test_unwritable_destination(tmp_path: Path) -> None:
    tree = Directory(Metadata(0o755))
    with pytest.raises(InvalidInputError, match="cannot create the image"):
        write_image(tree, tmp_path / "no" / "such" / "dir" / "out.img")
    with pytest.raises(InvalidInputError, match="is a directory"):
        write_image(tree, tmp_path)


def test_invalid_options() -> None:
    with pytest.raises(InvalidInputError, match="block size"):
        WriteOptions(block_size=8192)
    with pytest.raises(InvalidInputError, match="label"):
        WriteOptions(label="x" * 16)


def test_ctrl_c_leaves_nothing(tmp_path: Path) -> None:
    """A real SIGINT to a running `erofsgen pack`: exit 130, no image, no temporary file."""
    source = tmp_path / "src"
    source.mkdir()
    for i in range(4):
        (source / f"f{i}").write_bytes(os.urandom(256 * 1024))
    out_dir = tmp_path / "out"
    out_dir.mkdir()
    image = out_dir / "img.erofs"
    # The child stops in its main thread's first write to the image, so the signal always lands
    # mid-pack, however busy the machine: no sleeping, no tree big enough to outrun the parent.
    child = PausedCommand("pwrite", ["pack", "--quiet", str(source), str(image)])
    child.wait_paused()
    assert open_temporary_files(child.proc.pid, out_dir), "no temporary file"
    child.proc.send_signal(signal.SIGINT)
    code, err = child.finish()
    assert (code, err) == (130, "erofsgen: error: interrupted\n")
    assert list(out_dir.iterdir()) == []


def test_long_prefix_limits() -> None:
    with pytest.raises(InvalidInputError, match="7-bit id"):
        WriteOptions(xattr_prefixes=tuple(b"user.p%03d." % i for i in range(129)))
    with pytest.raises(InvalidInputError, match="twice"):
        WriteOptions(xattr_prefixes=(b"user.a.", b"user.a."))
    with pytest.raises(InvalidInputError, match="longer than any xattr name"):
        write_image(
            Directory(Metadata(0o755)),
            "/nonexistent/x",
            WriteOptions(xattr_prefixes=(b"user." + b"x" * 251,)),
        )


def test_image_side_errors_are_not_blamed_on_the_source(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A full destination is an error about the image, naming it (exit 2), not a bad input file."""
    with mounted_tmpfs(tmp_path / "small", "256k") as small:
        src = tmp_path / "src"
        src.mkdir()
        (src / "big").write_bytes(os.urandom(1 << 20))
        out = small / "out.img"
        with pytest.raises(ImageWriteError) as info:
            write_image(tree_from_directory(src), out)
        assert not isinstance(info.value, InvalidInputError)
        assert str(info.value) == (
            f"{out}: cannot write the image: No space left on device (the image needs 1052672 bytes)"
        )
        assert info.value.errno == errno.ENOSPC and info.value.filename == str(out)
        copy = pickle.loads(pickle.dumps(info.value))
        assert (str(copy), copy.errno, copy.filename) == (str(info.value), errno.ENOSPC, str(out))
        assert isinstance(info.value.__cause__, OSError)
        assert list(small.iterdir()) == []
        assert cli_main(["pack", "--quiet", str(src), str(out)]) == 2
        err = capsys.readouterr().err
        assert err == f"erofsgen: error: {info.value}\n"  # the same one line from the command
        assert list(small.iterdir()) == []


def test_unstorable_xattr_on_many_inodes_names_a_path(tmp_path: Path) -> None:
    tree = Directory(
        Metadata(0o755), {b"f%d" % i: File(Metadata(xattrs={b"odd.name": b"1"})) for i in range(5)}
    )
    assert_fails_cleanly(tree, tmp_path / "out.img", "no prefix", "/f0")


def test_dropped_xattrs_are_not_validated(tmp_path: Path) -> None:
    tree = Directory(Metadata(0o755), {b"p": Fifo(Metadata(xattrs={b"odd.name": b"1", b"user.x": b"2"}))})
    write_image(tree, tmp_path / "out.img", WriteOptions(xattrs=False))
    assert (tmp_path / "out.img").exists()
