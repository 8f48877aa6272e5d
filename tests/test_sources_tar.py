"""Tar archives as image sources: GNU tar and Python tarfile archives of the scenario tree fed on
standard input and mounted by the kernel, compressed input, layers with whiteouts, bad archives.
"""

from __future__ import annotations

import gzip
import hashlib
import io
import json
import os
import random
import shutil
import stat
import subprocess
import sys
import tarfile
from collections.abc import Iterator
from pathlib import Path

import pytest
import zstandard

from erofsgen import open_image
from erofsgen.errors import InvalidInputError
from erofsgen.sources.builder import ImageBuilder
from erofsgen.sources.tar_tree import tree_from_layers, tree_from_tar
from erofsgen.writer import write_image
from tests.support.compare import assert_same_tree
from tests.support.kernel import MountImage
from tests.support.peak_rss import measured, peak_rss_bytes
from tests.support.snapshot import TreeSnapshot, snapshot

EPOCH = "1700000000"
GNU_TAR = shutil.which("tar")
TAR_FLAGS = ("--xattrs", "--xattrs-include=*", "--acls", "--numeric-owner")
needs_gnu_tar = pytest.mark.skipif(GNU_TAR is None, reason="GNU tar is not installed")


def pack(*args: str, stdin: bytes | None = None) -> subprocess.CompletedProcess[bytes]:
    """`erofsgen pack` in a child process (standard input is the archive)."""
    env = dict(os.environ, PYTHONPATH=str(Path(__file__).resolve().parent.parent))
    return subprocess.run(
        [sys.executable, "-m", "erofsgen", "pack", "--quiet", *args],
        input=stdin,
        capture_output=True,
        env=env,
        check=False,
    )


def gnu_tar_of(tree: Path, archive: Path) -> None:
    subprocess.run(
        [str(GNU_TAR), "--format=posix", "--sparse", *TAR_FLAGS, "-cf", str(archive), "-C", str(tree), "."],
        check=True,
        capture_output=True,
    )


def gnu_extract(archive: Path, dest: Path) -> None:
    dest.mkdir()
    subprocess.run(
        [str(GNU_TAR), *TAR_FLAGS, "-xpf", str(archive), "-C", str(dest)],
        check=True,
        capture_output=True,
    )


def without_sockets(snap: TreeSnapshot) -> TreeSnapshot:
    """Tar cannot hold sockets; the scenario tree has one."""
    entries = {path: entry for path, entry in snap.entries.items() if entry.kind != "sock"}
    return TreeSnapshot(entries, snap.hardlinks)


def python_tar_of(tree: Path, archive: Path) -> None:
    """A PAX archive written with tarfile: exact ns times, every xattr as SCHILY.xattr, and hard
    links for every kind of inode (tarfile's own `add` links regular files only)."""
    seen: dict[tuple[int, int], str] = {}
    with tarfile.open(archive, "w", format=tarfile.PAX_FORMAT, encoding="utf-8") as tar:
        for path in _walk(tree):
            name = os.fsdecode(os.path.relpath(path, tree))
            info = tar.gettarinfo(str(path), arcname=name)
            if info is None:
                continue  # a socket
            st = path.lstat()
            if not stat.S_ISDIR(st.st_mode) and st.st_nlink > 1:
                first = seen.setdefault((st.st_dev, st.st_ino), name)
                if first != name:
                    info.type, info.linkname, info.size = tarfile.LNKTYPE, first, 0
            sign, ns = ("-", -st.st_mtime_ns) if st.st_mtime_ns < 0 else ("", st.st_mtime_ns)
            pax = {"mtime": f"{sign}{ns // 10**9}.{ns % 10**9:09d}"}
            for xattr in os.listxattr(path, follow_symlinks=False):
                value = os.getxattr(path, xattr, follow_symlinks=False)
                pax["SCHILY.xattr." + xattr] = value.decode("utf-8", "surrogateescape")
            info.pax_headers = pax
            info.uname = info.gname = ""
            if info.isreg():
                with path.open("rb") as data:
                    tar.addfile(info, data)
            else:
                tar.addfile(info)


def _walk(root: Path) -> Iterator[Path]:
    yield root
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames.sort()
        for name in sorted(dirnames + filenames):
            yield Path(dirpath) / name


@pytest.fixture(scope="module")
def gnu_scenario(tmp_path_factory: pytest.TempPathFactory, scenario_tree: Path) -> tuple[Path, Path]:
    """A GNU tar archive of the scenario tree and that archive extracted by GNU tar. Read-only."""
    if GNU_TAR is None:
        pytest.skip("GNU tar is not installed")
    work = tmp_path_factory.mktemp("gnu_scenario")
    archive = work / "scenario.tar"
    gnu_tar_of(scenario_tree, archive)
    extracted = work / "extracted"
    gnu_extract(archive, extracted)
    return archive, extracted


def test_gnu_tar_on_stdin_mounts_as_extracted(
    kernel_mount: MountImage, scenario_tree: Path, gnu_scenario: tuple[Path, Path], tmp_path: Path
) -> None:
    archive, extracted = gnu_scenario
    image = tmp_path / "image.erofs"
    done = pack("-", str(image), stdin=archive.read_bytes())
    assert done.returncode == 0, done.stderr
    with kernel_mount(image) as mnt:
        mounted = snapshot(mnt)
    assert_same_tree(snapshot(extracted), mounted)
    # GNU tar stores hard-linked FIFOs and devices as separate members; all else is the tree's.
    source = without_sockets(snapshot(scenario_tree))
    assert_same_tree(source, mounted, ignore_fields=("nlink", "hardlinks"))
    specials = {"hardlinks/fifo_1", "hardlinks/chr_1"}
    assert mounted.hardlinks == {group for group in source.hardlinks if not group & specials}
    # The sparse file is a sparse member of the archive and reads back with its hole.
    assert b"GNU.sparse" in archive.read_bytes()


@pytest.mark.parametrize("options", [("-zlz4hc",), ("-zlz4", "-C", "65536"), ("--chunksize=8192",)])
def test_archive_with_compression_or_chunks_mounts_as_extracted(
    kernel_mount: MountImage, gnu_scenario: tuple[Path, Path], tmp_path: Path, options: tuple[str, ...]
) -> None:
    """Compression and chunking read the spool as they read any file."""
    archive, extracted = gnu_scenario
    packed = tmp_path / "scenario.tar.xz"
    subprocess.run(["xz", "-T1", "-0", "-c", str(archive)], stdout=packed.open("wb"), check=True)
    image = tmp_path / "image.erofs"
    done = pack(*options, str(packed), str(image))
    assert done.returncode == 0, done.stderr
    with kernel_mount(image) as mnt:
        assert_same_tree(snapshot(extracted), snapshot(mnt))


def test_python_tarfile_on_stdin_mounts_as_the_tree(
    kernel_mount: MountImage, scenario_tree: Path, tmp_path: Path
) -> None:
    archive = tmp_path / "scenario.tar"
    python_tar_of(scenario_tree, archive)
    image = tmp_path / "image.erofs"
    done = pack("-", str(image), stdin=archive.read_bytes())
    assert done.returncode == 0, done.stderr
    with kernel_mount(image) as mnt:
        mounted = snapshot(mnt)
    # The archive holds the scenario tree exactly (GNU tar would not extract it faithfully: it
    # takes ACLs only from SCHILY.acl text), so that tree is what it extracts to.
    assert_same_tree(without_sockets(snapshot(scenario_tree)), mounted)


@pytest.mark.parametrize("compress", ["gzip", "zstd"])
def test_compressed_archive_and_its_extraction_give_the_same_bytes(
    gnu_scenario: tuple[Path, Path], tmp_path: Path, compress: str
) -> None:
    archive, extracted = gnu_scenario
    packed = tmp_path / "scenario.tar.packed"
    if compress == "gzip":
        packed.write_bytes(gzip.compress(archive.read_bytes(), 6))
    else:
        packed.write_bytes(zstandard.ZstdCompressor(level=3).compress(archive.read_bytes()))
    from_tar, from_dir = tmp_path / "tar.img", tmp_path / "dir.img"
    for source, image in ((packed, from_tar), (extracted, from_dir)):
        done = pack("-T", EPOCH, "--mkfs-time", str(source), str(image))
        assert done.returncode == 0, done.stderr
    assert from_tar.read_bytes() == from_dir.read_bytes()


@needs_gnu_tar
@pytest.mark.parametrize(
    "fmt",
    [
        ("--format=gnu",),  # old GNU sparse headers ('S' with extension blocks)
        ("--format=posix", "--sparse-version=0.0"),
        ("--format=posix", "--sparse-version=0.1"),
        ("--format=posix", "--sparse-version=1.0"),  # the map at the start of the data
    ],
)
def test_sparse_members_of_every_gnu_format(tmp_path: Path, fmt: tuple[str, ...]) -> None:
    tree = tmp_path / "tree"
    tree.mkdir()
    holes = tree / "holes"
    with holes.open("wb") as f:  # 30 data runs, more than an old GNU header's 4 slots, and a
        for i in range(30):  # hole at the end (the spool must still be as long as the file)
            f.seek(i * 70_000)
            f.write(b"run %d " % i * 900)
        f.truncate(3_000_000)
    archive = tmp_path / "sparse.tar"
    subprocess.run([str(GNU_TAR), *fmt, "--sparse", "-cf", str(archive), "-C", str(tree), "."], check=True)
    assert archive.stat().st_size < 1_000_000  # stored sparse, holes left out
    image = tmp_path / "sparse.img"
    write_image(tree_from_tar(archive), image)
    with open_image(image) as img:
        assert img.read_bytes("/holes") == holes.read_bytes()


# --------------------------------------------------------------------------- archives built here


def add(tar: tarfile.TarFile, name: str, data: bytes | None = None, **fields: object) -> None:
    """One member: a file with `data`, or whatever `fields` (type=, linkname=, ...) make it."""
    info = tarfile.TarInfo(name)
    info.mtime = 1_600_000_000
    info.mode = 0o755 if fields.get("type") == tarfile.DIRTYPE else 0o644
    for key, value in fields.items():
        setattr(info, key, value)
    if data is None:
        tar.addfile(info)
    else:
        info.size = len(data)
        tar.addfile(info, io.BytesIO(data))


def archive(tmp_path: Path, name: str, *members: tuple[str, bytes | None, dict[str, object]]) -> Path:
    path = tmp_path / name
    with tarfile.open(path, "w", format=tarfile.PAX_FORMAT) as tar:
        for member, data, fields in members:
            add(tar, member, data, **fields)
    return path


DIR: dict[str, object] = {"type": tarfile.DIRTYPE}


Spec = tuple[str, bytes | None, dict[str, object]]


def layers(tmp_path: Path, *, cross_link: bool = True) -> list[Path]:
    link: list[Spec] = [("etc/link", None, {"type": tarfile.LNKTYPE, "linkname": "etc/keep"})]
    lower = archive(
        tmp_path,
        "l1.tar",
        ("etc", None, DIR),
        ("etc/keep", b"kept\n", {}),
        ("etc/gone", b"deleted by layer 2\n", {}),
        ("opaque", None, DIR),
        ("opaque/old", b"hidden by the opaque marker\n", {}),
        ("opaque/sub/deep", b"hidden too\n", {}),
        ("dir_gone/inside", b"a whole directory deleted\n", {}),
        ("replaced", b"version 1\n", {}),
    )
    middle = archive(
        tmp_path,
        "l2.tar",
        ("etc/.wh.gone", b"", {}),
        ("opaque/new", b"from layer 2\n", {}),  # before the marker: still kept
        ("opaque/.wh..wh..opq", b"", {}),
        ("opaque/sub/fresh", b"layer 2's own sub\n", {}),
        (".wh.dir_gone", b"", {}),
        ("replaced", b"version 2\n", {}),
    )
    upper = archive(
        tmp_path,
        "l3.tar",
        ("replaced", b"version 3\n", {}),
        ("etc/added", b"layer 3\n", {}),
        *(link if cross_link else []),
    )  # the link's target is in a lower layer
    return [lower, middle, upper]


def image_files(image: Path) -> dict[str, bytes | None]:
    """Path -> content (None for directories) of every entry, read with erofsgen's reader."""
    found: dict[str, bytes | None] = {}
    with open_image(image) as img:
        for path, _dirs, files in img.walk("/"):
            for name in files:
                full = f"{path.rstrip('/')}/{name}"
                st = img.stat(full)
                found[full] = img.read_bytes(full) if stat.S_ISREG(st.mode) else None
    return found


def test_three_layers_with_deletions_and_an_opaque_directory(tmp_path: Path) -> None:
    image = tmp_path / "merged.img"
    done = pack(*map(str, layers(tmp_path)), str(image))
    assert done.returncode == 0, done.stderr
    assert image_files(image) == {
        "/etc/keep": b"kept\n",
        "/etc/added": b"layer 3\n",
        "/etc/link": b"kept\n",
        "/opaque/new": b"from layer 2\n",
        "/opaque/sub/fresh": b"layer 2's own sub\n",
        "/replaced": b"version 3\n",
    }
    with open_image(image) as img:
        assert img.stat("/etc/link").ino == img.stat("/etc/keep").ino
        assert img.stat("/etc/keep").nlink == 2


def test_layers_mount_as_overlay_would_show_them(kernel_mount: MountImage, tmp_path: Path) -> None:
    image = tmp_path / "merged.img"
    assert pack(*map(str, layers(tmp_path)), str(image)).returncode == 0
    with kernel_mount(image) as mnt:
        names = sorted(str(p.relative_to(mnt)) for p in mnt.rglob("*"))
        assert (mnt / "replaced").read_bytes() == b"version 3\n"
    assert names == [
        "etc",
        "etc/added",
        "etc/keep",
        "etc/link",
        "opaque",
        "opaque/new",
        "opaque/sub",
        "opaque/sub/fresh",
        "replaced",
    ]


def test_aufs_keeps_whiteouts_for_overlayfs(tmp_path: Path) -> None:
    image = tmp_path / "upper.img"
    middle = layers(tmp_path)[1]
    done = pack("--aufs", str(middle), str(image))
    assert done.returncode == 0, done.stderr
    with open_image(image) as img:
        for path in ("/etc/gone", "/dir_gone"):
            st = img.stat(path)
            assert stat.S_ISCHR(st.mode) and st.rdev == 0, path
        assert img.xattrs("/opaque") == {"trusted.overlay.opaque": b"y"}
        assert sorted(img.listdir("/opaque")) == ["new", "sub"]


def test_aufs_layers_under_overlayfs_show_the_merged_tree(kernel_mount: MountImage, tmp_path: Path) -> None:
    """Each layer packed alone (--aufs above the lowest), stacked by overlayfs, equals the flat merge."""
    archives = layers(tmp_path, cross_link=False)
    images = [tmp_path / f"layer{i}.img" for i in range(3)]
    for i, (source, image) in enumerate(zip(archives, images, strict=True)):
        assert pack(*(["--aufs"] if i else []), str(source), str(image)).returncode == 0
    flat = tmp_path / "flat.img"
    assert pack(*map(str, archives), str(flat)).returncode == 0
    overlay = tmp_path / "overlay"
    overlay.mkdir()
    with kernel_mount(images[0]) as low, kernel_mount(images[1]) as mid, kernel_mount(images[2]) as top:
        lower = f"lowerdir={top}:{mid}:{low}"
        subprocess.run(["mount", "-t", "overlay", "overlay", "-o", lower, str(overlay)], check=True)
        try:
            stacked = snapshot(overlay)
        finally:
            subprocess.run(["umount", str(overlay)], check=True)
    with kernel_mount(flat) as mnt:
        merged = snapshot(mnt)
    # Parents a layer only implies are new directories in its own image (mtime 0); the merge keeps
    # the lower layer's. overlayfs counts 1 link on a merged directory. Everything else must match.
    assert_same_tree(merged, stacked, ignore_mtime=True, ignore_fields=("nlink",))


def test_aufs_opaque_marker_before_its_directory(tmp_path: Path) -> None:
    path = archive(
        tmp_path,
        "late_dir.tar",
        ("d/.wh..wh..opq", b"", {}),
        ("d", None, {**DIR, "mode": 0o700}),  # the directory's own member after its marker
    )
    node = tree_from_tar(path, overlay=True).children[b"d"]
    assert node.meta.mode == 0o700
    assert node.meta.xattrs == {b"trusted.overlay.opaque": b"y"}


def test_one_archive_keeps_whiteout_names_as_entries(tmp_path: Path) -> None:
    """Without --aufs a single archive is the tree it extracts to, as mkfs.erofs --tar keeps it."""
    image = tmp_path / "one.img"
    assert pack(str(layers(tmp_path)[1]), str(image)).returncode == 0
    assert "/etc/.wh.gone" in image_files(image)


def test_duplicates_last_wins_and_directories_merge(tmp_path: Path) -> None:
    path = archive(
        tmp_path,
        "dups.tar",
        ("d", None, {**DIR, "mode": 0o700}),
        ("d/a", b"first\n", {}),
        ("x", None, DIR),
        ("x/child", b"gone with x\n", {}),
        ("d", None, {**DIR, "mode": 0o750, "uid": 7}),
        ("d/a", b"second\n", {"mode": 0o600}),
        ("x", b"x is a file now\n", {}),
        ("/abs/./path//f", b"absolute\n", {}),
    )
    root = tree_from_tar(path)
    image = tmp_path / "dups.img"
    write_image(root, image)
    with open_image(image) as img:
        assert img.read_bytes("/d/a") == b"second\n"
        assert img.stat("/d/a").mode & 0o7777 == 0o600
        d = img.stat("/d")
        assert (d.mode & 0o7777, d.uid) == (0o750, 7)
        assert img.read_bytes("/x") == b"x is a file now\n"
        assert img.read_bytes("/abs/path/f") == b"absolute\n"


def test_python_api_takes_a_file_object_and_a_path(tmp_path: Path) -> None:
    path = archive(tmp_path, "api.tar", ("etc/hosts", b"127.0.0.1 localhost\n", {}))
    packed = tmp_path / "api.tar.xz"
    subprocess.run(["xz", "-k", str(path)], check=True)
    (tmp_path / "api.tar.xz").replace(packed)
    image = tmp_path / "api.img"
    with ImageBuilder(str(image)) as b, packed.open("rb") as f:
        b.add_tree(f, "from_fileobj")
        b.add_tree(str(path), "from_path")
    with open_image(image) as img:
        for top in ("from_fileobj", "from_path"):
            assert img.read_bytes(f"/{top}/etc/hosts") == b"127.0.0.1 localhost\n"
    merged = tree_from_layers([path, io.BytesIO(path.read_bytes())])
    assert list(merged.children) == [b"etc"]


def test_xattrs_from_libarchive_and_acl_text(tmp_path: Path) -> None:
    pax = {
        "LIBARCHIVE.xattr.user.b%3Dx": "AP8B",  # base64 of 00 ff 01; the name is percent-encoded
        "SCHILY.xattr.user.plain": "text",
        "SCHILY.acl.access": "user::rw-\nuser:1000:r--\ngroup::r--\nmask::r--\nother::---\n",
        "SCHILY.acl.default": "user::rwx,group::r-x,other::r-x",  # mode-only: no xattr
        "mtime": "-1.5",
    }
    path = archive(tmp_path, "meta.tar", ("f", b"", {"pax_headers": pax}))
    node = tree_from_tar(path).children[b"f"]
    access = bytes.fromhex("0200000001000600ffffffff02000400e803000004000400ffffffff")
    access += bytes.fromhex("10000400ffffffff20000000ffffffff")
    assert node.meta.xattrs == {
        b"user.b=x": b"\x00\xff\x01",
        b"user.plain": b"text",
        b"system.posix_acl_access": access,
    }
    assert node.meta.mtime_ns == -1_500_000_000


# --------------------------------------------------------------------------- bad archives


def good_archive(tmp_path: Path) -> bytes:
    path = archive(
        tmp_path,
        "good.tar",
        ("a", b"x" * 3000, {}),
        ("b", b"y" * 3000, {}),
    )
    return path.read_bytes()


@pytest.mark.parametrize(
    ("cut", "message"),
    [
        (512 + 1000, "member 'a'"),  # inside a's data
        (512 + 3072, "without its end-of-archive block"),  # at b's header
        (512 + 3072 + 100, "corrupt header at byte 3584"),  # inside b's header
    ],
)
def test_truncated_archive_is_an_error_and_leaves_no_image(tmp_path: Path, cut: int, message: str) -> None:
    data = good_archive(tmp_path)
    image = tmp_path / "out.img"
    for payload in (data[:cut], gzip.compress(data[:cut])):
        done = pack("-", str(image), stdin=payload)
        assert done.returncode == 2
        assert message in done.stderr.decode(), done.stderr
        assert not image.exists()
        assert not [p for p in tmp_path.iterdir() if p.name.startswith("out.img")]


@pytest.mark.parametrize("compress", [gzip.compress, zstandard.ZstdCompressor().compress])
def test_truncated_compressed_stream_is_an_error(tmp_path: Path, compress: object) -> None:
    data = compress(good_archive(tmp_path))  # type: ignore[operator]
    image = tmp_path / "out.img"
    done = pack("-", str(image), stdin=data[:-6])
    assert done.returncode == 2 and b"truncated" in done.stderr, done.stderr
    assert not image.exists()


def test_bad_checksum_names_the_offset(tmp_path: Path) -> None:
    data = bytearray(good_archive(tmp_path))
    data[3584 + 20] ^= 0x41  # inside b's header (a's header + 3072 bytes of data)
    done = pack("-", str(tmp_path / "out.img"), stdin=bytes(data))
    assert done.returncode == 2
    assert b"corrupt header at byte 3584 (bad checksum)" in done.stderr


def test_dotdot_member_is_refused(tmp_path: Path) -> None:
    path = archive(tmp_path, "evil.tar", ("a/../../etc/passwd", b"x", {}))
    with pytest.raises(InvalidInputError, match=r"member 'a/\.\./\.\./etc/passwd'.*'\.\.'"):
        tree_from_tar(path)


def test_hard_link_to_nothing_is_refused(tmp_path: Path) -> None:
    path = archive(tmp_path, "link.tar", ("a", None, {"type": tarfile.LNKTYPE, "linkname": "missing"}))
    with pytest.raises(
        InvalidInputError, match="member 'a': hard link to 'missing', which is not in the archive"
    ):
        tree_from_tar(path)


def test_sources_that_cannot_be_layers(tmp_path: Path) -> None:
    path = archive(tmp_path, "one.tar", ("f", b"x", {}))
    done = pack("-", "-", str(tmp_path / "out.img"), stdin=path.read_bytes())
    assert done.returncode == 2 and b"standard input (-) can be read only once" in done.stderr
    done = pack(str(path), str(tmp_path), str(tmp_path / "out.img"))
    assert done.returncode == 2 and b"a directory cannot be merged with tar layers" in done.stderr
    done = pack("--aufs", str(tmp_path), str(tmp_path / "out.img"))
    assert done.returncode == 2 and b"--aufs applies to tar sources only" in done.stderr
    assert not (tmp_path / "out.img").exists()


def test_not_an_archive(tmp_path: Path) -> None:
    text = tmp_path / "notes.txt"
    text.write_text("hello\n" * 200)
    done = pack(str(text), str(tmp_path / "out.img"))
    assert done.returncode == 2 and b"not a tar archive" in done.stderr
    done = pack("-", str(tmp_path / "out.img"), stdin=b"")
    assert done.returncode == 2 and b"empty input" in done.stderr


# --------------------------------------------------------------------------- memory


def _stream_archive(sink: io.RawIOBase | object, member_size: int) -> None:
    """A tar of one `member_size`-byte file and a few small ones, written to `sink`."""
    piece = bytes(range(256)) * 4096  # 1 MiB, not all zeros

    class Data(io.RawIOBase):
        def __init__(self) -> None:
            self.left = member_size

        def readable(self) -> bool:
            return True

        def readinto(self, buffer: bytearray | memoryview) -> int:  # type: ignore[override]
            n = min(len(buffer), self.left, len(piece))
            buffer[:n] = piece[:n]
            self.left -= n
            return n

    with tarfile.open(fileobj=sink, mode="w|", format=tarfile.PAX_FORMAT) as tar:  # type: ignore[call-overload]
        info = tarfile.TarInfo("big")
        info.size = member_size
        tar.addfile(info, Data())
        for i in range(100):
            add(tar, f"small/{i}", b"%d\n" % i)


@pytest.mark.parametrize("compressed", [False, True])
def test_a_large_member_on_a_pipe_is_never_held_in_memory(tmp_path: Path, compressed: bool) -> None:
    """Peak RSS of `pack -` stays far below the size of one member it reads from a pipe, also
    when zstd expands a few KiB of input into hundreds of MiB (the data repeats every 256 bytes)."""
    size = 512 << 20
    image = tmp_path / "big.img"
    env = dict(os.environ, PYTHONPATH=str(Path(__file__).resolve().parent.parent))
    report = tmp_path / "peak-rss"
    child = subprocess.Popen(
        measured([sys.executable, "-m", "erofsgen", "pack", "--quiet", "--no-sync", "-", str(image)], report),
        stdin=subprocess.PIPE,
        env=env,
    )
    assert child.stdin is not None
    try:
        if compressed:
            with zstandard.ZstdCompressor().stream_writer(child.stdin, closefd=False) as sink:
                _stream_archive(sink, size)
        else:
            _stream_archive(child.stdin, size)
    finally:
        child.stdin.close()
    assert child.wait() == 0
    assert peak_rss_bytes(report) < 200 << 20
    with open_image(image) as img:
        assert img.stat("/big").size == size
        with img.open("/big") as f:
            f.seek(size - 4)
            assert f.read() == bytes(range(252, 256))


# --------------------------------------------------------------------------- OCI image layouts


def _blob(layout: Path, data: bytes, media_type: str) -> dict[str, object]:
    digest = hashlib.sha256(data).hexdigest()
    (layout / "blobs" / "sha256").mkdir(parents=True, exist_ok=True)
    (layout / "blobs" / "sha256" / digest).write_bytes(data)
    return {"mediaType": media_type, "digest": f"sha256:{digest}", "size": len(data)}


def oci_layout(tmp_path: Path) -> Path:
    """An OCI image layout holding the three layers (gzip, zstd, plain) as the image 'v1'."""
    layout = tmp_path / "layout"
    layout.mkdir()
    (layout / "oci-layout").write_text('{"imageLayoutVersion": "1.0.0"}')
    lower, middle, upper = (p.read_bytes() for p in layers(tmp_path))
    layer_type = "application/vnd.oci.image.layer.v1.tar"
    descs = [
        _blob(layout, gzip.compress(lower), layer_type + "+gzip"),
        _blob(layout, zstandard.ZstdCompressor().compress(middle), layer_type + "+zstd"),
        _blob(layout, upper, layer_type),
    ]
    config = _blob(
        layout, b'{"architecture": "amd64", "os": "linux"}', "application/vnd.oci.image.config.v1+json"
    )
    manifest = {"schemaVersion": 2, "config": config, "layers": descs}
    manifest_type = "application/vnd.oci.image.manifest.v1+json"
    entry = _blob(layout, json.dumps(manifest).encode(), manifest_type)
    entry["annotations"] = {"org.opencontainers.image.ref.name": "v1"}
    (layout / "index.json").write_text(json.dumps({"schemaVersion": 2, "manifests": [entry]}))
    return layout


@pytest.mark.parametrize("suffix", ["", ":v1"])
def test_oci_layout_packs_its_layers_merged(tmp_path: Path, suffix: str) -> None:
    layout = oci_layout(tmp_path)
    image = tmp_path / "oci.img"
    done = pack(f"oci:{layout}{suffix}", str(image))
    assert done.returncode == 0, done.stderr
    flat = tmp_path / "flat.img"
    assert pack(*map(str, layers(tmp_path)), str(flat)).returncode == 0
    assert image_files(image) == image_files(flat)


def test_oci_layout_refuses_unknown_tags_and_damaged_blobs(tmp_path: Path) -> None:
    layout = oci_layout(tmp_path)
    image = tmp_path / "oci.img"
    done = pack(f"oci:{layout}:v2", str(image))
    assert done.returncode == 2 and b"no image tagged 'v2' (tags: v1)" in done.stderr
    blobs = sorted((layout / "blobs" / "sha256").iterdir(), key=lambda p: p.stat().st_size)
    upper = next(p for p in blobs if p.read_bytes().startswith(b"replaced"))  # the plain tar layer
    data = bytearray(upper.read_bytes())
    data[600] ^= 1  # inside the first member's data: still a readable tar
    upper.write_bytes(bytes(data))
    done = pack(f"oci:{layout}", str(image))
    assert done.returncode == 2 and b"does not match its digest" in done.stderr, done.stderr
    assert not image.exists()


# --------------------------------------------------------------------------- damaged archives


def test_damaged_archives_fail_only_with_input_errors(tmp_path: Path) -> None:
    """Random byte flips and cuts of a PAX archive (plain or gzip): a tree or an InvalidInputError."""
    path = archive(
        tmp_path,
        "fuzz.tar",
        ("d", None, DIR),
        ("d/a", bytes(range(256)) * 3, {"pax_headers": {"SCHILY.xattr.user.x": "v", "mtime": "1.5"}}),
        ("d/" + "long" * 40, bytes(range(256)) * 5, {}),
        ("l", None, {"type": tarfile.LNKTYPE, "linkname": "d/a"}),
        ("s", None, {"type": tarfile.SYMTYPE, "linkname": "d"}),
    )
    good = path.read_bytes()
    rng = random.Random(7)
    outcomes = {"tree": 0, "error": 0}
    for _ in range(400):
        data = bytearray(good)
        for _flip in range(rng.randint(1, 4)):
            data[rng.randrange(len(data))] = rng.randrange(256)
        if rng.random() < 0.3:
            del data[rng.randrange(len(data)) :]
        payload = bytes(data) if rng.random() < 0.7 else gzip.compress(bytes(data))
        try:
            tree_from_tar(io.BytesIO(payload))
            outcomes["tree"] += 1
        except InvalidInputError:
            outcomes["error"] += 1
    assert outcomes["tree"] and outcomes["error"]  # both kinds of damage were met
