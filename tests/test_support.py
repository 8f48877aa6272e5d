"""The harness itself: scenario tree, snapshots, tree comparison, kernel mounts, erofs-utils.

Findings with Debian's erofs-utils 1.5 and Linux 6.18, checked by the image matrix (cells
short-mkfs_*-kernel of tests/test_matrix.py): packing the scenario tree (without 255-byte
names, which 1.5 rejects) with *default* options and mounting it reproduces every recorded
field exactly: types, permission bits incl. setuid/setgid/sticky, 32-bit owners, nanosecond
mtimes before 1970 and past 2106 (1.5 writes extended inodes with per-file mtimes unless told
otherwise, so --preserve-mtime is not needed), nlink, rdev with 12-bit majors / 20-bit minors,
sockets, FIFOs, symlink targets up to 4095 bytes, contents, xattrs of every namespace incl.
POSIX ACLs and security.capability, xattrs on symlinks and special files, and hard links of
files, FIFOs, devices and symlinks. Only the mtimes change with --ignore-mtime (build time) or
-T N (N), and only owners with --all-root.
"""

from __future__ import annotations

import os
import shutil
import struct
import subprocess
from collections.abc import Callable
from pathlib import Path

import pytest

from tests.conftest import pytest_report_header
from tests.support import scenario
from tests.support.compare import assert_same_tree, diff_trees
from tests.support.erofs_utils import ErofsUtils, ToolError, parse_version
from tests.support.kernel import MountError, MountImage, is_mounted, loop_devices_of
from tests.support.scenario import (
    BIG_DIR,
    BIG_DIR_ENTRIES,
    DEEP_LEVELS,
    HARDLINK_GROUP,
    LARGE_XATTR_SIZE,
    LONG_NAME,
    LONG_SYMLINK,
    MANY_XATTRS_COUNT,
    MANY_XATTRS_FILE,
    NON_UTF8_NAME,
    SHARED_XATTR,
    build_scenario_tree,
)
from tests.support.snapshot import TreeSnapshot, snapshot

# --------------------------------------------------------------------------- helpers


@pytest.fixture(scope="module")
def scenario_snap(scenario_tree: Path) -> TreeSnapshot:
    return snapshot(scenario_tree)


def _copy(src: Path, dst: Path) -> Path:
    subprocess.run(["cp", "-a", str(src), str(dst)], check=True)
    return dst


def _loop_lines() -> str:
    return subprocess.run(["losetup", "-a"], capture_output=True, text=True, check=True).stdout


def _assert_released(image: Path, mountpoint: Path | None) -> None:
    """Nothing mounted at `mountpoint`, no loop device backed by `image`."""
    if mountpoint is not None:
        assert str(mountpoint) not in Path("/proc/mounts").read_text()
        assert not mountpoint.exists()
    assert f"({image})" not in _loop_lines()


def _acl_entries(blob: bytes) -> list[tuple[int, int, int]]:
    assert struct.unpack_from("<I", blob)[0] == 2
    return [struct.unpack_from("<HHI", blob, off) for off in range(4, len(blob), 8)]


# --------------------------------------------------------------------------- scenario tree


def test_scenario_has_every_file_type(scenario_snap: TreeSnapshot) -> None:
    kinds = {e.kind for e in scenario_snap.entries.values()}
    assert kinds == {"file", "dir", "symlink", "chr", "blk", "fifo", "sock"}


def test_scenario_sizes_straddle_block_edges(scenario_snap: TreeSnapshot) -> None:
    sizes = {e.size for p, e in scenario_snap.entries.items() if p.startswith("sizes/")}
    for bs in (512, 1024, 2048, 4096):
        assert {bs - 1, bs, bs + 1, 3 * bs - 1, 3 * bs, 3 * bs + 1} <= sizes
    assert {0, 1} <= sizes
    contents = [
        scenario_snap.entries[p].sha256 for p in scenario_snap.paths("file") if p.startswith("sizes/")
    ]
    assert len(set(contents)) == len(contents)  # pseudo-random: no two alike


def test_scenario_directories(scenario_snap: TreeSnapshot) -> None:
    big = [p for p in scenario_snap.entries if p.startswith(f"{BIG_DIR}/")]
    assert len(big) == BIG_DIR_ENTRIES
    assert {scenario_snap.entries[p].kind for p in big} == {"file", "dir", "symlink", "fifo"}
    assert max(p.count("/") for p in scenario_snap.entries if p.startswith("deep/")) == DEEP_LEVELS + 1
    assert scenario_snap.entries["empty"].kind == "dir"
    assert not [p for p in scenario_snap.entries if p.startswith("empty/")]


def test_scenario_symlinks_and_devices(scenario_snap: TreeSnapshot) -> None:
    e = scenario_snap.entries
    assert len(e[LONG_SYMLINK].target or b"") == 4095
    assert e["links/absolute"].target == b"/etc/hostname"
    assert e["links/non_utf8"].target == b"\xff\xfe target"
    rdevs = {x.rdev for x in e.values() if x.kind in ("chr", "blk")}
    assert {(4, 300), (300, 1), (4095, 1_048_575), (0, 0)} <= rdevs
    assert e["special/sock"].kind == "sock" and e["special/fifo"].kind == "fifo"


def test_scenario_hard_links(scenario_snap: TreeSnapshot) -> None:
    assert frozenset(HARDLINK_GROUP) in scenario_snap.hardlinks
    assert len({p.rsplit("/", 1)[0] for p in HARDLINK_GROUP}) == 3
    kinds = {scenario_snap.entries[min(g)].kind for g in scenario_snap.hardlinks}
    assert kinds == {"file", "fifo", "chr", "symlink"}
    assert all(scenario_snap.entries[p].nlink == 3 for p in HARDLINK_GROUP)


def test_scenario_names(scenario_snap: TreeSnapshot) -> None:
    assert f"names/{LONG_NAME}" in scenario_snap.entries
    assert f"names/{os.fsdecode(NON_UTF8_NAME)}" in scenario_snap.entries
    assert "names/new\nline" in scenario_snap.entries
    assert "names/with space" in scenario_snap.entries


def test_scenario_owners_modes_times(scenario_snap: TreeSnapshot) -> None:
    e = scenario_snap.entries
    assert (e["owners/u70000_g70001"].uid, e["owners/u70000_g70001"].gid) == (70000, 70001)
    assert e["owners/symlink_70002"].uid == 70002
    assert e["modes/file_7777"].mode == 0o7777
    assert e["modes/file_0000"].mode == 0
    assert e["modes/dir_1777"].mode == 0o1777
    mtimes = [x.mtime_ns for x in e.values() if x.mtime_ns is not None]
    assert min(mtimes) < 0
    assert e["times/past_2106"].mtime_ns == (2**32 + 12345) * 10**9 + 123_456_789
    assert e["times/dir_before_1970"].mtime_ns == -86_400 * 10**9 + 1
    # Directories keep their intended times although children were created after them.
    assert e["."].mtime_ns == 1_700_000_000_123_456_789


def test_scenario_xattrs(scenario_snap: TreeSnapshot) -> None:
    e = scenario_snap.entries
    names = {n for x in e.values() for n, _ in x.xattrs}
    prefixes = {n.split(".", 1)[0] for n in names}
    assert prefixes == {"user", "trusted", "security", "system"}
    assert "security.selinux" not in names
    assert len(e[MANY_XATTRS_FILE].xattrs) == MANY_XATTRS_COUNT
    assert dict(e["xattrs/empty_value"].xattrs)["user.empty"] == b""
    assert dict(e["xattrs/binary_value"].xattrs)["user.binary"] == bytes(range(256))
    assert len(dict(e["xattrs/large_value"].xattrs)["user.large"]) == LARGE_XATTR_SIZE
    sharing = [p for p, x in e.items() if SHARED_XATTR in x.xattrs]
    assert len(sharing) >= 5
    assert dict(e["xattrs/symlink"].xattrs) == {"trusted.on_symlink": b"s"}


def test_scenario_acls_are_consistent_with_modes(scenario_snap: TreeSnapshot) -> None:
    e = scenario_snap.entries["acl/file_access"]
    acl = _acl_entries(dict(e.xattrs)["system.posix_acl_access"])
    keys = [(tag, ident) for tag, _, ident in acl]
    assert keys == sorted(keys)  # sorted by tag, then id
    mask = next(perm for tag, perm, _ in acl if tag == scenario.ACL_MASK)
    assert e.mode is not None and (e.mode >> 3) & 7 == mask
    d = dict(scenario_snap.entries["acl/dir_default"].xattrs)
    assert {"system.posix_acl_access", "system.posix_acl_default"} <= d.keys()
    child = dict(scenario_snap.entries["acl/dir_default/child"].xattrs)
    assert "system.posix_acl_access" not in child  # built before the default ACL was set


def test_default_tree_has_the_edges_of_every_smaller_block_size() -> None:
    # So one tree serves the matrix's small-block producers too.
    for bs in (512, 1024, 2048):
        assert set(scenario.scenario_file_sizes(bs)) <= set(scenario.scenario_file_sizes())
        assert set(scenario.scenario_symlink_lengths(bs)) <= set(scenario.scenario_symlink_lengths())


def test_build_options(tmp_path: Path) -> None:
    root = tmp_path / "t"
    build_scenario_tree(root, long_names=False, blksz=8192)
    snap = snapshot(root)
    assert not [p for p in snap.entries if max(len(os.fsencode(c)) for c in p.split("/")) > 200]
    sizes = {x.size for p, x in snap.entries.items() if p.startswith("sizes/")}
    assert {8191, 8192, 8193, 3 * 8192 + 1} <= sizes
    with pytest.raises(scenario.ScenarioError, match="not empty"):
        build_scenario_tree(root)
    with pytest.raises(ValueError):
        build_scenario_tree(tmp_path / "u", blksz=3000)


def test_build_fails_loudly_where_the_filesystem_falls_short(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    real_utime = os.utime

    def clamping_utime(path: Path, *, ns: tuple[int, int], follow_symlinks: bool) -> None:
        # Like a filesystem with unsigned 32-bit seconds, which clamps silently.
        t = min(max(ns[1], 0), (2**32 - 1) * 10**9)
        real_utime(path, ns=(t, t), follow_symlinks=follow_symlinks)

    monkeypatch.setattr(os, "utime", clamping_utime)
    with pytest.raises(scenario.ScenarioError, match="'times/past_2106' mtime_ns"):
        build_scenario_tree(tmp_path / "clamped")

    def no_xattrs(path: Path, name: str, value: bytes, *, follow_symlinks: bool) -> None:
        raise OSError(95, "Operation not supported")

    monkeypatch.setattr(os, "setxattr", no_xattrs)
    with pytest.raises(scenario.ScenarioError, match=r"setxattr user\.root failed"):
        build_scenario_tree(tmp_path / "no_xattrs")


def test_build_is_deterministic(tmp_path: Path, scenario_snap: TreeSnapshot) -> None:
    build_scenario_tree(tmp_path / "again")
    assert_same_tree(scenario_snap, snapshot(tmp_path / "again"))


# --------------------------------------------------------------------------- comparison


def test_cp_a_copy_is_equal(scenario_tree: Path, scenario_snap: TreeSnapshot, tmp_path: Path) -> None:
    copy = _copy(scenario_tree, tmp_path / "copy")
    assert_same_tree(scenario_snap, snapshot(copy))


def _keep_parent_mtime(path: Path, change: Callable[[], object]) -> None:
    # Mutations that add or remove names bump the parent's mtime; restore it so the test
    # sees exactly the one difference it made.
    parent = path.parent.stat().st_mtime_ns
    change()
    os.utime(path.parent, ns=(parent, parent))


def _split_hard_link(path: Path) -> None:
    def split() -> None:
        tmp = path.with_name(path.name + ".tmp")
        shutil.copy2(path, tmp)
        os.replace(tmp, path)

    _keep_parent_mtime(path, split)


def _flip_byte(path: Path) -> None:
    st = path.stat()
    data = bytearray(path.read_bytes())
    data[100] ^= 0xFF
    path.write_bytes(bytes(data))
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns))


def _bump_mtime(path: Path) -> None:
    ns = path.lstat().st_mtime_ns + 1
    os.utime(path, ns=(ns, ns), follow_symlinks=False)


def _retarget(path: Path) -> None:
    ns = path.lstat().st_mtime_ns

    def swap() -> None:
        path.unlink()
        path.symlink_to("somewhere/else")
        os.utime(path, ns=(ns, ns), follow_symlinks=False)

    _keep_parent_mtime(path, swap)


MUTATIONS: dict[str, tuple[str, str, Callable[[Path], object]]] = {
    "mode": ("sizes/s000001", "mode", lambda p: p.chmod(0o600)),
    "mtime_ns": ("times/past_2106", "mtime_ns", _bump_mtime),
    "xattr_value": ("xattrs/all_ns", "xattr user.test", lambda p: os.setxattr(p, "user.test", b"changed")),
    "xattr_removed": ("xattrs/all_ns", "xattr trusted.test", lambda p: os.removexattr(p, "trusted.test")),
    "owner": ("owners/symlink_70002", "uid", lambda p: os.chown(p, 1, 70003, follow_symlinks=False)),
    "content": ("sizes/s004096", "sha256", _flip_byte),
    "symlink_target": ("links/short", "target", _retarget),
    "hard_link_split": (HARDLINK_GROUP[1], "hard links", _split_hard_link),
    "removed": ("special/fifo", "presence", lambda p: _keep_parent_mtime(p, p.unlink)),
}


@pytest.mark.parametrize("mutation", sorted(MUTATIONS))
def test_assert_same_tree_catches(
    mutation: str, scenario_tree: Path, scenario_snap: TreeSnapshot, tmp_path: Path
) -> None:
    rel, field, mutate = MUTATIONS[mutation]
    # Only the top-level directory concerned is copied: a full copy per case is slow.
    top, inner = rel.split("/", 1)
    copy = _copy(scenario_tree / top, tmp_path / top)
    mutate(copy / inner)
    with pytest.raises(AssertionError) as info:
        assert_same_tree(snapshot(scenario_tree / top), snapshot(copy))
    message = str(info.value)
    assert f"{field}:" in message
    if field != "hard links":  # reported under the group's first path
        assert repr(inner) in message
    assert len(message.splitlines()) <= 6, message


def test_hard_link_split_reports_nlink_and_group(scenario_tree: Path, tmp_path: Path) -> None:
    copy = _copy(scenario_tree / "hardlinks", tmp_path / "hardlinks")
    one, two, three = (p.removeprefix("hardlinks/") for p in HARDLINK_GROUP)
    _split_hard_link(copy / two)
    diffs = diff_trees(snapshot(scenario_tree / "hardlinks"), snapshot(copy))
    assert {(d.path, d.field) for d in diffs} == {
        (one, "nlink"),
        (two, "nlink"),
        (three, "nlink"),
        (one, "hard links"),
    }
    group = next(d for d in diffs if d.field == "hard links")
    assert (group.expected, group.got) == (sorted([one, two, three]), sorted([one, three]))


def test_diff_is_bounded(scenario_snap: TreeSnapshot) -> None:
    no_times = scenario_snap.normalized(ignore_mtime=True)
    with pytest.raises(AssertionError) as info:
        assert_same_tree(scenario_snap, no_times, max_diffs=5)
    lines = str(info.value).splitlines()
    assert len(lines) == 7
    assert lines[-1].startswith(f"  ... and {len(scenario_snap.entries) - 5} more")


def test_ignore_options(scenario_tree: Path, scenario_snap: TreeSnapshot, tmp_path: Path) -> None:
    copy = _copy(scenario_tree, tmp_path / "copy")
    copy.chmod(0o700)
    os.chown(copy / "sizes/s000000", 1234, 5678)
    _bump_mtime(copy / "sizes/s000000")
    os.setxattr(copy / "xattrs/all_ns", "user.test", b"other")
    actual = snapshot(copy)
    assert_same_tree(
        scenario_snap,
        actual,
        ignore_root_meta=True,
        ignore_mtime=True,
        ignore_owner=True,
        ignore_fields=["xattrs"],
    )
    with pytest.raises(AssertionError, match=r"'\.': mode"):
        assert_same_tree(
            scenario_snap, actual, ignore_mtime=True, ignore_owner=True, ignore_fields=["xattrs"]
        )
    with pytest.raises(ValueError, match="unknown"):
        assert_same_tree(scenario_snap, actual, ignore_fields=["colour"])
    ignored = snapshot(copy, ignore_root_meta=True, ignore_mtime=True, ignore_owner=True)
    assert ignored.entries["sizes/s000000"].uid is None
    assert ignored.entries["."].mode is None


# --------------------------------------------------------------------------- erofs-utils + kernel


def test_parse_version() -> None:
    assert parse_version("dump.erofs 1.5") == (1, 5, 0)
    assert parse_version("mkfs.erofs 1.8.10-g3a5b") == (1, 8, 10)
    assert parse_version("no version here") is None


def test_erofs_utils_helpers(erofs_utils: ErofsUtils, tmp_path: Path) -> None:
    assert erofs_utils.version >= (1, 5, 0)
    src = tmp_path / "src"
    src.mkdir()
    (src / "hello").write_bytes(b"hello\n")
    image = tmp_path / "img"
    erofs_utils.mkfs(image, src, "-T0")
    assert erofs_utils.fsck(image).returncode == 0
    assert "0xE0F5E1E2" in erofs_utils.dump(image, "-s")
    data = bytearray(image.read_bytes())
    data[1024:1028] = bytes(4)  # break the magic
    image.write_bytes(bytes(data))
    assert erofs_utils.fsck(image).returncode != 0
    with pytest.raises(ToolError, match="exited"):
        erofs_utils.dump(image, "-s")
    with pytest.raises(ToolError):
        erofs_utils.mkfs(tmp_path / "img2", tmp_path / "missing")


def test_report_header(pytestconfig: pytest.Config) -> None:
    header = "\n".join(pytest_report_header(pytestconfig))
    assert "erofs-utils:" in header and "kernel:" in header and "loop mounts" in header


def test_mount_with_extra_device(erofs_utils: ErofsUtils, kernel_mount: MountImage, tmp_path: Path) -> None:
    src = tmp_path / "src"
    src.mkdir()
    (src / "chunked").write_bytes(os.urandom(100_000))
    image, blob = tmp_path / "img", tmp_path / "blob"
    erofs_utils.mkfs(image, src, "--chunksize=4096", f"--blobdev={blob}")
    with kernel_mount(image, [blob]) as mnt:
        assert (mnt / "chunked").read_bytes() == (src / "chunked").read_bytes()
    _assert_released(image, mnt)
    _assert_released(blob, None)


def test_mount_cleans_up_when_body_raises(
    erofs_utils: ErofsUtils, kernel_mount: MountImage, tmp_path: Path
) -> None:
    src = tmp_path / "src"
    src.mkdir()
    (src / "f").write_bytes(b"x")
    image = tmp_path / "img"
    erofs_utils.mkfs(image, src)
    seen: list[Path] = []
    with pytest.raises(RuntimeError, match="body failed"), kernel_mount(image) as mnt:
        seen.append(mnt)
        assert is_mounted(mnt)
        assert len(loop_devices_of(image)) == 1
        raise RuntimeError("body failed")
    _assert_released(image, seen[0])


def test_mount_cleans_up_when_mount_fails(kernel_mount: MountImage, tmp_path: Path) -> None:
    image = tmp_path / "garbage"
    image.write_bytes(bytes(8192))
    with pytest.raises(MountError, match="mount -t erofs"), kernel_mount(image):
        pytest.fail("mounted a zero-filled image")
    _assert_released(image, None)


def test_mount_cleans_up_when_attach_fails(
    erofs_utils: ErofsUtils, kernel_mount: MountImage, tmp_path: Path
) -> None:
    src = tmp_path / "src"
    src.mkdir()
    image = tmp_path / "img"
    erofs_utils.mkfs(image, src)
    with pytest.raises(MountError, match="losetup"), kernel_mount(image, [tmp_path / "missing"]):
        pytest.fail("attached a missing device")
    _assert_released(image, None)


def test_scenario_symlink_modes(scenario_snap: TreeSnapshot) -> None:
    # Linux has no lchmod: symlinks always read back as 0o777 and the builder leaves them be.
    assert {scenario_snap.entries[p].mode for p in scenario_snap.paths("symlink")} == {0o777}
