"""tree_from_directory: every file type, hard links, xattrs, odd names, exclusions, errors."""

from __future__ import annotations

import errno
import gc
import hashlib
import os
import socket
import stat
from collections import Counter
from pathlib import Path

import pytest

from erofsgen.errors import InvalidInputError
from erofsgen.model import Device, Directory, EntryData, Fifo, File, Node, Socket, Symlink, iter_tree
from erofsgen.sources import directory as directory_module
from erofsgen.sources.directory import tree_from_directory
from tests.support.compare import assert_same_tree
from tests.support.snapshot import Entry, TreeSnapshot, snapshot

needs_root = pytest.mark.skipif(os.geteuid() != 0, reason="needs root (devices, owners, trusted.* xattrs)")

NON_UTF8 = b"caf\xe9"


def _make_socket(path: Path) -> None:
    with socket.socket(socket.AF_UNIX) as sock:
        sock.bind(os.fspath(path))


@pytest.fixture
def src(tmp_path: Path) -> Path:
    """A small tree with one of every type (devices only as root)."""
    root = tmp_path / "src"
    (root / "sub" / "deeper").mkdir(parents=True)
    (root / "file").write_bytes(b"hello")
    (root / "sub" / "deeper" / "data").write_bytes(b"x" * 5000)
    os.symlink("sub/deeper", root / "link")
    os.mkfifo(root / "fifo")
    _make_socket(root / "sock")
    os.link(root / "file", root / "sub" / "hardlink")
    (root / os.fsdecode(NON_UTF8)).write_bytes(b"latin-1 name")
    os.chmod(root / "file", 0o4751)
    os.utime(root / "file", ns=(1, 1_234_567_891))
    if os.geteuid() == 0:
        os.mknod(root / "chr", 0o620 | stat.S_IFCHR, os.makedev(4, 1 << 10))
        os.mknod(root / "blk", 0o600 | stat.S_IFBLK, os.makedev(259, 3))
        os.chmod(root / "chr", 0o620)  # mknod applies the umask
        os.chown(root / "sub", 1234, 5678)
    return root


def test_every_type_and_metadata(src: Path) -> None:
    tree = tree_from_directory(src)
    kids = tree.children
    assert isinstance(kids[b"file"], File)
    assert kids[b"file"].meta.mode == 0o4751
    assert kids[b"file"].meta.mtime_ns == 1_234_567_891
    assert isinstance(kids[b"link"], Symlink) and kids[b"link"].target == b"sub/deeper"
    assert isinstance(kids[b"fifo"], Fifo)
    assert isinstance(kids[b"sock"], Socket)
    sub = kids[b"sub"]
    assert isinstance(sub, Directory)
    deeper = sub.children[b"deeper"]
    assert isinstance(deeper, Directory)
    data = deeper.children[b"data"]
    assert isinstance(data, File) and isinstance(data.data, EntryData)
    assert data.data.size == 5000
    assert data.data.path == os.fsencode(src / "sub" / "deeper" / "data")
    root_st = os.lstat(src)
    assert tree.meta.mode == stat.S_IMODE(root_st.st_mode)
    assert tree.meta.mtime_ns == root_st.st_mtime_ns


def test_hard_links_are_one_node(src: Path) -> None:
    tree = tree_from_directory(src)
    sub = tree.children[b"sub"]
    assert isinstance(sub, Directory)
    assert sub.children[b"hardlink"] is tree.children[b"file"]


def test_non_utf8_name_is_kept_as_bytes(src: Path) -> None:
    tree = tree_from_directory(src)
    node = tree.children[NON_UTF8]
    assert isinstance(node, File)
    with node.data.open() as f:
        assert f.read() == b"latin-1 name"


@needs_root
def test_devices_and_owners(src: Path) -> None:
    tree = tree_from_directory(src)
    chr_node, blk_node = tree.children[b"chr"], tree.children[b"blk"]
    assert isinstance(chr_node, Device) and isinstance(blk_node, Device)
    assert (chr_node.block, chr_node.major, chr_node.minor, chr_node.meta.mode) == (False, 4, 1024, 0o620)
    assert (blk_node.block, blk_node.major, blk_node.minor) == (True, 259, 3)
    sub = tree.children[b"sub"]
    assert (sub.meta.uid, sub.meta.gid) == (1234, 5678)


@needs_root
def test_xattrs_all_namespaces(src: Path) -> None:
    os.setxattr(src / "file", "user.a", b"1")
    os.setxattr(src / "file", "trusted.overlay.opaque", b"y")
    os.setxattr(src / "link", "trusted.sym", b"on the link", follow_symlinks=False)
    os.setxattr(src, "user.root", b"r")
    tree = tree_from_directory(src)
    assert tree.children[b"file"].meta.xattrs == {b"user.a": b"1", b"trusted.overlay.opaque": b"y"}
    assert tree.children[b"link"].meta.xattrs == {b"trusted.sym": b"on the link"}
    assert tree.meta.xattrs == {b"user.root": b"r"}
    assert tree_from_directory(src, read_xattrs=False).children[b"file"].meta.xattrs == {}


def test_xattrs_unsupported_means_none(src: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    def unsupported(path: bytes, *, follow_symlinks: bool) -> list[str]:
        raise OSError(errno.EOPNOTSUPP, "Operation not supported", path)

    monkeypatch.setattr(os, "listxattr", unsupported)
    tree = tree_from_directory(src)
    assert all(not node.meta.xattrs for _, node in iter_tree(tree))


def test_unreadable_xattr_names_the_path(src: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    real_listxattr = os.listxattr

    def listxattr(path: bytes, *, follow_symlinks: bool) -> list[str]:
        return (
            ["user.x"] if path.endswith(b"/file") else real_listxattr(path, follow_symlinks=follow_symlinks)
        )

    def getxattr(path: bytes, name: str, *, follow_symlinks: bool) -> bytes:
        raise PermissionError(errno.EACCES, "Permission denied", path)

    monkeypatch.setattr(os, "listxattr", listxattr)
    monkeypatch.setattr(os, "getxattr", getxattr)
    with pytest.raises(InvalidInputError, match=r"cannot read xattr user\.x") as info:
        tree_from_directory(src)
    assert info.value.path == os.fspath(src / "file")


def test_unreadable_directory_names_the_path(src: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    real_scandir = os.scandir
    denied = os.fsencode(src / "sub" / "deeper")

    def scandir(path: bytes) -> object:
        if path == denied:
            raise PermissionError(errno.EACCES, "Permission denied", path)
        return real_scandir(path)

    monkeypatch.setattr(os, "scandir", scandir)
    with pytest.raises(InvalidInputError, match="cannot read directory: Permission denied") as info:
        tree_from_directory(src)
    assert info.value.path == os.fsdecode(denied)


def test_unreadable_file_names_the_path(src: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # Pretend to be an unprivileged user who owns nothing; the kernel then has the last word.
    os.chmod(src / "file", 0o644)
    os.chmod(src / "sub" / "deeper" / "data", 0o640)
    monkeypatch.setattr(os, "geteuid", lambda: 4242)
    monkeypatch.setattr(os, "getgroups", lambda: [4242])
    monkeypatch.setattr(os, "getegid", lambda: 4242)
    monkeypatch.setattr(os, "access", lambda path, mode, follow_symlinks: False)
    with pytest.raises(InvalidInputError, match="cannot read file") as info:
        tree_from_directory(src)
    assert info.value.path == os.fspath(src / "sub" / "deeper" / "data")


def test_missing_source(tmp_path: Path) -> None:
    with pytest.raises(InvalidInputError, match="No such file or directory") as info:
        tree_from_directory(tmp_path / "missing")
    assert info.value.path == os.fspath(tmp_path / "missing")


def test_source_that_is_not_a_directory(src: Path) -> None:
    with pytest.raises(InvalidInputError, match="not a directory") as info:
        tree_from_directory(src / "file")
    assert info.value.path == os.fspath(src / "file")


def test_symlinked_source_needs_a_trailing_slash(src: Path, tmp_path: Path) -> None:
    os.symlink(src, tmp_path / "alias")
    with pytest.raises(InvalidInputError, match="not a directory"):
        tree_from_directory(tmp_path / "alias")
    assert set(tree_from_directory(os.fspath(tmp_path / "alias") + "/").children) == set(
        tree_from_directory(src).children
    )


def _paths(tree: Directory) -> set[bytes]:
    return {path for path, _ in iter_tree(tree) if path}


@pytest.mark.parametrize("spelling", ["sub/deeper", "/sub/deeper", b"sub/deeper"])
def test_exclude_path_skips_a_directory_whole(src: Path, spelling: str | bytes) -> None:
    paths = _paths(tree_from_directory(src, exclude_paths=[spelling]))
    assert b"sub" in paths and b"sub/hardlink" in paths
    assert not any(p.startswith(b"sub/deeper") for p in paths)


def test_exclude_path_is_exact(src: Path) -> None:
    paths = _paths(tree_from_directory(src, exclude_paths=["sub/deep", "deeper", "file"]))
    assert b"sub/deeper/data" in paths
    assert b"file" not in paths
    assert b"sub/hardlink" in paths  # the other name of the excluded inode stays


def test_exclude_regex_searches_the_relative_path(src: Path) -> None:
    paths = _paths(tree_from_directory(src, exclude_regexes=[r"^s.*/d", b"\xe9$"]))
    assert b"sub/deeper" not in paths and b"sub/deeper/data" not in paths
    assert NON_UTF8 not in paths
    assert b"sub/hardlink" in paths and b"sock" in paths
    assert b"sock" not in _paths(tree_from_directory(src, exclude_regexes=["ock"]))


def test_bad_exclude_regex(src: Path) -> None:
    with pytest.raises(InvalidInputError, match="invalid exclude regex"):
        tree_from_directory(src, exclude_regexes=["("])


def test_progress_reports_the_final_count(src: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(directory_module, "PROGRESS_EVERY", 2)
    seen: list[int] = []
    tree = tree_from_directory(src, on_progress=seen.append)
    entries = sum(1 for _ in iter_tree(tree)) - 1
    assert seen[-1] == entries
    assert seen == sorted(seen) and len(seen) > 1


def test_deep_tree_needs_no_recursion(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    levels = [tmp_path / "d"]
    for _ in range(1200):  # deeper than Python's default recursion limit
        levels.append(levels[-1] / "a")
    for level in levels:
        level.mkdir()
    monkeypatch.chdir(tmp_path)
    try:
        tree = tree_from_directory("d")
        assert max(len(p.split(b"/")) for p in _paths(tree)) == 1200
    finally:
        for level in reversed(levels):  # pytest's recursive cleanup would overflow the stack
            level.rmdir()


# --------------------------------------------------------------------------- scenario tree


def _model_snapshot(root: Directory) -> TreeSnapshot:
    """A TreeSnapshot of a model tree, to compare with `snapshot()` of the source."""
    names: Counter[int] = Counter(id(node) for _, node in iter_tree(root))
    entries: dict[str, Entry] = {}
    groups: dict[int, set[str]] = {}
    for path, node in iter_tree(root):
        rel = os.fsdecode(path) if path else "."
        entries[rel] = _model_entry(node, names[id(node)])
        if not isinstance(node, Directory) and names[id(node)] > 1:
            groups.setdefault(id(node), set()).add(rel)
    return TreeSnapshot(entries, frozenset(frozenset(g) for g in groups.values()))


def _model_entry(node: Node, names: int) -> Entry:
    kinds = {File: "file", Directory: "dir", Symlink: "symlink", Fifo: "fifo", Socket: "sock"}
    kind = ("blk" if node.block else "chr") if isinstance(node, Device) else kinds[type(node)]
    nlink = names
    if isinstance(node, Directory):
        nlink = 2 + sum(isinstance(child, Directory) for child in node.children.values())
    sha = None
    if isinstance(node, File):
        with node.data.open() as f:
            sha = hashlib.sha256(f.read()).hexdigest()
    meta = node.meta
    return Entry(
        kind=kind,
        mode=meta.mode,
        uid=meta.uid,
        gid=meta.gid,
        nlink=nlink,
        size=None if isinstance(node, Directory) else _size(node),
        mtime_ns=meta.mtime_ns,
        rdev=(node.major, node.minor) if isinstance(node, Device) else None,
        target=node.target if isinstance(node, Symlink) else None,
        sha256=sha,
        xattrs=tuple(sorted((os.fsdecode(k), v) for k, v in meta.xattrs.items())),
    )


def _size(node: Node) -> int:
    if isinstance(node, File):
        return node.data.size
    if isinstance(node, Symlink):
        return len(node.target)
    return 0


def test_scenario_tree_reads_back_exactly(scenario_tree: Path) -> None:
    assert_same_tree(snapshot(scenario_tree), _model_snapshot(tree_from_directory(scenario_tree)))


@pytest.mark.parametrize("suffix", ["", "/"])
def test_file_paths_share_their_directory_prefix(src: Path, suffix: str) -> None:
    """Files of one directory hold one prefix object; paths have no doubled slash."""
    tree = tree_from_directory(str(src) + suffix)
    sub = tree.children[b"sub"]
    assert isinstance(sub, Directory)
    deeper = sub.children[b"deeper"]
    assert isinstance(deeper, Directory)
    data = deeper.children[b"data"]
    assert isinstance(data, File) and isinstance(data.data, EntryData)
    assert data.data.path == os.fsencode(src / "sub" / "deeper" / "data")
    top = [n.data for n in tree.children.values() if isinstance(n, File) and isinstance(n.data, EntryData)]
    assert len(top) >= 2 and all(d.prefix is top[0].prefix for d in top)
    assert top[0].prefix == os.fsencode(src) + b"/"


def test_walk_leaves_garbage_collection_as_it_was(src: Path) -> None:
    gc.disable()
    try:
        tree_from_directory(src)
        assert not gc.isenabled()
    finally:
        gc.enable()
    tree_from_directory(src)
    assert gc.isenabled()
