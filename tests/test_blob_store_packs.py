"""Images packed into blob stores, judged under the kernel through `erofsgen mount`.

Sharing between trees, sparse files, two stores (one read-only, an unprivileged pack), packs
running at once, packs killed at random, gc, the stat cache, and damaged stores.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import random
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from erofsgen import open_image
from erofsgen.blobs import BlobStore
from erofsgen.blobs.mount import mount_at
from erofsgen.cli import main as cli_main
from erofsgen.errors import InvalidInputError
from erofsgen.sources.directory import tree_from_directory
from erofsgen.writer import WriteOptions, chunks, write_image
from erofsgen.writer.emit import Emitter
from tests.support.compare import assert_same_tree
from tests.support.kernel import MountImage
from tests.support.snapshot import snapshot
from tests.support.tmpfs import mounted_tmpfs

CHUNK = 65536
BS = 4096
GiB = 1 << 30


def _make_tree(root: Path, seed: int, files: int = 24) -> None:
    """Files of 5 KiB..400 KiB in two directories, a few small files and a symlink."""
    rng = random.Random(seed)
    for sub in ("a", "b/c"):
        (root / sub).mkdir(parents=True, exist_ok=True)
    for i in range(files):
        sub = "a" if i % 2 else "b/c"
        (root / sub / f"f{i:02d}").write_bytes(rng.randbytes(rng.randrange(5 << 10, 400 << 10)))
    (root / "small").write_bytes(b"small file\n")
    (root / "link").symlink_to("a/f01")


def _change_a_tenth(root: Path, seed: int) -> None:
    """Rewrite two files whole and change two in a 64 KiB stretch in the middle; add one."""
    rng = random.Random(seed)
    files = sorted(p for p in root.rglob("f*") if p.is_file())
    for path in files[:2]:
        path.write_bytes(rng.randbytes(path.stat().st_size))
    for path in files[2:4]:
        data = bytearray(path.read_bytes())
        middle = len(data) // 2
        data[middle : middle + CHUNK] = rng.randbytes(len(data[middle : middle + CHUNK]))
        path.write_bytes(bytes(data))
    (root / "new").write_bytes(rng.randbytes(100 << 10))


def _unique_chunk_bytes(*roots: Path) -> int:
    """Bytes of the distinct non-zero 64 KiB chunks of every file of a block or more."""
    seen: dict[bytes, int] = {}
    for root in roots:
        for path in root.rglob("*"):
            if path.is_symlink() or not path.is_file() or path.stat().st_size < BS:
                continue
            data = path.read_bytes()
            for start in range(0, len(data), CHUNK):
                chunk = data[start : start + CHUNK]
                if chunk.count(0) != len(chunk):
                    seen[hashlib.sha256(chunk).digest()] = len(chunk)
    return sum(seen.values())


def _stored_bytes(store: Path) -> int:
    return sum(p.stat().st_size for p in (store / "blobs" / "sha256").iterdir())


def _pack(src: Path, image: Path, *stores: Path) -> None:
    status = cli_main(["pack", "--quiet", *(f"--blob-store={s}" for s in stores), str(src), str(image)])
    assert status == 0


@contextlib.contextmanager
def _mounted(image: Path, mnt: Path, *stores: Path, verify: bool = False) -> Iterator[Path]:
    """`erofsgen mount`, then `erofsgen umount` (or a lazy umount) whatever happens."""
    mnt.mkdir(exist_ok=True)
    args = ["mount", str(image), str(mnt), *(f"--blob-store={s}" for s in stores)]
    assert cli_main([*args, "--verify"] if verify else args) == 0
    try:
        yield mnt
    finally:
        if mount_at(mnt) is not None and cli_main(["umount", str(mnt)]) != 0:
            subprocess.run(["umount", "-l", str(mnt)], check=False)


def _assert_mounts_equal(image: Path, src: Path, mnt: Path, *stores: Path) -> None:
    with _mounted(image, mnt, *stores, verify=True):
        assert_same_tree(snapshot(src), snapshot(mnt))
    assert mount_at(mnt) is None


def test_two_trees_sharing_nine_tenths_share_a_store(tmp_path: Path, kernel_mount: MountImage) -> None:
    del kernel_mount  # for its skip (or failure under EROFSGEN_REQUIRE_KERNEL=1)
    one, two, store = tmp_path / "one", tmp_path / "two", tmp_path / "store"
    _make_tree(one, 1)
    shutil.copytree(one, two, symlinks=True)
    _change_a_tenth(two, 2)
    _pack(one, tmp_path / "one.img", store)
    first = _stored_bytes(store)
    _pack(two, tmp_path / "two.img", store)
    unique = _unique_chunk_bytes(one, two)
    stored = _stored_bytes(store)
    assert stored <= 1.05 * unique, f"store {stored} B for {unique} B of unique chunks"
    assert stored - first < 0.2 * first  # the second pack added only what changed
    with open_image(tmp_path / "two.img") as img:
        assert len(img.superblock.devices) == 2  # the first pack's blob and its own
    for name, src in (("one", one), ("two", two)):
        _assert_mounts_equal(tmp_path / f"{name}.img", src, tmp_path / "mnt", store)
        out = tmp_path / f"{name}.out"
        assert cli_main(["extract", f"--blob-store={store}", str(tmp_path / f"{name}.img"), str(out)]) == 0
        assert_same_tree(snapshot(src), snapshot(out))
    assert BlobStore.open(store).verify().clean


def test_sparse_file_over_4gib_in_a_store(tmp_path: Path, kernel_mount: MountImage) -> None:
    del kernel_mount
    src, store, image = tmp_path / "src", tmp_path / "store", tmp_path / "img"
    src.mkdir()
    size = (9 * GiB) // 2
    islands = {7: b"one" * 3000, 2 * GiB + 5: b"two" * 30000, size - 100_000: b"three" * 20000}
    with open(src / "sparse", "wb") as f:
        f.truncate(size)
        for offset, data in islands.items():
            f.seek(offset)
            f.write(data)
    _pack(src, image, store)
    total = image.stat().st_size + sum(p.stat().st_size for p in store.rglob("*") if p.is_file())
    assert total < 16 << 20, f"image and store take {total} bytes"
    with _mounted(image, tmp_path / "mnt", store) as mnt, open(mnt / "sparse", "rb") as f:
        assert os.fstat(f.fileno()).st_size == size
        for offset, data in islands.items():
            f.seek(offset)
            assert f.read(len(data)) == data
        f.seek(3 * GiB)
        assert f.read(1 << 20) == bytes(1 << 20)


def _as_nobody(work: Path, job: str) -> tuple[int, str]:
    """Run `job` (a pack's argv, space-free paths) as user nobody in a forked child."""
    read_end, write_end = os.pipe()
    pid = os.fork()
    if pid == 0:  # pragma: no cover (the child)
        try:
            os.close(read_end)
            os.setgroups([])
            os.setgid(65534)
            os.setuid(65534)
            sys.stderr = os.fdopen(write_end, "w")
            status = cli_main(job.split())
            sys.stderr.flush()
            os._exit(status)
        finally:
            os._exit(99)
    os.close(write_end)
    with os.fdopen(read_end, "rb") as pipe:
        err = pipe.read().decode()
    _, status = os.waitpid(pid, 0)
    return os.waitstatus_to_exitcode(status), err


@pytest.mark.skipif(os.geteuid() != 0, reason="needs root to act as another user")
def test_chunks_from_a_read_only_store_and_a_writable_one(shared_dir: Path, kernel_mount: MountImage) -> None:
    del kernel_mount
    one, two = shared_dir / "one", shared_dir / "two"
    _make_tree(one, 3)
    shutil.copytree(one, two, symlinks=True)
    _change_a_tenth(two, 4)
    shared, out = shared_dir / "shared", shared_dir / "out"
    _pack(one, shared_dir / "one.img", shared)
    out.mkdir()
    os.chown(out, 65534, 65534)
    for root, dirs, files in os.walk(shared):  # the shared store: nobody may write it
        for name in dirs:
            os.chmod(os.path.join(root, name), 0o555)
        for name in files:
            os.chmod(os.path.join(root, name), 0o444)
    os.chmod(shared, 0o555)
    before = sorted(str(p.relative_to(shared)) for p in shared.rglob("*"))
    # The read-only store first: refused, as it cannot take the new chunks.
    status, err = _as_nobody(shared_dir, f"pack --quiet --blob-store={shared} {two} {out}/x.img")
    assert status == 2 and "not writable" in err and str(shared) in err
    status, err = _as_nobody(
        shared_dir, f"pack --quiet --blob-store={out}/own --blob-store={shared} {two} {out}/two.img"
    )
    assert status == 0, err
    assert sorted(str(p.relative_to(shared)) for p in shared.rglob("*")) == before
    with open_image(out / "two.img") as img:
        tags = [slot.tag.decode() for slot in img.superblock.devices]
    homes = sorted(
        store.name
        for tag in tags
        for store in (shared, out / "own")
        if (store / "blobs/sha256" / tag).exists()
    )
    assert homes == ["own", "shared"]  # one blob from each store
    _assert_mounts_equal(out / "two.img", two, shared_dir / "mnt", out / "own", shared)


def test_four_packs_at_once_threads_and_processes(tmp_path: Path, kernel_mount: MountImage) -> None:
    del kernel_mount
    store = tmp_path / "store"
    base = tmp_path / "base"
    _make_tree(base, 5, files=12)
    trees = []
    for i in range(8):
        tree = tmp_path / f"t{i}"
        shutil.copytree(base, tree, symlinks=True)
        (tree / "own").write_bytes(random.Random(i).randbytes(200 << 10))
        trees.append(tree)
    errors: list[BaseException] = []

    def pack_in_thread(tree: Path) -> None:
        try:
            write_image(
                tree_from_directory(tree), tree.with_suffix(".img"), WriteOptions(blob_stores=(str(store),))
            )
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=pack_in_thread, args=(tree,)) for tree in trees[:4]]
    pack = [sys.executable, "-m", "erofsgen", "pack", "--quiet", f"--blob-store={store}"]
    procs = [subprocess.Popen([*pack, str(t), str(t.with_suffix(".img"))]) for t in trees[4:]]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert [p.wait() for p in procs] == [0] * 4
    assert not errors, errors
    assert cli_main(["store", "verify", str(store)]) == 0
    for tree in trees:
        _assert_mounts_equal(tree.with_suffix(".img"), tree, tmp_path / "mnt", store)


@pytest.mark.slow
def test_packs_killed_at_random_leave_a_valid_store(tmp_path: Path, kernel_mount: MountImage) -> None:
    del kernel_mount
    store, src = tmp_path / "store", tmp_path / "src"
    _make_tree(src, 6, files=60)
    rng = random.Random(7)
    image = tmp_path / "img"
    pack = [
        sys.executable,
        "-m",
        "erofsgen",
        "pack",
        "--quiet",
        f"--blob-store={store}",
        str(src),
        str(image),
    ]
    for round_no in range(10):
        (src / "changing").write_bytes(rng.randbytes(300 << 10))  # something new to store each time
        proc = subprocess.Popen(pack, stderr=subprocess.DEVNULL)
        time.sleep(rng.uniform(0.0, 0.6))
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        if store.exists():
            result = subprocess.run(
                [sys.executable, "-m", "erofsgen", "store", "verify", str(store)],
                capture_output=True,
                text=True,
            )
            assert result.returncode == 0, f"round {round_no}: {result.stdout}{result.stderr}"
        assert not image.exists() or open_image(image).superblock is not None
        assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".img")] == []
    _pack(src, image, store)
    _assert_mounts_equal(image, src, tmp_path / "mnt", store)


def test_gc_keeps_what_kept_images_need(tmp_path: Path, kernel_mount: MountImage) -> None:
    del kernel_mount
    store = tmp_path / "store"
    one, two, other = tmp_path / "one", tmp_path / "two", tmp_path / "other"
    _make_tree(one, 8)
    shutil.copytree(one, two, symlinks=True)
    _change_a_tenth(two, 9)
    _make_tree(other, 10)
    for tree in (one, two, other):
        _pack(tree, tree.with_suffix(".img"), store)
    blobs = sorted(p.name for p in (store / "blobs" / "sha256").iterdir())
    assert len(blobs) == 3
    keep = [str(one.with_suffix(".img")), str(two.with_suffix(".img"))]
    assert cli_main(["store", "gc", str(store), "--keep", *keep]) == 0  # a dry run
    assert sorted(p.name for p in (store / "blobs" / "sha256").iterdir()) == blobs
    assert cli_main(["store", "gc", str(store), "--keep", *keep, "--delete"]) == 0
    with open_image(other.with_suffix(".img")) as img:
        (gone,) = [slot.tag.decode() for slot in img.superblock.devices]
    assert sorted(p.name for p in (store / "blobs" / "sha256").iterdir()) == sorted(set(blobs) - {gone})
    assert not (store / "index" / gone).exists()
    assert cli_main(["store", "verify", str(store)]) == 0
    for tree in (one, two):
        _assert_mounts_equal(tree.with_suffix(".img"), tree, tmp_path / "mnt", store)


def test_a_repack_reads_only_changed_files(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from erofsgen.blobs import cache

    # Files written by this test are seconds old at most: let the cache trust them anyway.
    monkeypatch.setattr(cache, "RACY_NS", -(10**12))
    monkeypatch.setattr(chunks, "RACY_NS", -(10**12))
    read: list[str] = []
    digests = chunks._digests

    def counting(form: chunks.ChunkedData, *args: object, **kwargs: bool) -> list[bytes]:
        read.append(form.source.describe())
        return digests(form, *args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(chunks, "_digests", counting)
    src, store = tmp_path / "src", tmp_path / "store"
    _make_tree(src, 11)
    _pack(src, tmp_path / "one.img", store)
    assert len(read) == 24
    read.clear()
    changed = src / "a" / "f03"
    changed.write_bytes(b"changed" * 3000)
    _pack(src, tmp_path / "two.img", store)
    assert read == [str(changed)]
    with open_image(tmp_path / "two.img", devices=_devices(tmp_path / "two.img", store)) as img:
        for path in src.rglob("f*"):
            assert img.read_bytes(str(path.relative_to(src))) == path.read_bytes()


def _devices(image: Path, store: Path) -> list[str]:
    with open_image(image) as img:
        return [str(store / "blobs" / "sha256" / slot.tag.decode()) for slot in img.superblock.devices]


def test_a_damaged_index_is_named_and_nothing_is_written(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    src, store, image = tmp_path / "src", tmp_path / "store", tmp_path / "img"
    _make_tree(src, 12, files=4)
    _pack(src, tmp_path / "first.img", store)
    (segment,) = (store / "index").iterdir()
    data = bytearray(segment.read_bytes())
    data[70] ^= 0xFF
    segment.write_bytes(bytes(data))
    assert cli_main(["pack", "--quiet", f"--blob-store={store}", str(src), str(image)]) == 2
    assert str(segment) in capsys.readouterr().err
    assert not image.exists()
    with pytest.raises(InvalidInputError, match=str(segment)):
        write_image(tree_from_directory(src), image, WriteOptions(blob_stores=(str(store),)))


def test_a_corrupted_blob_is_refused_by_mount_and_extract(
    tmp_path: Path, kernel_mount: MountImage, capsys: pytest.CaptureFixture[str]
) -> None:
    del kernel_mount
    src, store, image = tmp_path / "src", tmp_path / "store", tmp_path / "img"
    _make_tree(src, 13, files=4)
    _pack(src, image, store)
    (blob,) = (store / "blobs" / "sha256").iterdir()
    data = bytearray(blob.read_bytes())
    data[5000] ^= 1
    os.chmod(blob, 0o644)
    blob.write_bytes(bytes(data))
    mnt = tmp_path / "mnt"
    mnt.mkdir()
    assert cli_main(["mount", "--verify", f"--blob-store={store}", str(image), str(mnt)]) == 2
    assert blob.name in capsys.readouterr().err
    assert mount_at(mnt) is None
    assert cli_main(["extract", f"--blob-store={store}", str(image), str(tmp_path / "out")]) == 2
    assert blob.name in capsys.readouterr().err
    assert not (tmp_path / "out").exists()


@pytest.fixture
def small_tmpfs(tmp_path: Path) -> Iterator[Path]:
    """A 1 MiB tmpfs, unmounted afterwards."""
    with mounted_tmpfs(tmp_path / "small", "1m") as where:
        yield where


@pytest.mark.parametrize("target", ["store", "blobdev"])
def test_a_full_blob_target_is_named_and_nothing_is_left(
    tmp_path: Path, small_tmpfs: Path, target: str, capsys: pytest.CaptureFixture[str]
) -> None:
    src, image = tmp_path / "src", tmp_path / "img"
    _make_tree(src, 14, files=12)  # about 2.5 MiB of chunks
    where = small_tmpfs / target
    option = f"--blob-store={where}" if target == "store" else f"--blobdev={where}"
    assert cli_main(["pack", "--quiet", option, str(src), str(image)]) == 2
    what = "a new blob" if target == "store" else "the blob device"
    assert (
        capsys.readouterr().err == f"erofsgen: error: {where}: cannot write {what}: No space left on device\n"
    )
    assert not image.exists()
    left = [p for p in small_tmpfs.rglob("*") if p.is_file() and p.name not in ("oci-layout", "lock")]
    assert left == []


def test_extract_of_a_path_hashes_only_the_blobs_it_reads(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A corrupted blob stops `extract --path` only where the extracted part reads from it."""
    src, store = tmp_path / "src", tmp_path / "store"
    _make_tree(src, 14, files=4)
    _pack(src, tmp_path / "first.img", store)
    (old_blob,) = (store / "blobs" / "sha256").iterdir()
    (src / "new").mkdir()
    (src / "new" / "fresh").write_bytes(random.Random(15).randbytes(300 << 10))
    _pack(src, tmp_path / "second.img", store)
    data = bytearray(old_blob.read_bytes())
    data[5000] ^= 1
    os.chmod(old_blob, 0o644)
    old_blob.write_bytes(bytes(data))
    args = ["extract", "--quiet", f"--blob-store={store}", str(tmp_path / "second.img")]
    assert cli_main([*args, str(tmp_path / "new"), "--path=/new"]) == 0
    assert (tmp_path / "new" / "fresh").read_bytes() == (src / "new" / "fresh").read_bytes()
    assert cli_main([*args, str(tmp_path / "a"), "--path=a"]) == 2
    assert old_blob.name in capsys.readouterr().err
    assert not (tmp_path / "a").exists()


def test_a_pack_with_no_new_chunks_leaves_its_image_alone(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Every chunk already in the store: nothing may touch the image's descriptor but the
    emitter. A chunk copier started anyway truncated the image to nothing, which only showed
    when it ran after the emitter's writes; here it is made to run then."""
    src, store = tmp_path / "src", tmp_path / "store"
    _make_tree(src, 16, files=4)
    _pack(src, tmp_path / "first.img", store)
    emitted = threading.Event()
    real_emit_areas, real_run = Emitter.emit_areas, chunks.ChunkCopier.run

    def emit_areas(self: Emitter) -> None:
        real_emit_areas(self)
        emitted.set()

    def late_run(self: chunks.ChunkCopier) -> None:
        emitted.wait(30)
        real_run(self)

    monkeypatch.setattr(Emitter, "emit_areas", emit_areas)
    monkeypatch.setattr(chunks.ChunkCopier, "run", late_run)
    second = tmp_path / "second.img"
    _pack(src, second, store)
    assert second.read_bytes() == (tmp_path / "first.img").read_bytes()
    with open_image(second, devices=_devices(second, store)) as img:
        for path in src.rglob("f*"):
            assert img.read_bytes(str(path.relative_to(src))) == path.read_bytes()
