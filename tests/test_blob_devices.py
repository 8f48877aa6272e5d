"""Finding an image's blob devices (erofsgen.blobs.devices), `erofsgen blobs`, and `--blob-store`
on the read commands.

Images come from mkfs.erofs `--chunksize=4096 --blobdev` (erofs-utils 1.5 leaves the tag empty);
tests/support/blob_images.py writes the blob's digest and size into the slot, as our writer will,
and files the blob into a store.
"""

from __future__ import annotations

import os
import random
import shutil
from dataclasses import dataclass
from pathlib import Path

import pytest
from hypothesis import example, given
from hypothesis import strategies as st

from erofsgen.blobs.devices import (
    ProblemKind,
    blob_path,
    data_devices,
    devices_inside,
    file_sha256,
    find_devices,
    tag_digest,
    verify_devices,
)
from erofsgen.cli import main as cli_main
from erofsgen.errors import CorruptImageError, InvalidInputError
from erofsgen.reader import open_image
from tests.support.blob_images import (
    flatten,
    mkfs_with_blob,
    replace_device_table,
    sha256_hex,
    store_blob,
    tag_device,
    tag_with_digest,
)
from tests.support.erofs_utils import ErofsUtils

BLOCK = 4096


def make_source(root: Path) -> Path:
    """A small tree whose regular files cross chunk edges (some chunks repeat, one is a hole)."""
    rng = random.Random(7)
    chunk = rng.randbytes(BLOCK)
    (root / "d" / "e").mkdir(parents=True)
    (root / "big").write_bytes(rng.randbytes(3 * BLOCK + 123))
    (root / "repeats").write_bytes(chunk * 3 + b"tail")
    (root / "holey").write_bytes(chunk + bytes(BLOCK) + chunk)
    (root / "d" / "small").write_bytes(b"small\n")  # chunked into the blob too by mkfs.erofs 1.5
    (root / "d" / "empty").write_bytes(b"")  # no data anywhere
    (root / "d" / "e" / "exact").write_bytes(rng.randbytes(2 * BLOCK))
    (root / "d" / "link").symlink_to("../big")
    os.chmod(root / "big", 0o640)
    os.chmod(root / "d" / "e", 0o750)
    return root


@dataclass(frozen=True)
class BlobImage:
    src: Path
    image: Path  # tagged with the blob's digest and size
    blob: Path
    untagged: Path  # as mkfs.erofs 1.5 wrote it
    store: Path  # holds the blob under its digest
    digest: str


@pytest.fixture(scope="module")
def _built_once() -> dict[str, BlobImage]:
    return {}


@pytest.fixture
def built(
    tmp_path_factory: pytest.TempPathFactory, erofs_utils: ErofsUtils, _built_once: dict[str, BlobImage]
) -> BlobImage:
    """The tagged image, its blob in a store, the untagged original: built once per module
    (through the function-scoped erofs_utils fixture, which skips where mkfs.erofs is missing)."""
    if "image" not in _built_once:
        _built_once["image"] = build_blob_image(tmp_path_factory.mktemp("blob_devices"), erofs_utils)
    return _built_once["image"]


def build_blob_image(base: Path, erofs_utils: ErofsUtils) -> BlobImage:
    src = make_source(base / "src")
    image, blob = mkfs_with_blob(erofs_utils, src, base)
    untagged = base / "untagged.erofs"
    shutil.copyfile(image, untagged)
    digest = tag_with_digest(image, blob)
    store = base / "store"
    store_blob(store, blob)
    return BlobImage(src, image, blob, untagged, store, digest)


@pytest.fixture
def case(built: BlobImage, tmp_path: Path) -> BlobImage:
    """A private copy of the image and store, for tests that damage them."""
    image = tmp_path / "image.erofs"
    shutil.copyfile(built.image, image)
    store = tmp_path / "store"
    shutil.copytree(built.store, store)
    return BlobImage(built.src, image, built.blob, built.untagged, store, built.digest)


def stored(case: BlobImage) -> Path:
    return blob_path(case.store, case.digest)


def corrupt(path: Path, at: int = 5000) -> None:
    """Flip one byte in place: same size, different content."""
    with open(path, "r+b") as f:
        f.seek(at)
        byte = f.read(1)
        f.seek(at)
        f.write(bytes([byte[0] ^ 0xFF]))


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    status = cli_main(list(argv))
    out = capsys.readouterr()
    return status, out.out, out.err


# -- tags and paths ----------------------------------------------------------------------------


@given(st.binary(min_size=64, max_size=64))
@example(b"a" * 64)
@example(b"A" * 64)
@example(b"0" * 63 + b"\0")
def test_tag_digest_is_exactly_64_lowercase_hex(tag: bytes) -> None:
    digest = tag_digest(tag)
    if all(c in b"0123456789abcdef" for c in tag):
        assert digest == tag.decode()
    else:
        assert digest is None


def test_blob_path_follows_the_store_layout(tmp_path: Path) -> None:
    assert blob_path(tmp_path, "ab" * 32) == tmp_path / "blobs" / "sha256" / ("ab" * 32)


# -- find_devices -------------------------------------------------------------------------------


def test_found_by_tag_in_a_store(built: BlobImage) -> None:
    [loc] = find_devices(built.image, [built.store])
    assert loc.index == 0 and loc.device_id == 1
    assert loc.tag == built.digest
    assert loc.path == blob_path(built.store, built.digest)
    assert loc.blocks * BLOCK == built.blob.stat().st_size == loc.size
    assert loc.problems == () and loc.usable and not loc.verified


def test_first_store_holding_the_blob_wins(built: BlobImage, tmp_path: Path) -> None:
    empty, other = tmp_path / "empty", tmp_path / "other"
    empty.mkdir()
    store_blob(other, built.blob)
    [loc] = find_devices(built.image, [empty, other, built.store])
    assert loc.path == blob_path(other, built.digest)
    [loc] = find_devices(built.image, [built.store, other])
    assert loc.path == blob_path(built.store, built.digest)


def test_verify_hashes_the_blob(built: BlobImage) -> None:
    [loc] = find_devices(built.image, [built.store], verify=True)
    assert loc.verified and loc.problems == ()
    assert file_sha256(loc.path or "") == built.digest


def test_missing_blob_names_its_tag_and_the_stores(built: BlobImage, tmp_path: Path) -> None:
    a, b = tmp_path / "a", tmp_path / "b"
    a.mkdir()
    with pytest.raises(InvalidInputError) as err:
        find_devices(built.image, [a, b])
    assert str(err.value) == (
        f"device 1: blob {built.digest} not found (searched: {a}, {b} (not a directory))"
    )


def test_missing_blob_reported_not_raised_when_not_strict(built: BlobImage, tmp_path: Path) -> None:
    [loc] = find_devices(built.image, [tmp_path], strict=False)
    assert loc.path is None and not loc.usable
    assert [p.kind for p in loc.problems] == [ProblemKind.MISSING]


def test_truncated_blob_is_named(case: BlobImage) -> None:
    blob = stored(case)
    os.truncate(blob, blob.stat().st_size - 1)
    with pytest.raises(CorruptImageError) as err:
        find_devices(case.image, [case.store])
    assert f"{blob} is truncated" in str(err.value)
    assert f"needs {case.blob.stat().st_size}" in str(err.value)


def test_longer_blob_is_fine(case: BlobImage) -> None:
    with open(stored(case), "ab") as f:
        f.write(bytes(BLOCK))
    [loc] = find_devices(case.image, [case.store])
    assert loc.usable


def test_corrupted_blob_found_only_by_verify(case: BlobImage) -> None:
    corrupt(stored(case))
    [loc] = find_devices(case.image, [case.store])
    assert loc.usable  # same size: only the content can tell
    with pytest.raises(CorruptImageError) as err:
        find_devices(case.image, [case.store], verify=True)
    assert f"{stored(case)}: content does not match its digest {case.digest}" in str(err.value)


def test_untagged_slot_needs_device(built: BlobImage) -> None:
    with pytest.raises(InvalidInputError, match="device 1 has no tag; give it with --device"):
        find_devices(built.untagged, [built.store])


def test_tag_that_is_not_a_digest(case: BlobImage) -> None:
    tag_device(case.image, 0, b"/var/lib/blobs/one", 0)
    with pytest.raises(InvalidInputError, match="tag '/var/lib/blobs/one' is not a SHA-256 digest"):
        find_devices(case.image, [case.store])
    tag_device(case.image, 0, case.digest.upper().encode(), 0)
    with pytest.raises(InvalidInputError, match="is not a SHA-256 digest"):
        find_devices(case.image, [case.store])


def test_explicit_devices(built: BlobImage) -> None:
    [loc] = find_devices(built.untagged, devices=[built.blob])
    assert loc.path == built.blob and loc.usable and loc.tag == "" and loc.blocks == 0
    [loc] = find_devices(built.untagged, devices=[built.blob], verify=True)
    assert loc.usable and not loc.verified  # no digest to compare with
    [loc] = find_devices(built.image, devices=[built.blob], verify=True)
    assert loc.verified


def test_explicit_devices_are_checked(case: BlobImage, tmp_path: Path) -> None:
    with pytest.raises(InvalidInputError, match="does not exist"):
        find_devices(case.image, devices=[tmp_path / "nothing"])
    with pytest.raises(InvalidInputError, match="not a regular file or a block device"):
        find_devices(case.image, devices=[tmp_path])
    wrong = tmp_path / "wrong"
    wrong.write_bytes(bytes(case.blob.stat().st_size))
    with pytest.raises(CorruptImageError, match="content does not match its digest"):
        find_devices(case.image, devices=[wrong], verify=True)


def test_explicit_device_count_must_match(built: BlobImage) -> None:
    with pytest.raises(InvalidInputError, match=r"the image has 1 extra device\(s\), 2 given"):
        find_devices(built.image, devices=[built.blob, built.blob])


def test_devices_and_stores_together_refused(built: BlobImage) -> None:
    with pytest.raises(InvalidInputError, match="not both"):
        find_devices(built.image, [built.store], [built.blob])


def test_image_without_devices(built: BlobImage, tmp_path: Path, erofs_utils: ErofsUtils) -> None:
    plain = tmp_path / "plain.erofs"
    erofs_utils.mkfs(plain, built.src, "--quiet")
    assert find_devices(plain, [built.store]) == []


def test_not_an_image(tmp_path: Path) -> None:
    junk = tmp_path / "junk"
    junk.write_bytes(bytes(8192))
    with pytest.raises(InvalidInputError, match="not an EROFS image"):
        find_devices(junk, [tmp_path])


def test_devices_inside_only_for_a_flat_image(
    built: BlobImage, tmp_path: Path, capsysbinary: pytest.CaptureFixture[bytes]
) -> None:
    assert not devices_inside(built.image)  # uniaddr 0: flat mode would read the image's own blocks
    assert not devices_inside(built.untagged)
    flat = tmp_path / "flat.erofs"
    flatten(built.image, built.blob, flat)
    assert devices_inside(flat)
    assert cli_main(["cat", str(flat), "big"]) == 0  # read in flat mode, no devices given
    assert capsysbinary.readouterr().out == (built.src / "big").read_bytes()
    os.truncate(flat, flat.stat().st_size - 1)
    assert not devices_inside(flat)


# -- erofsgen blobs ----------------------------------------------------------------------------


def test_blobs_lists_where_each_device_is(built: BlobImage, capsys: pytest.CaptureFixture[str]) -> None:
    status, out, err = run(capsys, "blobs", str(built.image), "--blob-store", str(built.store))
    assert status == 0 and err == ""
    header, line = out.splitlines()
    assert header.split() == ["DEV", "TAG", "BLOCKS", "BYTES", "LOCATION"]
    size = built.blob.stat().st_size
    assert line.split() == ["1", built.digest, str(size // BLOCK), str(size), str(stored(built))]


def test_blobs_verify(case: BlobImage, capsys: pytest.CaptureFixture[str]) -> None:
    status, out, _ = run(capsys, "blobs", str(case.image), "--blob-store", str(case.store), "--verify")
    assert status == 0 and out.splitlines()[1].endswith(f"{stored(case)} (verified)")
    corrupt(stored(case))
    status, out, err = run(capsys, "blobs", str(case.image), "--blob-store", str(case.store), "--verify")
    assert status == 2
    assert out.splitlines()[1].endswith(f"{stored(case)} (content does not match)")
    assert (
        err == f"erofsgen: error: device 1: {stored(case)}: content does not match its digest {case.digest}\n"
    )


def test_blobs_missing_lists_everything_then_fails(
    built: BlobImage, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    status, out, err = run(capsys, "blobs", str(built.image), "--blob-store", str(tmp_path))
    assert status == 2
    assert out.splitlines()[1].split()[-1] == "missing"
    assert f"blob {built.digest} not found (searched: {tmp_path})" in err


def test_blobs_truncated(case: BlobImage, capsys: pytest.CaptureFixture[str]) -> None:
    os.truncate(stored(case), BLOCK)
    status, out, err = run(capsys, "blobs", str(case.image), "--blob-store", str(case.store))
    assert status == 2 and out.splitlines()[1].endswith("(truncated)")
    assert "is truncated: 4096 bytes" in err


def test_blobs_untagged_with_device(built: BlobImage, capsys: pytest.CaptureFixture[str]) -> None:
    status, out, _ = run(capsys, "blobs", str(built.untagged), "--device", str(built.blob))
    assert status == 0 and out.splitlines()[1].split() == ["1", "-", "0", "0", str(built.blob)]
    status, _, err = run(capsys, "blobs", str(built.untagged))
    assert status == 2 and "device 1 has no tag; give it with --device" in err


def test_blobs_image_without_devices(
    built: BlobImage, tmp_path: Path, erofs_utils: ErofsUtils, capsys: pytest.CaptureFixture[str]
) -> None:
    plain = tmp_path / "plain.erofs"
    erofs_utils.mkfs(plain, built.src, "--quiet")
    status, out, err = run(capsys, "blobs", str(plain))
    assert (status, out) == (0, "") and "no extra devices" in err


# -- --blob-store on the read commands ----------------------------------------------------------


def test_cat_from_a_store(built: BlobImage, capsysbinary: pytest.CaptureFixture[bytes]) -> None:
    for rel in ("big", "repeats", "holey", "d/small", "d/e/exact"):
        assert cli_main(["cat", str(built.image), rel, "--blob-store", str(built.store)]) == 0
        assert capsysbinary.readouterr().out == (built.src / rel).read_bytes(), rel


def test_extract_from_a_store(built: BlobImage, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    dest = tmp_path / "out"
    status, _, err = run(capsys, "extract", str(built.image), str(dest), "--blob-store", str(built.store))
    assert status == 0 and err == ""
    for path in built.src.rglob("*"):
        got = dest / path.relative_to(built.src)
        assert os.lstat(got).st_mode == os.lstat(path).st_mode, path
        if path.is_file() and not path.is_symlink():
            assert got.read_bytes() == path.read_bytes(), path
    assert os.readlink(dest / "d" / "link") == "../big"


def test_ls_check_dump_inspect_from_a_store(built: BlobImage, capsys: pytest.CaptureFixture[str]) -> None:
    store = ["--blob-store", str(built.store)]
    status, out, _ = run(capsys, "ls", str(built.image), "/d", *store)
    assert status == 0 and out.split() == ["e", "empty", "link", "small"]
    status, out, err = run(capsys, "check", str(built.image), "--data", *store)
    assert (status, out) == (0, "") and "0 problems" in err
    status, out, _ = run(capsys, "dump", str(built.image), "--path", "big", *store)
    assert status == 0 and "chunk" in out
    status, out, _ = run(capsys, "inspect", str(built.image), *store)
    assert status == 0 and "device" in out.lower()


def test_corrupted_blob_is_an_error_never_data(
    case: BlobImage, tmp_path: Path, capsysbinary: pytest.CaptureFixture[bytes]
) -> None:
    corrupt(stored(case))
    named = f"{stored(case)}: content does not match its digest".encode()
    store = ["--blob-store", str(case.store)]
    assert cli_main(["cat", str(case.image), "big", *store]) == 2
    out = capsysbinary.readouterr()
    assert out.out == b"" and named in out.err
    dest = tmp_path / "out"
    assert cli_main(["extract", str(case.image), str(dest), *store]) == 2
    assert named in capsysbinary.readouterr().err and not dest.exists()
    assert cli_main(["check", str(case.image), "--data", *store]) == 2
    assert named in capsysbinary.readouterr().err
    # Listing needs no data: only existence and size are checked.
    assert cli_main(["ls", str(case.image), *store]) == 0
    assert capsysbinary.readouterr().out.split() == [b"big", b"d", b"holey", b"repeats"]


def test_data_devices_and_verify_devices(case: BlobImage) -> None:
    with open_image(case.image, [stored(case)]) as image:
        assert data_devices(image, image.lookup("big")) == {1}
        assert data_devices(image, image.lookup("d/small")) == {1}
        assert data_devices(image, image.lookup("d/empty")) == set()
        verify_devices(image, [stored(case)])
        corrupt(stored(case))
        verify_devices(image, [stored(case)], set())
        with pytest.raises(CorruptImageError, match="content does not match its digest"):
            verify_devices(image, [stored(case)], {1})


def test_cat_hashes_only_the_blobs_the_file_reads(
    case: BlobImage, capsysbinary: pytest.CaptureFixture[bytes]
) -> None:
    corrupt(stored(case))
    store = ["--blob-store", str(case.store)]
    assert cli_main(["cat", str(case.image), "d/empty", *store]) == 0
    assert capsysbinary.readouterr() == (b"", b"")
    assert cli_main(["cat", str(case.image), "holey", *store]) == 2
    assert capsysbinary.readouterr().out == b""


def test_cat_skips_blobs_the_file_does_not_read(
    case: BlobImage, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Three devices, only the first holding data: a damaged third one stops `extract` (which
    reads the whole image) and `blobs --verify`, not a `cat` of one file."""
    slots = [(case.digest.encode(), case.blob.stat().st_size // BLOCK)]
    extras = []
    for i in range(2):
        extra = tmp_path / f"extra{i}"
        extra.write_bytes(bytes([i + 1]) * BLOCK)
        extras.append(store_blob(case.store, extra))
        slots.append((sha256_hex(extra).encode(), 1))
    replace_device_table(case.image, slots)
    corrupt(extras[1], at=10)
    store = ["--blob-store", str(case.store)]
    status, out, _ = run(capsys, "blobs", str(case.image), *store, "--verify")
    assert status == 2 and [line.split()[0] for line in out.splitlines()[1:]] == ["1", "2", "3"]
    assert out.splitlines()[3].endswith("(content does not match)")
    status, _, err = run(capsys, "extract", str(case.image), str(tmp_path / "out"), *store)
    assert status == 2 and f"device 3: {extras[1]}: content does not match its digest" in err
    status, out, err = run(capsys, "cat", str(case.image), "d/small", *store)
    assert (status, out, err) == (0, "small\n", "")


def test_missing_blob_fails_every_read_command(
    built: BlobImage, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    (tmp_path / "empty").mkdir()
    for argv in (
        ["ls", str(built.image)],
        ["cat", str(built.image), "big"],
        ["extract", str(built.image), str(tmp_path / "out")],
        ["check", str(built.image)],
        ["dump", str(built.image)],
        ["inspect", str(built.image)],
    ):
        status, out, err = run(capsys, *argv, "--blob-store", str(tmp_path / "empty"))
        assert status == 2 and out == "", argv
        assert err == (
            f"erofsgen: error: device 1: blob {built.digest} not found (searched: {tmp_path / 'empty'})\n"
        ), argv
    assert not (tmp_path / "out").exists()


def test_blob_store_and_device_together_refused(built: BlobImage, capsys: pytest.CaptureFixture[str]) -> None:
    argv = ["ls", str(built.image), "--blob-store", str(built.store), "--device", str(built.blob)]
    status, _, err = run(capsys, *argv)
    assert status == 2 and "not both" in err
