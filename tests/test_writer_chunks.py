"""Chunk-based files: dedup, holes, sparse sources, device tables, checks against change."""

from __future__ import annotations

import hashlib
import io
import os
import random
from pathlib import Path
from typing import BinaryIO

import pytest

from erofsgen import open_image
from erofsgen.errors import InvalidInputError
from erofsgen.format.constants import ChunkFormat, DataLayout, FeatureIncompat
from erofsgen.model import BytesData, Directory, File, Metadata, PathData, StreamData
from erofsgen.sources.directory import tree_from_directory
from erofsgen.writer import WriteOptions, datastage, write_image
from tests.support.kernel import MountImage

BS = 4096
GiB = 1 << 30


def _file(data: bytes | None = None, *, source: object = None) -> File:
    return File(Metadata(mode=0o644), source if source is not None else BytesData(data or b""))  # type: ignore[arg-type]


def _tree(**files: File) -> Directory:
    return Directory(Metadata(mode=0o755), {name.encode(): node for name, node in files.items()})


def _chunk_entries(image: Path, name: str, devices: list[Path] | None = None) -> tuple[int, bytes]:
    """(i_u, raw chunk array) of a file."""
    with open_image(image, devices=[str(d) for d in devices or []]) as img:
        inode = img.inode(img.lookup(name))
        assert inode.layout == DataLayout.CHUNK_BASED
        unit = 8 if inode.i_u & ChunkFormat.INDEXES else 4
        chunk = BS << (inode.i_u & ChunkFormat.BLKBITS_MASK)
        count = -(-inode.size // chunk)
        start = -(-(inode.xattr_offset + inode.xattr_size) // unit) * unit
        with open(image, "rb") as f:
            f.seek(start)
            return inode.i_u, f.read(count * unit)


def test_equal_chunks_are_stored_once_in_the_image(tmp_path: Path) -> None:
    data = random.Random(1).randbytes(5 * BS)
    image = tmp_path / "img"
    write_image(_tree(a=_file(data), b=_file(data), c=_file(data + b"x")), image, WriteOptions(chunk_size=BS))
    _, a = _chunk_entries(image, "a")
    _, b = _chunk_entries(image, "b")
    _, c = _chunk_entries(image, "c")
    assert a == b and c[:20] == a  # c's first five chunks are a's, its sixth is its own
    with open_image(image) as img:
        assert img.read_bytes("a") == img.read_bytes("b") == data
        assert img.read_bytes("c") == data + b"x"
    # Six distinct chunks of data, not sixteen.
    assert image.stat().st_size < 10 * BS


def test_zero_chunks_are_holes_and_cost_nothing(tmp_path: Path) -> None:
    data = bytes(3 * BS) + b"island" + bytes(3 * BS)
    image = tmp_path / "img"
    write_image(_tree(z=_file(data)), image, WriteOptions(chunk_size=BS))
    _, raw = _chunk_entries(image, "z")
    entries = [int.from_bytes(raw[i : i + 4], "little") for i in range(0, len(raw), 4)]
    assert entries[:3] == [0xFFFFFFFF] * 3 and entries[4:] == [0xFFFFFFFF] * 3
    assert entries[3] != 0xFFFFFFFF
    with open_image(image) as img:
        assert img.read_bytes("z") == data


def test_small_files_stay_inline_and_empty_ones_empty(tmp_path: Path) -> None:
    image = tmp_path / "img"
    write_image(
        _tree(small=_file(b"s" * 100), empty=_file(b""), edge=_file(b"e" * BS)),
        image,
        WriteOptions(chunk_size=BS),
    )
    with open_image(image) as img:
        assert img.inode(img.lookup("small")).layout == DataLayout.FLAT_INLINE
        assert img.inode(img.lookup("edge")).layout == DataLayout.CHUNK_BASED
        assert img.read_bytes("small") == b"s" * 100 and img.read_bytes("empty") == b""
        assert img.read_bytes("edge") == b"e" * BS


def _sparse(path: Path, size: int, islands: dict[int, bytes]) -> None:
    with open(path, "wb") as f:
        f.truncate(size)
        for offset, data in islands.items():
            f.seek(offset)
            f.write(data)


ISLANDS = {0: b"head" * 1000, 2 * GiB + 12345: b"middle" * 5000, (9 * GiB) // 2 - 70000: b"tail" * 17000}


def test_sparse_file_over_4gib_costs_only_its_islands(tmp_path: Path, kernel_mount: MountImage) -> None:
    src = tmp_path / "src"
    src.mkdir()
    size = (9 * GiB) // 2
    _sparse(src / "sparse", size, ISLANDS)
    image, blob = tmp_path / "img", tmp_path / "blob"
    write_image(tree_from_directory(src), image, WriteOptions(chunk_size=65536, blob_device=str(blob)))
    assert image.stat().st_size + blob.stat().st_size < 16 << 20
    assert blob.stat().st_size <= 4 * 65536 + 3 * 65536  # the islands' chunks, nothing else
    with kernel_mount(image, [blob]) as mnt, open(mnt / "sparse", "rb") as f:
        assert os.fstat(f.fileno()).st_size == size
        for offset, data in ISLANDS.items():
            f.seek(offset)
            assert f.read(len(data)) == data
        f.seek(GiB)
        assert f.read(1 << 20) == bytes(1 << 20)


def test_blob_device_slot_names_the_blob_by_digest(tmp_path: Path) -> None:
    data = random.Random(2).randbytes(3 * 65536 + 100)
    image, blob = tmp_path / "img", tmp_path / "blob"
    write_image(_tree(a=_file(data), b=_file(data)), image, WriteOptions(blob_device=str(blob)))
    content = blob.read_bytes()
    assert len(content) == 3 * 65536 + BS  # one copy; the short last chunk padded to a block
    with open_image(image, devices=[str(blob)]) as img:
        sb = img.superblock
        assert sb.feature_incompat & FeatureIncompat.DEVICE_TABLE
        assert sb.feature_incompat & FeatureIncompat.CHUNKED_FILE
        (slot,) = sb.devices
        assert slot.tag == hashlib.sha256(content).hexdigest().encode()
        assert slot.blocks == len(content) // BS
        assert slot.uniaddr == sb.blocks
        assert img.read_bytes("a") == img.read_bytes("b") == data


def test_builds_are_reproducible_whatever_the_worker_timing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    rng = random.Random(3)
    shared = rng.randbytes(4 * BS)
    files = {f"f{i}": _file(shared + rng.randbytes(rng.randrange(BS, 4 * BS)) + shared) for i in range(12)}
    outputs: list[tuple[bytes, bytes]] = []
    for order in (None, list(range(40))[::-1]):
        if order is not None:
            delays = {i: (40 - i) * 0.002 for i in order}
            monkeypatch.setattr(
                datastage, "job_hook", lambda i, d=delays: __import__("time").sleep(d.get(i, 0))
            )
        image, blob = tmp_path / f"img{len(outputs)}", tmp_path / f"blob{len(outputs)}"
        write_image(
            _tree(**files), image, WriteOptions(chunk_size=BS, blob_device=str(blob), build_time_ns=0)
        )
        outputs.append((image.read_bytes(), blob.read_bytes()))
    assert outputs[0] == outputs[1]


class _Changing:
    """A re-readable source whose content differs on its second reading."""

    def __init__(self, first: bytes, second: bytes) -> None:
        self.versions = [first, second]
        self.size = len(first)

    def describe(self) -> str:
        return "<changing>"

    def open(self) -> BinaryIO:
        return io.BytesIO(self.versions.pop(0) if len(self.versions) > 1 else self.versions[0])


def test_a_source_that_changes_between_hash_and_copy_is_refused(tmp_path: Path) -> None:
    first = random.Random(4).randbytes(3 * BS)
    second = first[:BS] + bytes(reversed(first[BS : 2 * BS])) + first[2 * BS :]
    image = tmp_path / "img"
    image.write_bytes(b"old image")
    with pytest.raises(InvalidInputError, match=r"changing.*changed while packing"):
        write_image(_tree(f=_file(source=_Changing(first, second))), image, WriteOptions(chunk_size=BS))
    assert image.read_bytes() == b"old image"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["img"]


def test_a_file_that_shrinks_before_its_copy_is_refused(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "f"
    path.write_bytes(random.Random(5).randbytes(3 * BS))
    from erofsgen.writer import chunks

    original = chunks.ChunkSession.start_copy

    def shrink_then_copy(self: chunks.ChunkSession, fd: int, where: str) -> None:
        os.truncate(path, BS)
        original(self, fd, where)

    monkeypatch.setattr(chunks.ChunkSession, "start_copy", shrink_then_copy)
    image, blob = tmp_path / "img", tmp_path / "blob"
    tree = _tree(f=File(Metadata(mode=0o644), PathData(str(path), 3 * BS)))
    with pytest.raises(InvalidInputError, match=r"^/f: .* shrank while packing"):
        write_image(tree, image, WriteOptions(chunk_size=BS, blob_device=str(blob)))
    assert not image.exists() and not blob.exists()


def test_streams_are_chunked_after_one_read(tmp_path: Path) -> None:
    data = random.Random(6).randbytes(2 * BS) * 2
    image = tmp_path / "img"
    stream = io.BytesIO(data)
    write_image(
        _tree(s=File(Metadata(mode=0o644), StreamData(stream, len(data)))), image, WriteOptions(chunk_size=BS)
    )
    with open_image(image) as img:
        assert img.read_bytes("s") == data
    assert image.stat().st_size < 5 * BS  # two distinct chunks stored


@pytest.mark.parametrize("size", [BS, BS << 31])
def test_chunk_size_limits(size: int) -> None:
    assert WriteOptions(chunk_size=size).chunk_size == size


@pytest.mark.parametrize("size", [BS // 2, 3 * BS, BS << 32, 0, -BS])
def test_bad_chunk_sizes_are_refused(size: int) -> None:
    with pytest.raises(InvalidInputError, match=rf"chunk size {size} must be a power of two"):
        WriteOptions(chunk_size=size)


def test_blob_device_and_stores_exclude_each_other(tmp_path: Path) -> None:
    with pytest.raises(InvalidInputError, match="cannot be used together"):
        WriteOptions(blob_device=str(tmp_path / "b"), blob_stores=(str(tmp_path / "s"),))
    assert WriteOptions(blob_device=str(tmp_path / "b")).chunk_size == 65536


def test_unchanged_files_copied_in_the_kernel_give_the_same_bytes(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from erofsgen.writer import chunks

    src = tmp_path / "src"
    src.mkdir()
    rng = random.Random(7)
    for i in range(6):
        (src / f"f{i}").write_bytes(rng.randbytes(rng.randrange(BS, 40 * BS)))
    built = []
    for racy_ns in (chunks.RACY_NS, -(10**12)):  # fresh files: checked copies; "settled": kernel copies
        monkeypatch.setattr(chunks, "RACY_NS", racy_ns)
        image, blob = tmp_path / f"img{racy_ns}", tmp_path / f"blob{racy_ns}"
        write_image(tree_from_directory(src), image, WriteOptions(blob_device=str(blob), chunk_size=BS))
        built.append((image.read_bytes(), blob.read_bytes()))
    assert built[0] == built[1]
    with open_image(tmp_path / "img-1000000000000", devices=[str(tmp_path / "blob-1000000000000")]) as img:
        for i in range(6):
            assert img.read_bytes(f"f{i}") == (src / f"f{i}").read_bytes()


def test_the_blob_device_cannot_be_the_image(tmp_path: Path) -> None:
    image = tmp_path / "img"
    (tmp_path / "link").symlink_to(image)
    for blob in (image, tmp_path / "link"):
        with pytest.raises(InvalidInputError, match="the blob device cannot be the image itself"):
            write_image(_tree(f=_file(bytes(range(256)) * 64)), image, WriteOptions(blob_device=str(blob)))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["link"]


def test_a_store_is_created_but_not_its_missing_parents(tmp_path: Path) -> None:
    tree = _tree(f=_file(bytes(range(256)) * 64))
    with pytest.raises(InvalidInputError, match=r"missing/store: cannot create the store: No such file"):
        write_image(tree, tmp_path / "img", WriteOptions(blob_stores=(str(tmp_path / "missing" / "store"),)))
    assert not (tmp_path / "missing").exists() and not (tmp_path / "img").exists()
    write_image(tree, tmp_path / "img", WriteOptions(blob_stores=(str(tmp_path / "store"),)))
    assert (tmp_path / "store" / "oci-layout").is_file()
