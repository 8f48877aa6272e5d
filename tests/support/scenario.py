"""The scenario tree: every kind of inode, name, owner, mode, time and xattr round-trip tests need.

The builder needs root (devices, owners, trusted.* xattrs) and a filesystem that stores
user/trusted/security xattrs, POSIX ACLs, nanosecond mtimes from 1901 to past 2106 and
32-bit owners. ext4 (with 256-byte inodes), xfs and tmpfs do; the test machines keep /tmp on
ext4, which does. Whatever the filesystem cannot represent makes the builder raise
`ScenarioError`: nothing is skipped silently.
"""

from __future__ import annotations

import contextlib
import os
import random
import socket
import stat
import struct
from collections.abc import Collection, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path

from tests.support.snapshot import snapshot

BIG_DIR = "big"
BIG_DIR_ENTRIES = 3000
DEEP_DIR = "deep"
DEEP_LEVELS = 60
HARDLINK_GROUP = ("hardlinks/a/one", "hardlinks/b/two", "hardlinks/c/d/three")
MANY_XATTRS_FILE = "xattrs/many"
MANY_XATTRS_COUNT = 40
LARGE_XATTR_SIZE = 3000
LONG_SYMLINK = "links/long_4095"
SHARED_XATTR = ("user.shared", b"the same name and value on several inodes")
NON_UTF8_NAME = b"\xff\xfe name"
LONG_NAME = "n" * 255

# Times that force 64-bit / signed / nanosecond handling: (seconds, nanoseconds).
SPECIAL_TIMES: Mapping[str, tuple[int, int]] = {
    "epoch_zero": (0, 0),
    "minus_1ns": (-1, 999_999_999),
    "before_1970": (-123_456_789, 987_654_321),
    "s32_min": (-(2**31), 0),  # earliest ext4 time; ext4 drops any ns here
    "s32_max": (2**31 - 1, 999_999_999),
    "past_2038": (2**31, 0),
    "u32_max": (2**32 - 1, 500_000_000),
    "past_2106": (2**32 + 12345, 123_456_789),
    "year_2242": (2**33, 7),
}

_BASE_TIME = 1_600_000_000  # 2020-09-13: default mtimes count up from here
_UNDEFINED_ACL_ID = 0xFFFFFFFF
ACL_USER_OBJ, ACL_USER, ACL_GROUP_OBJ, ACL_GROUP, ACL_MASK, ACL_OTHER = 0x1, 0x2, 0x4, 0x8, 0x10, 0x20


class ScenarioError(RuntimeError):
    """The filesystem under the scenario root cannot hold the scenario faithfully."""


def scenario_file_sizes(blksz: int = 4096) -> list[int]:
    """Regular file sizes around block edges of every block size an image may use."""
    sizes = {0, 1}
    for bs in sorted({512, 1024, 2048, blksz}):
        for k in (1, 2, 3):
            sizes.update((k * bs - 1, k * bs, k * bs + 1))
        # Edges where a tail stops fitting inline after a 32/64-byte inode.
        sizes.update((bs - 65, bs - 64, bs - 33, bs - 32))
    return sorted(sizes)


def scenario_symlink_lengths(blksz: int = 4096) -> list[int]:
    """Symlink target lengths around the inline limits after compact/extended inodes."""
    lengths: set[int] = set()
    for bs in sorted({512, 1024, 2048, blksz}):
        lengths.update(n for n in (bs - 65, bs - 64, bs - 63, bs - 33, bs - 32, bs - 31) if n < 4096)
    return sorted(lengths)


def acl_blob(entries: Collection[tuple[int, int, int | None]]) -> bytes:
    """Binary POSIX ACL xattr value from (tag, perm, id) triples; id None = undefined."""
    ordered = sorted(
        (tag, _UNDEFINED_ACL_ID if ident is None else ident, perm) for tag, perm, ident in entries
    )
    body = b"".join(struct.pack("<HHI", tag, perm, ident) for tag, ident, perm in ordered)
    return struct.pack("<I", 2) + body


def acl_mode(entries: Collection[tuple[int, int, int | None]]) -> int:
    """Permission bits implied by an access ACL (group bits come from MASK when present)."""
    perms = {tag: perm for tag, perm, _ in entries}
    group = perms.get(ACL_MASK, perms[ACL_GROUP_OBJ])
    return perms[ACL_USER_OBJ] << 6 | group << 3 | perms[ACL_OTHER]


# --------------------------------------------------------------------------- builder


@dataclass(eq=False)
class _Intent:
    """What one inode should look like once the build is finished."""

    kind: str
    mode: int | None  # None for symlinks: Linux has no lchmod
    mtime_ns: int
    uid: int = 0
    gid: int = 0
    xattrs: dict[str, bytes] = field(default_factory=dict)

    def own(self, uid: int, gid: int) -> _Intent:
        self.uid, self.gid = uid, gid
        return self

    def at(self, seconds: int, nanoseconds: int = 0) -> _Intent:
        self.mtime_ns = seconds * 1_000_000_000 + nanoseconds
        return self

    def xattr(self, name: str, value: bytes) -> _Intent:
        self.xattrs[name] = value
        return self


def _prng_bytes(seed: str, size: int) -> bytes:
    # Seeding with a str hashes it with SHA-512: stable across runs and PYTHONHASHSEED.
    return random.Random(seed).randbytes(size)


class _Builder:
    """Creates objects first; owners, modes, xattrs and times are applied in `finish`."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.intents: dict[str, _Intent] = {}
        self._tick = 0

    def record(self, rel: str, kind: str, mode: int | None) -> _Intent:
        self._tick += 1
        mtime = (_BASE_TIME + self._tick * 3607) * 1_000_000_000 + (self._tick * 7919 + 1) % 1_000_000_000
        intent = _Intent(kind, mode, mtime)
        self.intents[rel] = intent
        return intent

    def p(self, rel: str) -> Path:
        return self.root if rel == "." else self.root / rel

    def dir(self, rel: str, mode: int = 0o755) -> _Intent:
        if rel != ".":
            self.p(rel).mkdir()
        return self.record(rel, "dir", mode)

    def file(self, rel: str, data: bytes, mode: int = 0o644) -> _Intent:
        self.p(rel).write_bytes(data)
        return self.record(rel, "file", mode)

    def symlink(self, rel: str, target: str | bytes) -> _Intent:
        os.symlink(target, os.fsencode(self.p(rel)))
        return self.record(rel, "symlink", None)

    def node(self, rel: str, kind: str, mode: int, rdev: tuple[int, int] = (0, 0)) -> _Intent:
        fmt = {"chr": stat.S_IFCHR, "blk": stat.S_IFBLK, "fifo": stat.S_IFIFO}[kind]
        os.mknod(self.p(rel), fmt | 0o600, os.makedev(*rdev))
        return self.record(rel, kind, mode)

    def sock(self, rel: str, mode: int = 0o755) -> _Intent:
        path = self.p(rel)
        # Bind through /proc/self/fd so a long tmp path cannot hit the 108-byte sun_path limit.
        dir_fd = os.open(path.parent, os.O_PATH | os.O_DIRECTORY)
        try:
            with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
                sock.bind(f"/proc/self/fd/{dir_fd}/{path.name}")
        finally:
            os.close(dir_fd)
        return self.record(rel, "sock", mode)

    def link(self, existing: str, rel: str) -> _Intent:
        os.link(self.p(existing), self.p(rel), follow_symlinks=False)
        intent = self.intents[existing]
        self.intents[rel] = intent
        return intent

    def finish(self) -> None:
        unique = {id(i): (rel, i) for rel, i in self.intents.items()}.values()
        for rel, intent in unique:
            with self._explained(rel, "chown/chmod"):
                self._apply_owner_and_mode(rel, intent)
        # xattrs after chown/chmod: chown drops security.capability, and ACLs are set last so
        # a default ACL is not inherited by children created during the build.
        for rel, intent in unique:
            for name, value in intent.xattrs.items():
                with self._explained(rel, f"setxattr {name}"):
                    os.setxattr(self.p(rel), name, value, follow_symlinks=False)
        # Times last, directories bottom-up: creating children bumps a directory's mtime.
        ordered = sorted(unique, key=lambda ri: (ri[1].kind == "dir", -_depth(ri[0])))
        for rel, intent in ordered:
            ns = intent.mtime_ns
            with self._explained(rel, f"utime {ns} ns"):
                os.utime(self.p(rel), ns=(ns, ns), follow_symlinks=False)
        self._verify()

    @contextlib.contextmanager
    def _explained(self, rel: str, what: str) -> Iterator[None]:
        try:
            yield
        except OSError as e:
            raise ScenarioError(f"{self.root}: {rel!r}: {what} failed: {e}") from e

    def _apply_owner_and_mode(self, rel: str, intent: _Intent) -> None:
        os.chown(self.p(rel), intent.uid, intent.gid, follow_symlinks=False)
        if intent.mode is not None:  # chown clears setuid/setgid, so chmod comes after it
            os.chmod(self.p(rel), intent.mode)

    def _verify(self) -> None:
        snap = snapshot(self.root)
        problems: list[str] = []
        for rel, intent in self.intents.items():
            got = snap.entries[rel]
            xattrs = {k: v for k, v in got.xattrs if k != "security.selinux"}
            want = {
                "kind": intent.kind,
                "uid": intent.uid,
                "gid": intent.gid,
                "mtime_ns": intent.mtime_ns,
                "xattrs": intent.xattrs,
            }
            have = {
                "kind": got.kind,
                "uid": got.uid,
                "gid": got.gid,
                "mtime_ns": got.mtime_ns,
                "xattrs": xattrs,
            }
            if intent.mode is not None:
                want["mode"], have["mode"] = intent.mode, got.mode
            problems += [
                f"{rel!r} {k}: wanted {want[k]!r}, filesystem has {have[k]!r}"
                for k in want
                if want[k] != have[k]
            ]
        if problems:
            raise ScenarioError(
                f"{self.root} cannot hold the scenario tree (use ext4, xfs or tmpfs, as root):\n  "
                + "\n  ".join(problems[:20])
            )


def _depth(rel: str) -> int:
    return -1 if rel == "." else rel.count("/")


def build_scenario_tree(root: Path, *, long_names: bool = True, blksz: int = 4096) -> None:
    """Build the round-trip scenario tree at `root` (which must not exist or be empty).

    `long_names=False` leaves out the 255-byte names (erofs-utils 1.5 cannot pack them).
    `blksz` adds file sizes and symlink lengths around that block size's edges.
    """
    if blksz < 512 or blksz & (blksz - 1):
        raise ValueError(f"block size must be a power of two >= 512, not {blksz}")
    if os.geteuid() != 0:
        raise ScenarioError("the scenario tree needs root (devices, owners, trusted.* xattrs)")
    root.mkdir(parents=True, exist_ok=True)
    if any(root.iterdir()):
        raise ScenarioError(f"{root} is not empty")
    b = _Builder(root)
    b.dir(".", 0o755).at(1_700_000_000, 123_456_789).xattr("user.root", b"on the root directory")
    _sizes(b, blksz)
    _compressible(b, blksz)
    b.dir("empty")
    _big_dir(b)
    _deep(b)
    _links(b, blksz)
    _devices_and_specials(b)
    _hardlinks(b)
    _names(b, long_names)
    _owners(b)
    _modes(b)
    _times(b)
    _xattrs(b)
    _acls(b)
    b.finish()


def _sizes(b: _Builder, blksz: int) -> None:
    b.dir("sizes")
    for size in scenario_file_sizes(blksz):
        b.file(f"sizes/s{size:06d}", _prng_bytes(f"size-{size}", size))


def _compressible(b: _Builder, blksz: int) -> None:
    b.dir("compressible")
    text = b"".join(b"line %06d: the quick brown fox jumps over the lazy dog\n" % i for i in range(6000))
    for size in (3 * blksz + 1, 300_001):
        b.file(f"compressible/text_{size}", text[:size])
    b.file("compressible/zeros_65537", bytes(65537))
    # Alternating incompressible and compressible 16 KiB runs.
    runs = [_prng_bytes(f"mixed-{i}", 16384) if i % 2 else bytes([i]) * 16384 for i in range(12)]
    b.file("compressible/mixed_196608", b"".join(runs))
    sparse = b.p("compressible/sparse_1m")
    with sparse.open("wb") as f:  # a real hole in the middle
        f.write(b"head")
        f.seek(1 << 20)
        f.write(b"tail!")
    b.record("compressible/sparse_1m", "file", 0o644)


def _big_dir(b: _Builder) -> None:
    b.dir(BIG_DIR)
    for i in range(BIG_DIR_ENTRIES):
        name = f"{BIG_DIR}/e{i:04d}" + "x" * (i * 7 % 61)  # varied lengths pack dirent blocks unevenly
        if i % 100 == 0:
            b.dir(name)
        elif i % 50 == 25:
            b.symlink(name, f"e{i - 1:04d}")
        elif i % 500 == 7:
            b.node(name, "fifo", 0o644)
        else:
            b.file(name, b"%d\n" % i * (i % 5))


def _deep(b: _Builder) -> None:
    rel = DEEP_DIR
    b.dir(rel)
    for level in range(1, DEEP_LEVELS + 1):
        rel += f"/d{level:02d}"
        b.dir(rel)
    b.file(f"{rel}/leaf", b"at the bottom\n")
    b.symlink(f"{rel}/up", "../" * (DEEP_LEVELS + 1) + "sizes/s000001")


def _links(b: _Builder, blksz: int) -> None:
    b.dir("links")
    b.symlink("links/short", "a")
    b.symlink("links/relative", "../sizes/s000001")
    b.symlink("links/absolute", "/etc/hostname")
    b.symlink("links/dangling", "does/not/exist")
    b.symlink("links/to_dir", "../empty")
    b.symlink("links/non_utf8", b"\xff\xfe target")
    pattern = b"0123456789abcdef/" * 250
    b.symlink(LONG_SYMLINK, pattern[:4095])
    for n in scenario_symlink_lengths(blksz):
        b.symlink(f"links/len_{n:04d}", pattern[:n])


def _devices_and_specials(b: _Builder) -> None:
    b.dir("dev")
    b.node("dev/null", "chr", 0o666, (1, 3))
    b.node("dev/whiteout", "chr", 0o000, (0, 0))  # overlayfs whiteout
    b.node("dev/chr_minor_300", "chr", 0o620, (4, 300))
    b.node("dev/chr_max", "chr", 0o600, (4095, 1_048_575))  # 12-bit major, 20-bit minor
    b.node("dev/blk_sda", "blk", 0o660, (8, 0))
    b.node("dev/blk_major_300", "blk", 0o640, (300, 1))
    b.node("dev/blk_259_70000", "blk", 0o600, (259, 70000))
    b.dir("special")
    b.node("special/fifo", "fifo", 0o644)
    b.node("special/fifo_0600", "fifo", 0o600)
    b.sock("special/sock", 0o755)


def _hardlinks(b: _Builder) -> None:
    for d in ("hardlinks", "hardlinks/a", "hardlinks/b", "hardlinks/c", "hardlinks/c/d"):
        b.dir(d)
    b.file(HARDLINK_GROUP[0], _prng_bytes("hardlink", 5000), 0o640).xattr("user.linked", b"one inode")
    for name in HARDLINK_GROUP[1:]:
        b.link(HARDLINK_GROUP[0], name)
    b.node("hardlinks/fifo_1", "fifo", 0o640)
    b.link("hardlinks/fifo_1", "hardlinks/a/fifo_2")
    b.node("hardlinks/chr_1", "chr", 0o600, (10, 200))
    b.link("hardlinks/chr_1", "hardlinks/b/chr_2")
    b.file("hardlinks/empty_1", b"")
    b.link("hardlinks/empty_1", "hardlinks/c/empty_2")
    b.symlink("hardlinks/sym_1", "target of a hard-linked symlink")
    b.link("hardlinks/sym_1", "hardlinks/b/sym_2")


def _names(b: _Builder, long_names: bool) -> None:
    b.dir("names")
    for name in ("with space", " leading space", "new\nline", "tab\there", "-dash", "...", ".hidden", "x"):
        b.file(f"names/{name}", name.encode())
    for name in ("ünïcødé ☃", "quote'\"back\\slash", "glob*?[]", "ctrl\x01\x7f"):
        b.file(f"names/{name}", b"odd name\n")
    b.file(f"names/{os.fsdecode(NON_UTF8_NAME)}", b"not utf-8\n")
    bad_dir = "names/" + os.fsdecode(b"dir \xc3\x28")
    b.dir(bad_dir)
    b.file(f"{bad_dir}/inside", b"in a non-utf-8 dir\n")
    if long_names:
        b.file(f"names/{LONG_NAME}", b"255-byte name\n")
        b.dir(f"names/{'d' * 255}")
        b.file(f"names/{'d' * 255}/{'f' * 254}", b"")
        b.symlink(f"names/{'l' * 255}", "x")


def _owners(b: _Builder) -> None:
    b.dir("owners").own(70000, 70001)
    for uid, gid in (
        (70000, 70001),
        (1000, 1000),
        (65534, 65534),
        (65535, 65535),  # the 16-bit edge of compact inodes
        (65536, 65536),
        (0, 70001),
        (70000, 0),
        (4_294_967_294, 4_294_967_294),  # (u32)-1 is "no change" to chown
    ):
        b.file(f"owners/u{uid}_g{gid}", b"owned\n").own(uid, gid)
    b.symlink("owners/symlink_70002", "u70000_g70001").own(70002, 70003)
    b.node("owners/fifo_1001", "fifo", 0o660).own(1001, 1002)
    b.node("owners/chr_1003", "chr", 0o660, (1, 5)).own(1003, 1004)


def _modes(b: _Builder) -> None:
    b.dir("modes")
    for mode in (0o000, 0o7777, 0o4755, 0o2755, 0o6711, 0o1644, 0o4000, 0o0777, 0o0400):
        b.file(f"modes/file_{mode:04o}", b"mode\n", mode).own(1000, 1000)
    for mode in (0o1777, 0o2775, 0o0700, 0o0000):
        b.dir(f"modes/dir_{mode:04o}", mode)
    b.file("modes/dir_0000/inside", b"inside a 000 directory\n", 0o644)
    b.node("modes/fifo_7777", "fifo", 0o7777)


def _times(b: _Builder) -> None:
    b.dir("times")
    for name, (sec, nsec) in SPECIAL_TIMES.items():
        b.file(f"times/{name}", name.encode()).at(sec, nsec)
    b.dir("times/dir_before_1970").at(-86_400, 1)
    b.dir("times/dir_past_2106").at(2**32 + 1, 999_999_999)
    b.symlink("times/symlink_past_2106", "epoch_zero").at(2**32 + 2, 2)
    b.node("times/fifo_before_1970", "fifo", 0o644).at(-1_000_000, 500)


def _xattrs(b: _Builder) -> None:
    name, value = SHARED_XATTR
    b.dir("xattrs").xattr(name, value)
    b.file("xattrs/all_ns", b"x\n").xattr("user.test", b"user value").xattr(
        "trusted.test", b"trusted value"
    ).xattr("security.test", b"security value")
    many = b.file(MANY_XATTRS_FILE, b"many\n")
    namespaces = ("user", "trusted", "security")
    for i in range(MANY_XATTRS_COUNT):
        many.xattr(f"{namespaces[i % 3]}.attr{i:02d}", _prng_bytes(f"many-{i}", i * 3 % 50))
    b.file("xattrs/empty_value", b"").xattr("user.empty", b"").xattr("trusted.empty", b"")
    b.file("xattrs/binary_value", b"bin\n").xattr("user.binary", bytes(range(256)))
    b.file("xattrs/large_value", b"large\n").xattr("user.large", _prng_bytes("large", LARGE_XATTR_SIZE))
    b.file("xattrs/long_name", b"").xattr("user." + "k" * 250, b"255-byte name")
    for i in range(1, 5):
        b.file(f"xattrs/shared_{i}", b"%d\n" % i).xattr(name, value).xattr("trusted.shared", b"\x00\x01")
    b.dir("xattrs/dir").xattr(name, value).xattr("user.on_dir", b"dir value")
    b.dir("xattrs/overlay").xattr("trusted.overlay.opaque", b"y").xattr(
        "trusted.overlay.redirect", b"/elsewhere"
    )
    # user.* is not allowed on symlinks and special files; trusted/security are.
    b.symlink("xattrs/symlink", "all_ns").xattr("trusted.on_symlink", b"s")
    b.node("xattrs/fifo", "fifo", 0o644).xattr("trusted.on_fifo", b"f")
    b.node("xattrs/chr", "chr", 0o600, (1, 7)).xattr("security.on_chr", b"c")
    # A real VFS_CAP_REVISION_2 blob: effective, CAP_NET_BIND_SERVICE (10) permitted.
    cap = struct.pack("<IIIII", 0x02000001, 1 << 10, 0, 0, 0)
    b.file("xattrs/capability", b"#!/bin/true\n", 0o755).xattr("security.capability", cap)


def _acls(b: _Builder) -> None:
    b.dir("acl")
    access = [
        (ACL_USER_OBJ, 6, None),
        (ACL_USER, 4, 70000),
        (ACL_USER, 6, 1000),
        (ACL_GROUP_OBJ, 4, None),
        (ACL_GROUP, 4, 70001),
        (ACL_MASK, 6, None),
        (ACL_OTHER, 0, None),
    ]
    # Setting an access ACL rewrites the group bits to the mask: give the mode that matches.
    b.file("acl/file_access", b"acl\n", acl_mode(access)).xattr("system.posix_acl_access", acl_blob(access))
    dir_access = [(ACL_USER_OBJ, 7, None), (ACL_GROUP_OBJ, 5, None), (ACL_GROUP, 7, 1000)]
    dir_access += [(ACL_MASK, 7, None), (ACL_OTHER, 5, None)]
    default = [(ACL_USER_OBJ, 7, None), (ACL_USER, 7, 1000), (ACL_GROUP_OBJ, 5, None)]
    default += [(ACL_MASK, 7, None), (ACL_OTHER, 5, None)]
    d = b.dir("acl/dir_default", acl_mode(dir_access))
    d.xattr("system.posix_acl_access", acl_blob(dir_access))
    d.xattr("system.posix_acl_default", acl_blob(default))
    b.file("acl/dir_default/child", b"created before the default ACL\n")
    b.dir("acl/dir_default/subdir")
