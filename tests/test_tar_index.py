"""Tar index mode (`pack --tar=i`, mkfs.erofs --tar=i): an image of metadata whose chunk
indexes point into the archive, its extra device 1. Judged by the kernel, our mount, our
reader and extract against GNU tar's extraction; its size; what it refuses.
"""

from __future__ import annotations

import gzip
import io
import os
import shutil
import subprocess
import sys
import tarfile
from pathlib import Path

import pytest
import zstandard

from erofsgen import open_image
from erofsgen.errors import InvalidInputError
from erofsgen.format.constants import ChunkFormat, DataLayout, FileType
from erofsgen.sources.tar_tree import tree_from_tar
from erofsgen.writer import write_image
from erofsgen.writer.options import WriteOptions
from erofsgen.writer.tarindex import chunk_map
from tests.support.compare import assert_same_tree
from tests.support.erofs_utils import ErofsUtils
from tests.support.kernel import MountImage, can_mount_erofs
from tests.support.snapshot import TreeSnapshot, image_snapshot, snapshot

GNU_TAR = shutil.which("tar")
TAR_FLAGS = ("--format=posix", "--sparse", "--xattrs", "--xattrs-include=*", "--acls", "--numeric-owner")
ROOT = Path(__file__).resolve().parent.parent


def erofsgen(*args: str, stdin: bytes | None = None) -> subprocess.CompletedProcess[bytes]:
    """`erofsgen ARGS` in a child process."""
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    return subprocess.run(
        [sys.executable, "-m", "erofsgen", *args], input=stdin, capture_output=True, env=env, check=False
    )


def without_sockets(snap: TreeSnapshot) -> TreeSnapshot:
    entries = {path: entry for path, entry in snap.entries.items() if entry.kind != "sock"}
    return TreeSnapshot(entries, snap.hardlinks)


@pytest.fixture(scope="module")
def indexed(tmp_path_factory: pytest.TempPathFactory, scenario_tree: Path) -> tuple[Path, Path, Path]:
    """(archive, its index image, the archive extracted by GNU tar) for the scenario tree. Read-only."""
    if GNU_TAR is None:
        pytest.skip("GNU tar is not installed")
    work = tmp_path_factory.mktemp("tar_index")
    archive = work / "scenario.tar"
    subprocess.run([GNU_TAR, *TAR_FLAGS, "-cf", str(archive), "-C", str(scenario_tree), "."], check=True)
    extracted = work / "extracted"
    extracted.mkdir()
    subprocess.run([GNU_TAR, *TAR_FLAGS[2:], "-xpf", str(archive), "-C", str(extracted)], check=True)
    image = work / "index.erofs"
    done = erofsgen("pack", "--quiet", "--tar=i", str(archive), str(image))
    assert done.returncode == 0, done.stderr
    return archive, image, extracted


def test_index_image_mounts_as_extracted(
    kernel_mount: MountImage, scenario_tree: Path, indexed: tuple[Path, Path, Path]
) -> None:
    archive, image, extracted = indexed
    with kernel_mount(image, [archive]) as mnt:
        mounted = snapshot(mnt)
    assert_same_tree(snapshot(extracted), mounted)
    source = without_sockets(snapshot(scenario_tree))
    # GNU tar stores hard-linked FIFOs and devices as separate members.
    assert_same_tree(source, mounted, ignore_fields=("nlink", "hardlinks"))
    assert b"GNU.sparse" in archive.read_bytes()  # the sparse file is indexed as a sparse member


def test_index_image_layout(indexed: tuple[Path, Path, Path]) -> None:
    """512-byte blocks, one device (the archive, by size, no tag), every non-empty file chunked
    with 8-byte indexes into device 1 and nothing of its data in the image."""
    archive, image, _ = indexed
    with open_image(image, [archive]) as img:
        sb = img.superblock
        assert sb.blkszbits == 9
        assert len(sb.devices) == 1
        assert sb.devices[0].blocks == archive.stat().st_size // 512
        assert sb.devices[0].tag.strip(b"\0") == b""
        chunked = 0
        for top, _dirs, files in img.walk("/"):
            for name in files:
                inode = img.inode(img.lookup(os.path.join(top, name)))
                if inode.file_type == FileType.REG_FILE and inode.size:
                    assert inode.layout == DataLayout.CHUNK_BASED
                    assert inode.i_u & ChunkFormat.INDEXES
                    chunked += 1
        assert chunked > 20
    assert image.stat().st_size < archive.stat().st_size // 10


def test_our_mount_reader_and_extract_agree(
    kernel_mount: MountImage, indexed: tuple[Path, Path, Path], tmp_path: Path
) -> None:
    archive, image, extracted = indexed
    expected = snapshot(extracted)
    assert_same_tree(expected, image_snapshot(image, [archive]))
    dest = tmp_path / "out"
    done = erofsgen("extract", "--quiet", "--device", str(archive), str(image), str(dest))
    assert done.returncode == 0, done.stderr
    assert_same_tree(expected, snapshot(dest))
    done = erofsgen("check", "--device", str(archive), str(image))
    assert done.returncode == 0, done.stdout + done.stderr
    if not can_mount_erofs():
        return
    mnt = tmp_path / "mnt"
    mnt.mkdir()
    done = erofsgen("mount", "--device", str(archive), str(image), str(mnt))
    assert done.returncode == 0, done.stderr
    try:
        assert_same_tree(expected, snapshot(mnt))
    finally:
        erofsgen("umount", str(mnt))


def test_erofs_utils_read_it_where_they_can(
    erofs_utils: ErofsUtils, indexed: tuple[Path, Path, Path], tmp_path: Path
) -> None:
    archive, image, extracted = indexed
    dest = tmp_path / "fsck"
    done = erofs_utils.fsck(image, f"--device={archive}", f"--extract={dest}")
    if erofs_utils.version < (1, 6):
        # 1.5 reads page-sized blocks only: its refusal must be that, not a complaint about the image.
        assert done.returncode != 0 and "blksize 512 isn't supported" in done.stderr + done.stdout
        return
    assert done.returncode == 0, done.stderr
    assert_same_tree(snapshot(extracted), snapshot(dest), ignore_fields=("xattrs",))


def test_python_api_gives_the_same_image(indexed: tuple[Path, Path, Path], tmp_path: Path) -> None:
    archive, image, _ = indexed
    again = tmp_path / "again.erofs"
    write_image(tree_from_tar(archive, index=True), again, WriteOptions(block_size=512, tar_index=archive))
    assert again.read_bytes() == image.read_bytes()


# --------------------------------------------------------------------------- sparse members


def sparse_archive(path: Path, size: int, runs: list[tuple[int, bytes]]) -> bytes:
    """A PAX archive with one GNU sparse 0.1 member 'f' of `size` bytes holding `runs`; returns
    the member's content."""
    info = tarfile.TarInfo("f")
    info.size = sum(len(data) for _, data in runs)
    info.pax_headers = {
        "GNU.sparse.size": str(size),
        "GNU.sparse.map": ",".join(f"{off},{len(data)}" for off, data in runs),
    }
    with tarfile.open(path, "w", format=tarfile.PAX_FORMAT) as tar:
        tar.addfile(info, io.BytesIO(b"".join(data for _, data in runs)))
    content = bytearray(size)
    for off, data in runs:
        content[off : off + len(data)] = data
    return bytes(content)


def test_aligned_sparse_member_reads_back_with_holes(kernel_mount: MountImage, tmp_path: Path) -> None:
    archive = tmp_path / "sparse.tar"
    runs = [(4096, b"a" * 8192), (65536, b"b" * 4096), (299_008, b"t" * 992)]  # the last to the end
    content = sparse_archive(archive, 300_000, runs)
    image = tmp_path / "sparse.erofs"
    done = erofsgen("pack", "--quiet", "--tar=i", str(archive), str(image))
    assert done.returncode == 0, done.stderr
    with open_image(image, [archive]) as img:
        assert img.read_bytes("/f") == content
    with kernel_mount(image, [archive]) as mnt:
        assert (mnt / "f").read_bytes() == content


def test_unaligned_sparse_member_is_refused(tmp_path: Path) -> None:
    archive = tmp_path / "sparse.tar"
    sparse_archive(archive, 10_000, [(100, b"xyz")])
    image = tmp_path / "sparse.erofs"
    done = erofsgen("pack", "--tar=i", str(archive), str(image))
    assert done.returncode == 2
    assert b"not aligned to 512-byte blocks" in done.stderr
    assert not image.exists()


def test_chunk_map() -> None:
    dev = 1 << 32
    assert chunk_map(((0, 1024, 1),), 1, 512) == (9, [dev | 2])  # a byte: one block
    assert chunk_map(((0, 512, 5000),), 5000, 512) == (13, [dev | 1])  # one 8 KiB chunk
    # Holes and data of 4 KiB each, the last run ending at the file's end.
    assert chunk_map(((4096, 512, 4096), (12288, 4608, 100)), 12388, 512) == (
        12,
        [-1, dev | 1, -1, dev | 9],
    )
    assert chunk_map(((0, 512, 1000), (2048, 1512, 10)), 2058, 512) is None  # 1000 is no block multiple
    assert chunk_map(((0, 100, 10),), 10, 512) is None  # data not on a block of the archive


# --------------------------------------------------------------------------- what it refuses


def small_archive(path: Path) -> Path:
    """An uncompressed archive with one 3-byte file 'x'."""
    with tarfile.open(path, "w") as tar:
        info = tarfile.TarInfo("x")
        info.size = 3
        tar.addfile(info, io.BytesIO(b"abc"))
    return path


@pytest.mark.parametrize("compress", ["gzip", "zstd"])
def test_compressed_archive_is_refused(tmp_path: Path, compress: str) -> None:
    archive = small_archive(tmp_path / "a.tar")
    packed = tmp_path / "a.tar.z"
    data = archive.read_bytes()
    packed.write_bytes(gzip.compress(data) if compress == "gzip" else zstandard.compress(data))
    image = tmp_path / "a.erofs"
    done = erofsgen("pack", "--tar=i", str(packed), str(image))
    assert done.returncode == 2
    assert f"a {compress}-compressed archive cannot be indexed".encode() in done.stderr
    assert not image.exists()
    with pytest.raises(InvalidInputError, match="cannot be indexed"):
        tree_from_tar(packed, index=True)


def test_stdin_directories_and_other_options_are_refused(tmp_path: Path) -> None:
    archive = small_archive(tmp_path / "a.tar")
    image = tmp_path / "a.erofs"
    cases = [
        (["-", str(image)], b"needs the archive as a file"),
        ([str(tmp_path), str(image)], b"needs a tar archive; this is a directory"),
        (["-b", "4096", str(archive), str(image)], b"needs 512-byte blocks"),
        (["-zlz4", str(archive), str(image)], b"cannot be compressed"),
        (["--chunksize=4096", str(archive), str(image)], b"cannot be combined"),
        ([str(archive), str(archive), str(image)], b"exactly one tar archive"),
        ([str(archive), str(archive)], b"cannot be written over the archive"),
    ]
    for args, message in cases:
        done = erofsgen("pack", "--tar=i", *args, stdin=archive.read_bytes())
        assert done.returncode == 2, args
        assert message in done.stderr, (args, done.stderr)
    assert not image.exists()
    with pytest.raises(InvalidInputError, match="not in the archive"):
        write_image(tree_from_tar(archive), image, WriteOptions(block_size=512, tar_index=archive))


@pytest.mark.parametrize(
    ("keep", "message"),
    [
        (700, b"truncated: member 'x' ends at byte 700"),  # inside the data
        (1024, b"truncated: the archive ends at byte 1024 without its end-of-archive block"),
    ],
)
def test_truncated_archive_is_refused(tmp_path: Path, keep: int, message: bytes) -> None:
    archive = tmp_path / "a.tar"
    with tarfile.open(archive, "w") as tar:
        info = tarfile.TarInfo("x")
        info.size = 300
        tar.addfile(info, io.BytesIO(bytes(range(100)) * 3))
    archive.write_bytes(archive.read_bytes()[:keep])
    image = tmp_path / "a.erofs"
    done = erofsgen("pack", "--tar=i", str(archive), str(image))
    assert done.returncode == 2
    assert message in done.stderr, done.stderr
    assert not image.exists()


def test_tar_f_is_the_default_mode(tmp_path: Path) -> None:
    archive = small_archive(tmp_path / "a.tar")
    for name, mode in (("f.erofs", ["--tar=f"]), ("plain.erofs", [])):
        done = erofsgen("pack", "--quiet", "-T", "0", *mode, str(archive), str(tmp_path / name))
        assert done.returncode == 0, done.stderr
    assert (tmp_path / "f.erofs").read_bytes() == (tmp_path / "plain.erofs").read_bytes()


# --------------------------------------------------------------------------- a real tree


@pytest.mark.skipif(not Path("/usr/share/doc").is_dir() or GNU_TAR is None, reason="no /usr/share/doc or tar")
def test_index_of_a_real_tree_is_under_a_tenth_of_the_archive(tmp_path: Path) -> None:
    archive = tmp_path / "doc.tar"
    assert GNU_TAR is not None
    subprocess.run([GNU_TAR, "--format=posix", "-cf", str(archive), "-C", "/usr/share", "doc"], check=True)
    image = tmp_path / "doc.erofs"
    done = erofsgen("pack", "--quiet", "--tar=i", str(archive), str(image))
    assert done.returncode == 0, done.stderr
    assert image.stat().st_size < archive.stat().st_size / 10
    with open_image(image, [archive]) as img:
        doc = Path("/usr/share/doc")
        some = next(p for p in doc.rglob("copyright") if p.is_file() and not p.is_symlink())
        assert img.read_bytes("/doc/" + str(some.relative_to(doc))) == some.read_bytes()
