"""ImageBuilder: structure of the tree it builds, validation at each call, write-on-close."""

from __future__ import annotations

import inspect
import io
import os
import stat
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

import erofsgen
from erofsgen import writer
from erofsgen.errors import InvalidInputError
from erofsgen.model import (
    BytesData,
    Device,
    Directory,
    Fifo,
    File,
    FileObjectData,
    Node,
    PathData,
    Socket,
    Symlink,
)
from erofsgen.sources.builder import ImageBuilder
from erofsgen.writer.options import WriteOptions


def _at(tree: Directory, path: str) -> Node:
    node: Node = tree
    for part in os.fsencode(path).split(b"/"):
        assert isinstance(node, Directory)
        node = node.children[part]
    return node


@pytest.fixture
def b() -> ImageBuilder:
    return ImageBuilder(mtime=1_700_000_000)


def test_example_structure(tmp_path: Path) -> None:
    www = tmp_path / "www"
    (www / "css").mkdir(parents=True)
    (www / "index.html").write_bytes(b"<html>")
    with ImageBuilder(mtime_ns=5) as b:
        b.mkdir("etc", mode=0o755, uid=0, gid=0, mtime=1700000000)
        b.add_file("etc/hosts", data=b"127.0.0.1 localhost\n", mode=0o644)
        b.add_file("bin/tool", path="/usr/bin/env")
        b.symlink("lib", "usr/lib")
        b.mknod("dev/null", "c", 1, 3)
        b.mkfifo("run/fifo")
        b.mksocket("run/sock")
        b.link("etc/hosts.bak", "etc/hosts")
        b.setxattr("etc/hosts", "user.origin", b"builder")
        b.add_tree(www, "var/www")
        tree = b.tree
    assert _at(tree, "etc").meta.mtime_ns == 1_700_000_000 * 10**9
    hosts = _at(tree, "etc/hosts")
    assert isinstance(hosts, File) and hosts.data == BytesData(b"127.0.0.1 localhost\n")
    assert hosts.meta.xattrs == {b"user.origin": b"builder"}
    assert hosts.meta.mtime_ns == 5
    assert _at(tree, "etc/hosts.bak") is hosts
    tool = _at(tree, "bin/tool")
    assert isinstance(tool, File) and isinstance(tool.data, PathData)
    assert tool.meta.mode == stat.S_IMODE(os.stat("/usr/bin/env").st_mode)  # from the source file
    lib = _at(tree, "lib")
    assert isinstance(lib, Symlink) and lib.target == b"usr/lib" and lib.meta.mode == 0o777
    null = _at(tree, "dev/null")
    assert isinstance(null, Device) and (null.block, null.major, null.minor) == (False, 1, 3)
    assert isinstance(_at(tree, "run/fifo"), Fifo)
    assert isinstance(_at(tree, "run/sock"), Socket)
    assert isinstance(_at(tree, "var/www/css"), Directory)
    assert _at(tree, "var/www").meta.mtime_ns == os.lstat(www).st_mtime_ns
    run = _at(tree, "run")  # an implicit parent: the builder's defaults
    assert (run.meta.mode, run.meta.uid, run.meta.gid, run.meta.mtime_ns) == (0o755, 0, 0, 5)


def test_metadata_keywords(b: ImageBuilder) -> None:
    node = b.add_file(
        "f", data=b"x", mode=0o4755, uid=7, gid=8, mtime=1.5, xattrs={"user.a": b"1", b"user.b": b"2"}
    )
    assert (node.meta.mode, node.meta.uid, node.meta.gid, node.meta.mtime_ns) == (0o4755, 7, 8, 1_500_000_000)
    assert node.meta.xattrs == {b"user.a": b"1", b"user.b": b"2"}
    assert b.add_file("g", mtime_ns=-3).meta.mtime_ns == -3
    assert b.add_file("h").meta.mtime_ns == 1_700_000_000 * 10**9
    assert b.add_file("st_mode", mode=0o100600).meta.mode == 0o600


def test_surrogateescape_and_bytes_names(b: ImageBuilder) -> None:
    b.add_file(os.fsdecode(b"caf\xe9"))
    b.add_file(b"dir/\xff")
    assert b"caf\xe9" in b.tree.children
    assert isinstance(_at(b.tree, os.fsdecode(b"dir/\xff")), File)


def test_leading_slash_and_root(b: ImageBuilder) -> None:
    b.add_file("/abs/file")
    assert isinstance(_at(b.tree, "abs/file"), File)
    b.setxattr("/", "user.root", b"r")
    b.mkdir("", mode=0o700)
    assert b.tree.meta.mode == 0o700 and b.tree.meta.xattrs == {b"user.root": b"r"}
    with pytest.raises(InvalidInputError, match="already exists"):
        b.mkdir("/")


def test_mkdir_gives_metadata_to_an_implicit_parent_once(b: ImageBuilder) -> None:
    b.add_file("a/b/c")
    b.mkdir("a/b", mode=0o700, uid=5)
    node = _at(b.tree, "a/b")
    assert (node.meta.mode, node.meta.uid) == (0o700, 5)
    assert isinstance(node, Directory) and b"c" in node.children
    with pytest.raises(InvalidInputError, match="already exists"):
        b.mkdir("a/b")


def test_link_metadata_changes_the_shared_inode(b: ImageBuilder) -> None:
    first = b.add_file("a", data=b"x", uid=1)
    second = b.link("dir/b", "a", uid=2)
    assert second is first and first.meta.uid == 2


def test_fileobj_window(b: ImageBuilder) -> None:
    f = io.BytesIO(b"0123456789")
    f.seek(3)
    whole = b.add_file("rest", fileobj=f)
    part = b.add_file("part", fileobj=f, size=4)
    assert isinstance(whole.data, FileObjectData) and isinstance(part.data, FileObjectData)
    assert (whole.data.offset, whole.data.size, part.data.size) == (3, 7, 4)
    with part.data.open() as opened:
        assert opened.read(part.data.size) == b"3456"


def test_add_tree_into_the_root_merges(tmp_path: Path, b: ImageBuilder) -> None:
    src = tmp_path / "src"
    src.mkdir()
    (src / "x").write_bytes(b"x")
    os.chmod(src, 0o711)
    b.add_file("other")
    b.add_tree(src)
    assert set(b.tree.children) == {b"x", b"other"}
    assert b.tree.meta.mode == 0o711
    with pytest.raises(InvalidInputError, match="already exists") as info:
        b.add_tree(src, "/")
    assert info.value.path == "/x"


def test_add_tree_keywords_apply_to_its_top(tmp_path: Path, b: ImageBuilder) -> None:
    (tmp_path / "src").mkdir()
    (tmp_path / "src" / "f").write_bytes(b"")
    top = b.add_tree(tmp_path / "src", "srv", uid=33, exclude_paths=("f",))
    assert top.meta.uid == 33 and not top.children


# Each call must fail naming the path it was given, and leave the tree as it was.
INVALID: list[tuple[str, Callable[[ImageBuilder], Any], str | None, str]] = [
    ("empty component", lambda b: b.add_file("a//b"), "/a//b", "invalid path component"),
    ("dot", lambda b: b.mkdir("a/./b"), "/a/./b", "invalid path component"),
    ("dotdot", lambda b: b.mkfifo("../x"), "/../x", "invalid path component"),
    ("trailing slash", lambda b: b.mkdir("a/"), "/a/", "invalid path component"),
    ("NUL", lambda b: b.add_file("a\0b"), "/a\0b", "NUL"),
    ("256 bytes", lambda b: b.add_file("d/" + "n" * 256), "/d/" + "n" * 256, "longer than 255"),
    ("duplicate", lambda b: b.add_file("etc/hosts"), "/etc/hosts", "already exists"),
    ("duplicate dir", lambda b: b.mkdir("etc"), "/etc", "already exists"),
    ("parent is a file", lambda b: b.add_file("etc/hosts/x"), "/etc/hosts/x", "parent /etc/hosts is not"),
    ("parent is a symlink", lambda b: b.mkdir("lnk/x"), "/lnk/x", "parent /lnk is not a directory"),
    ("link to a directory", lambda b: b.link("d2", "etc"), "/d2", "cannot hard-link to directory /etc"),
    ("link to nothing", lambda b: b.link("x", "nope"), "/nope", "no such entry"),
    ("link onto a name", lambda b: b.link("etc/hosts", "lnk"), "/etc/hosts", "already exists"),
    ("long symlink", lambda b: b.symlink("s", "t" * 4096), "/s", "symlink target"),
    ("empty symlink", lambda b: b.symlink("s", ""), "/s", "symlink target"),
    ("device kind", lambda b: b.mknod("dev", "p", 1, 1), "/dev", "device kind"),
    ("device major", lambda b: b.mknod("dev", "b", 4096, 0), "/dev", "does not fit"),
    ("both times", lambda b: b.mkfifo("f", mtime=1, mtime_ns=1), "/f", "not both"),
    ("uid range", lambda b: b.mkfifo("f", uid=2**32), "/f", "uid"),
    ("gid negative", lambda b: b.mkfifo("f", gid=-1), "/f", "gid"),
    ("mode type bits", lambda b: b.mkfifo("f", mode=0o100644), "/f", "mode"),
    ("xattr name", lambda b: b.setxattr("etc", "", b"v"), "/etc", "xattr name"),
    ("xattr value", lambda b: b.setxattr("etc", "user.x", "v"), "/etc", "must be bytes"),  # type: ignore[arg-type]
    ("setxattr missing", lambda b: b.setxattr("nope", "user.x", b"v"), "/nope", "no such entry"),
    ("two sources", lambda b: b.add_file("f", b"x", path="/etc/hostname"), "/f", "only one"),
    ("size without fileobj", lambda b: b.add_file("f", b"x", size=1), "/f", "size applies only"),
    ("fileobj too short", lambda b: b.add_file("f", fileobj=io.BytesIO(b"ab"), size=3), "/f", "beyond"),
    (
        "size negative",
        lambda b: b.add_file("f", fileobj=io.BytesIO(b"ab"), size=-1),
        "/f",
        "size -1 is negative",
    ),
    ("missing path", lambda b: b.add_file("f", path="/nonexistent/x"), "/f", "cannot stat"),
    ("path not a file", lambda b: b.add_file("f", path="/"), "/f", "not a regular file"),
    ("tree missing", lambda b: b.add_tree("/nonexistent/x", "t"), "/nonexistent/x", "No such file"),
    ("tree onto a dir", lambda b: b.add_tree("/usr/share/doc", "etc"), "/etc", "already exists"),
    # Values of the wrong type are refused at the call, never converted or left to fail later.
    ("uid bool", lambda b: b.mkfifo("f", uid=True), "/f", "uid must be an int, not bool"),
    ("uid no-id", lambda b: b.mkfifo("f", uid=2**32 - 1), "/f", "uid 4294967295 is outside 0..4294967294"),
    ("mode str", lambda b: b.mkdir("d", mode="755"), "/d", "mode must be an int"),  # type: ignore[arg-type]
    ("mtime nan", lambda b: b.mkfifo("f", mtime=float("nan")), "/f", "not a finite number"),
    ("mtime inf", lambda b: b.mkfifo("f", mtime=float("-inf")), "/f", "not a finite number"),
    ("mtime str", lambda b: b.mkfifo("f", mtime="1"), "/f", "int or float seconds"),  # type: ignore[arg-type]
    ("mtime huge", lambda b: b.mkfifo("f", mtime=2**64), "/f", "out of range"),
    ("mtime_ns float", lambda b: b.mkfifo("f", mtime_ns=1.0), "/f", "mtime_ns must be an int"),  # type: ignore[arg-type]
    ("data str", lambda b: b.add_file("f", "text"), "/f", "data must be bytes, not str"),  # type: ignore[arg-type]
    ("data int", lambda b: b.add_file("f", 5), "/f", "data must be bytes-like, not int"),  # type: ignore[arg-type]
    ("data file", lambda b: b.add_file("f", io.BytesIO()), "/f", "give it as fileobj="),  # type: ignore[arg-type]
    ("path fd", lambda b: b.add_file("f", path=0), "/f", "path must be a str"),  # type: ignore[arg-type]
    ("fileobj text", lambda b: b.add_file("f", fileobj=io.StringIO("x")), "/f", "text mode"),  # type: ignore[arg-type]
    ("size str", lambda b: b.add_file("f", fileobj=io.BytesIO(), size="1"), "/f", "size must be an int"),  # type: ignore[arg-type]
    ("xattrs list", lambda b: b.mkfifo("f", xattrs=[("user.a", b"")]), "/f", "mapping"),  # type: ignore[arg-type]
    ("xattr name int", lambda b: b.setxattr("etc", 5, b"v"), "/etc", "xattr name must be str or bytes"),  # type: ignore[arg-type]
    ("xattr user.", lambda b: b.setxattr("etc", "user.", b"v"), "/etc", "nothing after its prefix"),
    ("xattr trusted.", lambda b: b.mkdir("d", xattrs={b"trusted.": b""}), "/d", "nothing after its prefix"),
    ("xattr security.", lambda b: b.add_file("f", xattrs={"security.": b""}), "/f", "nothing after"),
    ("xattr system.", lambda b: b.setxattr("etc", "system.", b"v"), "/etc", "no prefix EROFS can store"),
    (
        "user xattr on a fifo",
        lambda b: b.mkfifo("f", xattrs={"user.a": b""}),
        "/f",
        "only allowed on regular",
    ),
    ("name int", lambda b: b.mkfifo(7), None, "entry name must be a str"),  # type: ignore[arg-type]
    ("symlink target None", lambda b: b.symlink("s", None), "/s", "symlink target must be"),  # type: ignore[arg-type]
    ("symlink over a name", lambda b: b.symlink("etc", target="x"), "/etc", "reverse of os.symlink"),
    ("link reversed", lambda b: b.link("etc/hosts", "etc/new"), "/etc/new", "reverse of os.link"),
    ("major bool", lambda b: b.mknod("dev", "c", True, 0), "/dev", "major must be an int"),
    ("kind list", lambda b: b.mknod("dev", ["c"], 1, 0), "/dev", "device kind"),  # type: ignore[arg-type]
    ("exclude str", lambda b: b.add_tree("/usr/share/doc", "t", exclude_paths="x"), "/t", "list of str"),
    ("read_xattrs int", lambda b: b.add_tree("/usr/share/doc", "t", read_xattrs=1), "/t", "True or False"),  # type: ignore[arg-type]
]


def _sample(b: ImageBuilder) -> None:
    b.mkdir("etc")
    b.add_file("etc/hosts", data=b"h")
    b.symlink("lnk", "etc")


def _shape(node: Node) -> object:
    meta = (node.meta.mode, node.meta.uid, node.meta.gid, node.meta.mtime_ns, dict(node.meta.xattrs))
    if isinstance(node, Directory):
        return meta, {name: _shape(child) for name, child in node.children.items()}
    return meta, type(node)


@pytest.mark.parametrize(("call", "path", "message"), [c[1:] for c in INVALID], ids=[c[0] for c in INVALID])
def test_invalid_calls_name_the_path(
    b: ImageBuilder, call: Callable[[ImageBuilder], Any], path: str | None, message: str
) -> None:
    _sample(b)
    before = _shape(b.tree)
    with pytest.raises(InvalidInputError) as info:
        call(b)
    assert info.value.path == path
    assert message in str(info.value)
    assert _shape(b.tree) == before


# --------------------------------------------------------------------------- finishing


@pytest.fixture
def captured(monkeypatch: pytest.MonkeyPatch) -> list[tuple[Directory, object, WriteOptions]]:
    calls: list[tuple[Directory, object, WriteOptions]] = []

    def fake_write_image(root: Directory, output: object, options: WriteOptions, *, progress: object) -> str:
        calls.append((root, output, options))
        return "summary"

    monkeypatch.setattr(writer, "write_image", fake_write_image)
    return calls


def test_close_writes_once(captured: list[tuple[Directory, object, WriteOptions]]) -> None:
    options = WriteOptions(block_size=1024)
    with ImageBuilder("out.img", options=options) as b:
        b.add_file("f")
    b.close()
    assert len(captured) == 1
    root, output, used = captured[0]
    assert root is b.tree and output == "out.img" and used is options


def test_error_in_the_block_writes_nothing(captured: list[tuple[Directory, object, WriteOptions]]) -> None:
    with pytest.raises(InvalidInputError), ImageBuilder("out.img") as b:
        b.add_file("f")
        b.add_file("f")
    assert captured == []
    with pytest.raises(InvalidInputError, match="closed"):
        b.add_file("g")


def test_write_returns_the_summary(captured: list[tuple[Directory, object, WriteOptions]]) -> None:
    b = ImageBuilder("out.img")
    assert b.write() == "summary"  # type: ignore[comparison-overlap]
    with pytest.raises(InvalidInputError, match="closed"):
        b.write()


def test_build_tree_without_output(captured: list[tuple[Directory, object, WriteOptions]]) -> None:
    with ImageBuilder() as b:
        b.add_file("f")
    assert captured == []
    b2 = ImageBuilder("out.img")
    b2.mkfifo("p")
    tree = b2.build_tree()
    assert b"p" in tree.children and captured == []
    b2.close()
    assert captured == []
    with pytest.raises(InvalidInputError, match="no output path"):
        ImageBuilder().write()


def test_writes_a_real_image(tmp_path: Path) -> None:
    image = tmp_path / "out.img"
    with erofsgen.ImageBuilder(image, options=erofsgen.WriteOptions(block_size=4096)) as b:
        b.add_file("etc/hosts", data=b"127.0.0.1 localhost\n")
        b.symlink("lib", "usr/lib")
    data = image.read_bytes()
    assert len(data) % 4096 == 0
    assert data[1024:1028] == bytes.fromhex("e2e1f5e0")
    assert [p.name for p in tmp_path.iterdir()] == ["out.img"]


def test_image_reads_back(tmp_path: Path) -> None:
    image = tmp_path / "out.img"
    blob = io.BytesIO(b"head" + bytes(range(256)) * 40)
    blob.seek(4)
    with ImageBuilder(image, mtime=1_700_000_000) as b:
        b.add_file("etc/hosts", data=b"127.0.0.1 localhost\n", mode=0o600, uid=5, gid=6)
        b.add_file("blob", fileobj=blob)
        b.link("etc/hosts.bak", "etc/hosts")
        b.setxattr("etc/hosts", "user.origin", b"builder")
        b.symlink("lib", "usr/lib")
        b.mknod("dev/sda", "b", 8, 0, mtime_ns=123)
        b.mkdir("etc", mode=0o750)
    with erofsgen.open_image(image) as img:
        assert img.read_bytes("etc/hosts.bak") == b"127.0.0.1 localhost\n"
        assert img.read_bytes("blob") == bytes(range(256)) * 40
        assert img.xattrs("etc/hosts") == {"user.origin": b"builder"}
        hosts = img.stat("etc/hosts")
        assert (hosts.mode & 0o7777, hosts.uid, hosts.gid, hosts.nlink) == (0o600, 5, 6, 2)
        assert hosts.mtime_ns == 1_700_000_000 * 10**9
        assert img.readlink("lib") == "usr/lib"
        dev = img.stat("dev/sda")
        assert (stat.S_ISBLK(dev.mode), dev.major, dev.minor, dev.mtime_ns) == (True, 8, 0, 123)
        assert img.stat("etc").mode & 0o7777 == 0o750
        assert sorted(img.listdir("/")) == ["blob", "dev", "etc", "lib"]


# --------------------------------------------------------------------------- the call contract

ENTRY_CALLS = [
    "mkdir",
    "add_file",
    "symlink",
    "mknod",
    "mkfifo",
    "mksocket",
    "link",
    "set_metadata",
    "add_tree",
]


@pytest.mark.parametrize("method", ENTRY_CALLS)
def test_metadata_keywords_are_visible_to_help(method: str) -> None:
    params = inspect.signature(getattr(ImageBuilder, method)).parameters
    assert not any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values())
    for keyword in ("mode", "uid", "gid", "mtime", "mtime_ns", "xattrs"):
        assert params[keyword].kind is inspect.Parameter.KEYWORD_ONLY
        assert params[keyword].default is None and params[keyword].annotation != inspect.Parameter.empty


def test_floats_and_bytes_likes_are_taken_exactly(b: ImageBuilder) -> None:
    node = b.add_file("f", bytearray(b"ab"), mtime=-1.25, xattrs={b"user.a": memoryview(b"xy")})
    assert node.data == BytesData(b"ab") and node.meta.mtime_ns == -1_250_000_000
    assert node.meta.xattrs == {b"user.a": b"xy"}
    assert b.add_file("g", memoryview(b"cd")).data == BytesData(b"cd")
    assert b.mkfifo("p", mtime=1e-9, uid=2**32 - 2).meta.mtime_ns == 1
    assert ImageBuilder(mtime=0.5).tree.meta.mtime_ns == 500_000_000


def test_target_by_keyword(b: ImageBuilder) -> None:
    lib = b.symlink("lib", target="usr/lib")
    assert isinstance(lib, Symlink) and lib.target == b"usr/lib"
    assert b.symlink(name="bin", target=b"usr/bin").target == b"usr/bin"
    hosts = b.add_file("etc/hosts")
    assert b.link("etc/hosts.bak", target="etc/hosts") is hosts
    assert _at(b.tree, "etc/hosts.bak") is hosts


def test_closed_fileobj_is_reported_at_the_call(tmp_path: Path, b: ImageBuilder) -> None:
    source = tmp_path / "blob"
    source.write_bytes(b"data")
    with source.open("rb") as f:
        pass
    with pytest.raises(InvalidInputError) as info:
        b.add_file("f", fileobj=f)
    assert info.value.path == "/f" and str(info.value) == f"/f: fileobj {source} is closed"


def test_fileobj_closed_before_writing_names_entry_and_file(tmp_path: Path) -> None:
    source = tmp_path / "blob"
    source.write_bytes(b"data")
    image = tmp_path / "out.img"
    with pytest.raises(InvalidInputError) as info:  # noqa: SIM117 - the file must close inside
        with ImageBuilder(image) as b:
            with source.open("rb") as f:
                b.add_file("dir/blob", fileobj=f)
    assert info.value.path == "/dir/blob"
    assert f"fileobj {source} was closed before the image was written" in str(info.value)
    assert not image.exists()


def test_summary_outlives_the_with_block(tmp_path: Path) -> None:
    image = tmp_path / "out.img"
    b = ImageBuilder(image)
    with pytest.raises(InvalidInputError, match="no image has been written"):
        b.summary  # noqa: B018 - the property raises before writing
    with b:
        b.add_file("etc/hosts", data=b"h")
    summary = b.summary
    assert isinstance(summary, erofsgen.ImageSummary)
    assert (summary.path, summary.inodes, summary.size) == (str(image), 3, image.stat().st_size)
    b.close()
    assert b.summary is summary


def test_no_summary_when_nothing_was_written(
    captured: list[tuple[Directory, object, WriteOptions]],
) -> None:
    with pytest.raises(InvalidInputError, match="already exists"), ImageBuilder("out.img") as failed:
        failed.mkfifo("p")
        failed.mkfifo("p")
    with ImageBuilder() as tree_only:
        tree_only.mkfifo("p")
    for b in (failed, tree_only):
        with pytest.raises(InvalidInputError, match="no image has been written"):
            b.summary  # noqa: B018 - the property raises
    assert captured == []


@pytest.mark.parametrize(
    "call",
    [
        lambda b: b.symlink("l", target="\ud800"),
        lambda b: b.mkdir("\ud800"),
        lambda b: b.add_file("f", data=b"", xattrs={"user.\ud800": b""}),
    ],
)
def test_a_str_that_cannot_be_a_file_name_is_refused_by_name(tmp_path: Path, call: Any) -> None:
    b = ImageBuilder(tmp_path / "x.img")
    with pytest.raises(InvalidInputError, match=r"'.*\\ud800' cannot be encoded as a file name"):
        call(b)
