"""`erofsgen store {verify,gc,du} DIR`: output lines, exit status, option checks."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import pytest

from erofsgen.blobs import BlobStore
from erofsgen.cli import main as cli_main
from tests.support.erofs_utils import ErofsUtils
from tests.test_blob_store import BS, chunk_data, publish_blob, tagged_image


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, list[str], str]:
    status = cli_main(["store", *argv])
    out, err = capsys.readouterr()
    return status, out.splitlines(), err


@pytest.fixture
def store(tmp_path: Path) -> BlobStore:
    return BlobStore.open(tmp_path / "store", writable=True, create=True)


def test_verify_clean_store(store: BlobStore, capsys: pytest.CaptureFixture[str]) -> None:
    publish_blob(store, [b"one", b"two"])
    status, lines, err = run(capsys, "verify", store.path)
    assert (status, lines) == (0, [])
    assert err == f"erofsgen: {store.path}: 1 blobs, 1 segments, 2 chunks checked: 0 problems, 0 warnings\n"
    assert run(capsys, "verify", store.path, "--quiet") == (0, [], "")


def test_verify_problems_exit_1_and_repair_removes_them(
    store: BlobStore, capsys: pytest.CaptureFixture[str]
) -> None:
    good, _ = publish_blob(store, [b"good"])
    bad, _ = publish_blob(store, [b"bad"])
    with open(store.blob_path(bad), "r+b") as file:
        file.write(b"X")
    actual = hashlib.sha256(Path(store.blob_path(bad)).read_bytes()).hexdigest()
    Path(store.path, "tmp", "odd\nname").write_bytes(b"")  # no pid: stale only by age
    status, lines, err = run(capsys, "verify", store.path)
    assert status == 1
    assert lines[0] == f"blobs/sha256/{bad}: corrupt blob: content hashes to {actual}"
    assert lines[1].startswith("warning: tmp/odd\\nname: temporary file, no writer pid, ")
    assert len(lines) == 2 and "1 problems, 1 warnings" in err

    status, lines, _ = run(capsys, "verify", store.path, "--repair", "--stale-minutes", "0")
    assert status == 1  # found (and removed): the images using the blob lost data
    assert lines[0].endswith(" (removed)") and lines[1].endswith(" (removed)")
    assert run(capsys, "verify", store.path, "--quiet") == (0, [], "")
    assert store.blob_names() == [good]


def test_errors_are_one_line_exit_2(
    tmp_path: Path, store: BlobStore, capsys: pytest.CaptureFixture[str]
) -> None:
    status, lines, err = run(capsys, "verify", str(tmp_path / "nope"))
    assert (status, lines) == (2, [])
    assert err == f"erofsgen: error: {tmp_path / 'nope'}: no such store directory\n"
    for argv, message in [
        (["gc", store.path], "'store gc' needs --keep IMAGE (the images whose blobs stay)"),
        (["verify", store.path, "--keep", "x"], "--keep cannot be used with 'store verify'"),
        (["du", store.path, "--delete"], "--delete cannot be used with 'store du'"),
        (["gc", store.path, "--keep", "x", "--repair"], "--repair cannot be used with 'store gc'"),
        (["verify", store.path, "img"], "IMAGE arguments cannot be used with 'store verify'"),
    ]:
        status, lines, err = run(capsys, *argv)
        assert (status, lines) == (2, []) and err == f"erofsgen: error: {message}\n"
    with pytest.raises(SystemExit) as info:
        cli_main(["store", "verfy", store.path])
    assert info.value.code == 2
    assert "did you mean 'verify'?" in capsys.readouterr().err


def test_gc_and_du_with_real_images(
    erofs_utils: ErofsUtils, tmp_path: Path, store: BlobStore, capsys: pytest.CaptureFixture[str]
) -> None:
    one, blob_one = tagged_image(erofs_utils, tmp_path / "one", store, {"f": chunk_data("f", 2 * BS)})
    two, blob_two = tagged_image(
        erofs_utils, tmp_path / "two", store, {"g": chunk_data("g", BS), "h": chunk_data("g", BS)}
    )
    segment_size = os.path.getsize(store.segment_path(blob_two))

    status, lines, err = run(capsys, "du", store.path, str(one), str(two))
    assert status == 0 and err == ""
    assert lines == [
        "blobs: 2",
        f"stored bytes: {3 * BS}",
        "index segments: 2",
        f"indexed chunk bytes: {3 * BS}",
        f"image {one}: {2 * BS} logical bytes in 1 blobs",
        f"image {two}: {2 * BS} logical bytes in 1 blobs",  # g and h share one chunk
        f"images logical bytes: {4 * BS}",
        f"images stored bytes: {3 * BS}",
        "sharing ratio: 1.33",
    ]

    status, lines, err = run(capsys, "gc", store.path, "--keep", str(one))
    assert status == 0
    assert sorted(lines) == sorted(
        [
            f"would remove index/{blob_two}: {segment_size} bytes, segment of an unused blob",
            f"would remove blobs/sha256/{blob_two}: {BS} bytes, unused blob",
        ]
    )
    assert f"would remove 2 files, {BS + segment_size} bytes; kept 1 blobs (a dry run" in err
    assert store.contains(blob_two)

    status, lines, err = run(capsys, "gc", store.path, "--keep", str(one), str(tmp_path / "missing.img"))
    assert status == 2 and lines == [] and "missing.img" in err
    assert store.contains(blob_two)  # an unreadable image: nothing removed

    status, lines, err = run(capsys, "gc", store.path, "--keep", str(one), "--keep", str(two), "--delete")
    assert (status, lines) == (0, []) and "kept 2 blobs" in err
    status, lines, _ = run(capsys, "gc", store.path, "--keep", str(one), "--delete")
    assert status == 0 and len(lines) == 2 and lines[0].startswith("removed ")
    assert store.blob_names() == [blob_one] and store.segment_names() == [blob_one]
    assert run(capsys, "verify", store.path, "--quiet") == (0, [], "")
    status, lines, _ = run(capsys, "gc", store.path, "--keep", str(one), str(two), "--quiet")
    assert status == 0
    assert lines == [f"warning: blobs/sha256/{blob_two}: a kept image needs it, the store does not have it"]
