"""`erofsgen mount`/`umount` and erofsgen.blobs.mount against the running kernel.

Images: mkfs.erofs `--chunksize=4096 --blobdev` of the scenario tree, slot 0 tagged with the
blob's digest (tests/support/blob_images.py) and the blob filed in a store. Each mount is judged
by the tree read back through the kernel, by /proc/self/mountinfo (file-backed: the image itself
is the source; loop: a loop device over it), and by the loop devices left afterwards: none.
Every test unmounts and detaches in its fixture's teardown, whatever happened.
"""

from __future__ import annotations

import contextlib
import errno
import os
import shutil
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from erofsgen.blobs import mount as mount_module
from erofsgen.blobs.devices import blob_path
from erofsgen.blobs.loop import attach_loop
from erofsgen.blobs.mount import MOUNT_METHOD_ENV, MountError, mount_at, mount_image, umount_image
from erofsgen.cli import main as cli_main
from erofsgen.errors import InvalidInputError
from tests.support.blob_images import (
    flatten,
    mkfs_with_blob,
    replace_device_table,
    sha256_hex,
    store_blob,
    tag_with_digest,
)
from tests.support.compare import assert_same_tree
from tests.support.erofs_utils import ErofsUtils
from tests.support.kernel import MountImage
from tests.support.snapshot import snapshot

_SETTLE = 10.0  # seconds for a released loop device to detach (the last close may be deferred)


def loops_backed_by(paths: list[Path]) -> dict[str, str]:
    """Attached loop devices (name → backing file) whose backing file is one of `paths`."""
    wanted = {os.path.realpath(p) for p in paths}
    found = {}
    for backing in Path("/sys/block").glob("loop*/loop/backing_file"):
        with contextlib.suppress(OSError):
            name = backing.read_text().strip()
            if name in wanted:
                found[f"/dev/{backing.parent.parent.name}"] = name
    return found


def wait_released(paths: list[Path]) -> dict[str, str]:
    """The loop devices still backed by `paths` once they had time to detach (empty: none)."""
    deadline = time.monotonic() + _SETTLE
    while (left := loops_backed_by(paths)) and time.monotonic() < deadline:
        time.sleep(0.05)
    return left


@dataclass(frozen=True)
class Setup:
    src: Path
    image: Path
    blob: Path
    store: Path
    digest: str
    mnt: Path
    more_blobs: list[Path] = field(default_factory=list)  # a test's own, watched for loop leaks too

    @property
    def stored(self) -> Path:
        return blob_path(self.store, self.digest)

    @property
    def files(self) -> list[Path]:
        return [self.image, self.blob, self.stored, *self.more_blobs]


@pytest.fixture
def setup(
    kernel_mount: MountImage, erofs_utils: ErofsUtils, scenario_tree_short_names: Path, tmp_path: Path
) -> Iterator[Setup]:
    """A tagged image, its blob in a store, an empty mount point; torn down whatever happened:
    anything still mounted is unmounted (lazily if need be), leftover loop devices detached,
    and a leak fails the test."""
    del kernel_mount  # requested for its skip (or fail, under EROFSGEN_REQUIRE_KERNEL=1)
    image, blob = mkfs_with_blob(erofs_utils, scenario_tree_short_names, tmp_path)
    digest = tag_with_digest(image, blob)
    store = tmp_path / "store"
    store_blob(store, blob)
    mnt = tmp_path / "mnt"
    mnt.mkdir()
    made = Setup(scenario_tree_short_names, image, blob, store, digest, mnt)
    try:
        yield made
    finally:
        leaks = _tear_down(made)
    assert not leaks, f"left behind: {leaks}"


def _tear_down(made: Setup) -> list[str]:
    leaks = []
    for _ in range(4):  # stacked mounts: one at a time
        if mount_at(made.mnt) is None:
            break
        leaks.append(f"mount at {made.mnt}")
        if subprocess.run(["umount", str(made.mnt)], check=False, capture_output=True).returncode:
            subprocess.run(["umount", "-l", str(made.mnt)], check=False, capture_output=True)
    for device in wait_released(made.files):
        leaks.append(f"loop device {device}")
        subprocess.run(["losetup", "-d", device], check=False, capture_output=True)
    return leaks


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    status = cli_main(list(argv))
    out = capsys.readouterr()
    return status, out.out, out.err


def assert_mounted_tree(made: Setup) -> None:
    assert_same_tree(snapshot(made.src), snapshot(made.mnt))


def assert_nothing_left(made: Setup) -> None:
    assert mount_at(made.mnt) is None
    assert wait_released(made.files) == {}


# -- mounting and unmounting --------------------------------------------------------------------


def test_mount_file_backed(setup: Setup, capsys: pytest.CaptureFixture[str]) -> None:
    status, out, err = run(
        capsys, "mount", str(setup.image), str(setup.mnt), "--blob-store", str(setup.store)
    )
    assert (status, out, err) == (0, "", "")
    info = mount_at(setup.mnt)
    assert info is not None and info.fstype == "erofs"
    assert info.source == str(setup.image)  # the file itself, no loop device
    assert "ro" in info.options.split(",")
    assert loops_backed_by(setup.files) == {}
    assert_mounted_tree(setup)
    assert run(capsys, "umount", str(setup.mnt)) == (0, "", "")
    assert_nothing_left(setup)


def test_mount_through_loop_devices(setup: Setup, capsys: pytest.CaptureFixture[str]) -> None:
    status, _, err = run(
        capsys,
        "mount",
        str(setup.image),
        str(setup.mnt),
        "--blob-store",
        str(setup.store),
        "--loop",
        "--verify",
    )
    assert (status, err) == (0, "")
    info = mount_at(setup.mnt)
    assert info is not None and info.fstype == "erofs"
    loops = loops_backed_by(setup.files)
    assert loops.get(info.source) == str(setup.image)
    assert sorted(loops.values()) == sorted([str(setup.image), str(setup.stored)])
    assert_mounted_tree(setup)
    assert run(capsys, "umount", str(setup.mnt)) == (0, "", "")
    assert_nothing_left(setup)  # autoclear detached them


def test_loop_forced_by_environment(setup: Setup, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(MOUNT_METHOD_ENV, "loop")
    mount_image(setup.image, setup.mnt, [setup.blob])
    info = mount_at(setup.mnt)
    assert info is not None and info.source.startswith("/dev/loop")
    assert (setup.mnt / "sizes" / "s004097").read_bytes() == (setup.src / "sizes" / "s004097").read_bytes()
    umount_image(setup.mnt)
    assert_nothing_left(setup)


def test_mount_with_explicit_device(setup: Setup, capsys: pytest.CaptureFixture[str]) -> None:
    status, _, err = run(
        capsys, "mount", str(setup.image), str(setup.mnt), "--device", str(setup.blob), "--verify"
    )
    assert (status, err) == (0, "")
    assert_mounted_tree(setup)
    umount_image(setup.mnt)
    assert_nothing_left(setup)


@pytest.mark.parametrize("loop", [False, True], ids=["file", "loop"])
def test_many_devices_in_table_order(setup: Setup, loop: bool, capsys: pytest.CaptureFixture[str]) -> None:
    """40 devices: more than mount(2)'s one page of `device=<store path>` options would hold.

    Only device 1 holds data (the chunk indexes name it); the others are one-block blobs the
    kernel must still be given, in table order, each found by its own tag.
    """
    slots = [(setup.digest.encode(), setup.blob.stat().st_size // 4096)]
    for i in range(39):
        extra = setup.store.parent / f"extra{i}"
        extra.write_bytes(os.urandom(4096))
        setup.more_blobs.append(store_blob(setup.store, extra))
        slots.append((sha256_hex(extra).encode(), 1))
    replace_device_table(setup.image, slots)
    options = ",".join(f"device={p}" for p in [setup.stored, *setup.more_blobs])
    assert len(options) > 4096
    argv = ["mount", str(setup.image), str(setup.mnt), "--blob-store", str(setup.store)]
    status, _, err = run(capsys, *argv, *(["--loop"] if loop else []))
    assert (status, err) == (0, "")
    assert len(loops_backed_by(setup.files)) == (41 if loop else 0)
    assert_mounted_tree(setup)
    umount_image(setup.mnt)
    assert_nothing_left(setup)


def test_flat_image_needs_no_devices(setup: Setup, capsys: pytest.CaptureFixture[str]) -> None:
    flat = setup.image.with_name("flat.erofs")
    flatten(setup.image, setup.blob, flat)
    setup.more_blobs.append(flat)
    assert run(capsys, "mount", str(flat), str(setup.mnt)) == (0, "", "")
    assert_mounted_tree(setup)
    umount_image(setup.mnt)
    assert_nothing_left(setup)


def test_devices_outside_the_image_are_required(setup: Setup, capsys: pytest.CaptureFixture[str]) -> None:
    status, _, err = run(capsys, "mount", str(setup.image), str(setup.mnt))
    assert status == 2
    assert "extra devices are not inside it; give them with --blob-store or --device" in err
    assert mount_at(setup.mnt) is None


# -- refused before mounting --------------------------------------------------------------------


def _refused(setup: Setup, capsys: pytest.CaptureFixture[str], *extra: str) -> str:
    status, out, err = run(
        capsys, "mount", str(setup.image), str(setup.mnt), "--blob-store", str(setup.store), *extra
    )
    assert status == 2 and out == ""
    assert mount_at(setup.mnt) is None
    assert loops_backed_by(setup.files) == {}
    return err


def test_missing_blob_refused(setup: Setup, capsys: pytest.CaptureFixture[str]) -> None:
    setup.stored.unlink()
    err = _refused(setup, capsys)
    assert err == (f"erofsgen: error: device 1: blob {setup.digest} not found (searched: {setup.store})\n")


def test_truncated_blob_refused(setup: Setup, capsys: pytest.CaptureFixture[str]) -> None:
    os.truncate(setup.stored, setup.stored.stat().st_size - 4096)
    assert f"device 1: {setup.stored} is truncated" in _refused(setup, capsys)


def test_corrupted_blob_refused_with_verify(setup: Setup, capsys: pytest.CaptureFixture[str]) -> None:
    with open(setup.stored, "r+b") as f:
        f.seek(12345)
        f.write(b"\xa5")
    assert f"{setup.stored}: content does not match its digest {setup.digest}" in _refused(
        setup, capsys, "--verify"
    )


# -- refused by the kernel ----------------------------------------------------------------------


@pytest.mark.parametrize("loop", [False, True], ids=["file", "loop"])
def test_kernel_refusal_is_reported_and_leaves_nothing(setup: Setup, loop: bool) -> None:
    with open(setup.image, "r+b") as f:  # break the superblock checksum: only the kernel checks it
        f.seek(1024 + 4)
        f.write(b"\x01\x02\x03\x04")
    with pytest.raises(MountError, match="invalid checksum") as err:
        mount_image(setup.image, setup.mnt, [setup.stored], loop=loop)
    assert err.value.errno == errno.EBADMSG
    assert str(setup.image) in str(err.value)
    assert_nothing_left(setup)


def test_device_count_mismatch_reported_by_the_kernel(setup: Setup) -> None:
    with pytest.raises(MountError, match=r"extra devices don't match \(ondisk 1, given 2\)"):
        mount_image(setup.image, setup.mnt, [setup.blob, setup.blob])
    assert_nothing_left(setup)


def test_mount_point_must_be_a_directory(setup: Setup) -> None:
    with pytest.raises(InvalidInputError, match="mount point is not a directory"):
        mount_image(setup.image, setup.mnt / "absent", [setup.blob])


def _file_backed_fails(monkeypatch: pytest.MonkeyPatch, code: int, *said: str) -> None:
    """Make the file-backed attempt fail as an older kernel's would."""

    def refuse(*args: object) -> None:
        raise MountError(f"file-backed refused ({os.strerror(code)})", code, said)

    monkeypatch.setattr(mount_module, "_mount_file_backed", refuse)


@pytest.mark.parametrize(
    ("code", "said"),
    [
        (errno.ENOTBLK, ["/x/image.erofs: Can't lookup blockdev"]),  # before Linux 6.12
        (errno.EINVAL, []),  # a file-backed mount the kernel refused without saying why
    ],
    ids=["ENOTBLK", "EINVAL"],
)
def test_falls_back_to_loop_devices(
    setup: Setup, monkeypatch: pytest.MonkeyPatch, code: int, said: list[str]
) -> None:
    _file_backed_fails(monkeypatch, code, *said)
    mount_image(setup.image, setup.mnt, [setup.blob])
    info = mount_at(setup.mnt)
    assert info is not None and info.source.startswith("/dev/loop")
    assert_mounted_tree(setup)
    umount_image(setup.mnt)
    assert_nothing_left(setup)


def test_no_fallback_when_erofs_said_what_is_wrong(setup: Setup, monkeypatch: pytest.MonkeyPatch) -> None:
    _file_backed_fails(monkeypatch, errno.EINVAL, "erofs (device erofs): cannot find valid erofs superblock")
    with pytest.raises(MountError, match="file-backed refused") as err:
        mount_image(setup.image, setup.mnt, [setup.blob])
    assert "loop" not in str(err.value)
    assert_nothing_left(setup)


def test_both_failures_reported(setup: Setup, monkeypatch: pytest.MonkeyPatch) -> None:
    _file_backed_fails(monkeypatch, errno.ENOTBLK)
    with open(setup.image, "r+b") as f:
        f.seek(1024 + 4)
        f.write(b"\x01\x02\x03\x04")
    with pytest.raises(MountError, match=r"file-backed refused .*; with loop devices: .*invalid checksum"):
        mount_image(setup.image, setup.mnt, [setup.blob])
    assert_nothing_left(setup)


# -- umount -------------------------------------------------------------------------------------


def test_umount_refuses_what_is_not_an_erofs_mount(setup: Setup, capsys: pytest.CaptureFixture[str]) -> None:
    status, _, err = run(capsys, "umount", str(setup.mnt))
    assert status == 2 and err == f"erofsgen: error: {setup.mnt}: not a mount point\n"
    status, _, err = run(capsys, "umount", str(setup.mnt / "absent"))
    assert status == 2 and "no such directory" in err
    subprocess.run(["mount", "-t", "tmpfs", "none", str(setup.mnt)], check=True)
    try:
        status, _, err = run(capsys, "umount", str(setup.mnt))
        assert (
            status == 2
            and err == f"erofsgen: error: {setup.mnt}: not an EROFS mount (tmpfs is mounted there)\n"
        )
        info = mount_at(setup.mnt)
        assert info is not None and info.fstype == "tmpfs"
    finally:
        subprocess.run(["umount", str(setup.mnt)], check=False)


def test_umount_of_a_busy_mount(setup: Setup) -> None:
    mount_image(setup.image, setup.mnt, [setup.blob])
    with open(setup.mnt / "sizes" / "s004097", "rb"), pytest.raises(MountError, match="in use") as err:
        umount_image(setup.mnt)
    assert err.value.errno == errno.EBUSY
    umount_image(setup.mnt)
    assert_nothing_left(setup)


# -- loop devices ------------------------------------------------------------------------------


def test_loop_device_detaches_when_released(setup: Setup) -> None:
    with attach_loop(setup.blob) as loop:
        assert loops_backed_by([setup.blob]) == {loop.path: str(setup.blob)}
        with open(loop.path, "rb") as dev:
            assert dev.read(4096) == setup.blob.read_bytes()[:4096]
        ro = Path(f"/sys/block/{Path(loop.path).name}/ro").read_text().strip()
        assert ro == "1"
    assert wait_released([setup.blob]) == {}


def test_copy_of_store_on_another_path(
    setup: Setup, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A store is found by layout alone: any directory with blobs/sha256/<hex> will do."""
    other = tmp_path / "elsewhere" / "store"
    shutil.copytree(setup.store, other)
    status, _, err = run(
        capsys,
        "mount",
        str(setup.image),
        str(setup.mnt),
        "--blob-store",
        str(tmp_path),
        "--blob-store",
        str(other),
    )
    assert (status, err) == (0, "")
    assert (setup.mnt / "sizes" / "s004097").read_bytes() == (setup.src / "sizes" / "s004097").read_bytes()
    umount_image(setup.mnt)
    assert_nothing_left(setup)
