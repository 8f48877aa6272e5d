"""A generated tree through a composefs image and its object store, mounted by the kernel.

The tree has a few hundred entries: files of every size class (empty, inline up to 64 bytes,
external, several MiB), hard links, symlinks, xattrs in three namespaces, devices, fifos, and
varied modes, owners and nanosecond mtimes. Packed with a digest store and mounted with
`erofsgen mount --objects` (overlayfs over EROFS), it must read back as the source: contents,
modes, owners, mtimes and xattrs (overlayfs's own aside). Hard links are not kept (mkcomposefs
does not detect them: each name is its own inode), so link counts are not compared.
"""

from __future__ import annotations

import os
import random
import re
from pathlib import Path

import pytest

import erofsgen
from erofsgen.cli import main as cli_main
from erofsgen.composefs.scan import INLINE_MAX

from .support.compare import assert_same_tree
from .support.kernel import MountImage
from .support.snapshot import Entry, TreeSnapshot, snapshot

MIB = 1 << 20
NOT_COMPARED = ("nlink", "hardlinks")  # mkcomposefs makes every name its own inode


def _content(rng: random.Random, shared: list[bytes]) -> bytes:
    pick = rng.random()
    if pick < 0.1:
        return b""
    if pick < 0.3:
        return rng.randbytes(rng.randint(1, INLINE_MAX + 1))  # inline, and just over
    if pick < 0.4 and shared:
        return rng.choice(shared)  # the same content under another name
    if pick < 0.97:
        return rng.randbytes(rng.choice((100, 4095, 4096, 4097, rng.randint(65, 200_000))))
    return rng.randbytes(rng.randint(2 * MIB, 6 * MIB))


def _meta(rng: random.Random, path: Path) -> None:
    """Random owner, mode and mtime (owner first: chown clears the setuid and setgid bits)."""
    os.chown(
        path, rng.choice((0, 1, 1000, 65534, 70000)), rng.choice((0, 5, 1000, 100_000)), follow_symlinks=False
    )
    if path.is_symlink():
        pass  # a symlink's mode is always 0777
    elif path.is_dir():
        os.chmod(path, rng.choice((0o755, 0o700, 0o1777, 0o2750)))
    else:
        os.chmod(path, rng.choice((0o644, 0o600, 0o755, 0o4755, 0o2711, 0o444, 0o000)))
    seconds = rng.choice((0, 1, 1_000_000_000, 1_700_000_000, 4_000_000_000))
    ns = seconds * 10**9 + rng.choice((0, 1, 999_999_999, rng.randint(0, 10**9 - 1)))
    os.utime(path, ns=(ns, ns), follow_symlinks=False)


def build_tree(top: Path, seed: int, shared: list[bytes]) -> None:
    """About 300 entries under `top` (a new directory); `shared` contents appear among them."""
    rng = random.Random(seed)
    top.mkdir()
    dirs = [top]
    for i in range(30):
        d = rng.choice(dirs) / f"dir{i}"
        d.mkdir()
        dirs.append(d)
    files: list[Path] = []
    for i in range(220):
        f = rng.choice(dirs) / f"file{i}"
        f.write_bytes(_content(rng, shared))
        files.append(f)
    for i, f in enumerate(rng.sample(files, 60)):
        os.setxattr(f, "user.note", rng.randbytes(rng.randint(0, 40)))
        if i % 3 == 0:
            os.setxattr(f, "trusted.tag", f"t{i % 4}".encode())  # repeated values: shared xattrs
        if i % 5 == 0:
            os.setxattr(f, "security.label", b"label\0")
    for i in range(20):
        link = rng.choice(dirs) / f"hard{i}"
        os.link(rng.choice(files), link)
    for i in range(25):
        target = rng.choice(("file0", "../dir1/x", "/abs/target", "t" * rng.randint(1, 300)))
        os.symlink(target, rng.choice(dirs) / f"sym{i}")
    for i in range(6):
        d = rng.choice(dirs)
        os.mknod(d / f"chr{i}", 0o620 | 0o020000, os.makedev(rng.randint(1, 300), rng.randint(1, 2000)))
        os.mknod(d / f"blk{i}", 0o660 | 0o060000, os.makedev(rng.randint(1, 300), rng.randint(0, 2000)))
        os.mkfifo(d / f"fifo{i}")
    for d in dirs[1:]:
        os.setxattr(d, "user.dir", d.name.encode())
    for path in sorted(top.rglob("*"), key=lambda p: -len(p.parts)):  # children before parents
        _meta(rng, path)
    _meta(rng, top)


def _without_overlay_xattrs(snap: TreeSnapshot) -> TreeSnapshot:
    def keep(entry: Entry) -> Entry:
        xattrs = tuple(
            (k, v) for k, v in entry.xattrs if not k.startswith(("trusted.overlay.", "user.overlay."))
        )
        return Entry(**{**entry.__dict__, "xattrs": xattrs})

    return TreeSnapshot({p: keep(e) for p, e in snap.entries.items()}, snap.hardlinks)


def _require_data_only_layers() -> None:
    """overlayfs data-only layers (`datadir+`) arrived in Linux 6.7; skip before (fail if required)."""
    found = re.match(r"(\d+)\.(\d+)", os.uname().release)
    if found is None or (int(found[1]), int(found[2])) >= (6, 7):
        return
    reason = f"overlayfs data-only layers need Linux 6.7+, not {os.uname().release}"
    if os.environ.get("EROFSGEN_REQUIRE_KERNEL") == "1":
        pytest.fail(reason, pytrace=False)
    pytest.skip(reason)


def _assert_mounts_as(image: Path, store: Path, source: Path, mnt: Path) -> None:
    mnt.mkdir()
    assert cli_main(["mount", str(image), str(mnt), "--objects", str(store)]) == 0
    try:
        got = _without_overlay_xattrs(snapshot(mnt))
    finally:
        assert cli_main(["umount", str(mnt)]) == 0
    assert_same_tree(snapshot(source), got, ignore_fields=NOT_COMPARED)


def _store_files(store: Path) -> list[str]:
    return sorted(str(p.relative_to(store)) for p in store.rglob("*") if p.is_file())


def _external_contents(top: Path) -> set[bytes]:
    found = set()
    for path in top.rglob("*"):
        if not path.is_symlink() and path.is_file() and path.stat().st_size > INLINE_MAX:
            found.add(path.read_bytes())
    return found


def test_generated_trees_mount_as_their_source_and_share_objects(
    tmp_path: Path, kernel_mount: MountImage, capsys: pytest.CaptureFixture[str]
) -> None:
    del kernel_mount  # for its skip (or failure under EROFSGEN_REQUIRE_KERNEL=1)
    _require_data_only_layers()
    rng = random.Random(7)
    shared = [rng.randbytes(n) for n in (65, 5000, 300_000, 3 * MIB)]
    first, second = tmp_path / "first", tmp_path / "second"
    build_tree(first, 1, shared)
    build_tree(second, 2, shared)
    for top in (first, second):  # whatever the draw, both trees hold every shared content
        for i, data in enumerate(shared):
            (top / f"shared{i}").write_bytes(data)
    store = tmp_path / "objects"

    image_a = tmp_path / "first.cfs"  # through the Python API ...
    digest_a = erofsgen.mkcomposefs(first, image_a, erofsgen.MkcomposefsOptions(digest_store=str(store)))
    image_b = tmp_path / "second.cfs"  # ... and through pack
    assert cli_main(["pack", "--composefs", "--digest-store", str(store), str(second), str(image_b)]) == 0
    assert f"fs-verity digest {erofsgen.mkcomposefs(second, None).hex()}" in capsys.readouterr().out
    assert erofsgen.mkcomposefs(first, None) == digest_a

    contents = _external_contents(first) | _external_contents(second)
    assert len(contents) < len(_external_contents(first)) + len(_external_contents(second))
    assert len(_store_files(store)) == len(contents)  # each object stored once, nothing else
    assert cli_main(["composefs-info", "objects", str(image_a), str(image_b)]) == 0
    assert capsys.readouterr().out.splitlines() == _store_files(store)

    _assert_mounts_as(image_a, store, first, tmp_path / "mnt_a")
    _assert_mounts_as(image_b, store, second, tmp_path / "mnt_b")
