"""Extract safety and privilege handling: hostile names, duplicates, loops, non-root runs."""

from __future__ import annotations

import errno
import json
import os
import shutil
import tempfile
import time
import traceback
from collections.abc import Iterator
from pathlib import Path

import pytest

import erofsgen
from erofsgen.errors import CorruptImageError, InvalidInputError
from erofsgen.format.dirent import DIRENT, DIRENT_SIZE
from erofsgen.reader.datamap import Segment
from tests.support.erofs_utils import ErofsUtils

needs_root = pytest.mark.skipif(os.geteuid() != 0, reason="needs root")


def _image(utils: ErofsUtils, tmp: Path, build: dict[str, bytes | None]) -> bytes:
    """mkfs a tree given as {relative path: content, or None for a directory}."""
    src = tmp / "src"
    for rel, data in sorted(build.items()):
        path = src / rel
        if data is None:
            path.mkdir(parents=True, exist_ok=True)
        else:
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_bytes(data)
    image = tmp / "img"
    utils.mkfs(image, src, "--quiet", "-T0")
    return image.read_bytes()


def _patched(tmp: Path, image: bytes, old: bytes, new: bytes) -> Path:
    assert image.count(old) == 1, old
    path = tmp / "patched"
    path.write_bytes(image.replace(old, new))
    return path


@pytest.fixture
def sandbox(tmp_path: Path) -> Iterator[Path]:
    """A directory whose only child is the extraction target's parent: escapes would show."""
    box = tmp_path / "box"
    box.mkdir()
    yield box
    assert sorted(os.listdir(box)) in ([], ["out"])


@pytest.mark.parametrize("bad", [b"a/2", b"..2", b"a\x002"])
def test_hostile_names_are_refused(
    erofs_utils: ErofsUtils, tmp_path: Path, sandbox: Path, bad: bytes
) -> None:
    image = _image(erofs_utils, tmp_path, {"aa1": b"one", "aa2": b"two", "zzz": b"z"})
    patched = _patched(tmp_path, image, b"aa1aa2", b"aa1" + bad)
    with erofsgen.open_image(patched, strict_checksum=False) as img:
        if bad == b"..2":
            img.extract(sandbox / "out")  # a legal, if odd, name: stays inside
            assert (sandbox / "out" / "..2").read_bytes() == b"two"
        else:
            with pytest.raises(CorruptImageError):
                img.extract(sandbox / "out")


def test_duplicate_names_are_refused(erofs_utils: ErofsUtils, tmp_path: Path, sandbox: Path) -> None:
    image = _image(erofs_utils, tmp_path, {"aa1": b"one", "aa2": b"two"})
    patched = _patched(tmp_path, image, b"aa1aa2", b"aa1aa1")
    with (
        erofsgen.open_image(patched, strict_checksum=False) as img,
        pytest.raises(CorruptImageError, match="duplicate"),
    ):
        img.extract(sandbox / "out")


def test_directory_loop_is_refused(erofs_utils: ErofsUtils, tmp_path: Path, sandbox: Path) -> None:
    image = bytearray(_image(erofs_utils, tmp_path, {"d": None, "d/e": None, "d/e/f": b"x"}))
    with erofsgen.open_image(tmp_path / "img") as img:
        root, d, e = img.root_nid, img.lookup("d"), img.lookup("d/e")
        block_of_d = img.extents_nid(d)[0]
    # Make the entry "e" in d point back at the root: the walk would never end.
    assert isinstance(block_of_d, Segment) and block_of_d.device == 0
    off = block_of_d.physical
    count = DIRENT.unpack(image, off).nameoff // DIRENT_SIZE
    for k in range(count):
        rec = DIRENT.unpack(image, off + k * DIRENT_SIZE)
        if rec.nid == e:
            image[off + k * DIRENT_SIZE : off + (k + 1) * DIRENT_SIZE] = DIRENT.pack(rec._replace(nid=root))
    patched = tmp_path / "loop"
    patched.write_bytes(image)
    with erofsgen.open_image(patched, strict_checksum=False) as img:
        with pytest.raises(CorruptImageError, match="twice"):
            list(img.walk())
        with pytest.raises(CorruptImageError, match="twice"):
            img.extract(sandbox / "out")


def test_destination_rules(erofs_utils: ErofsUtils, tmp_path: Path) -> None:
    image = _image(erofs_utils, tmp_path, {"f": b"data"})
    with erofsgen.open_image(tmp_path / "img") as img:
        (tmp_path / "file").write_bytes(b"")
        with pytest.raises(InvalidInputError, match="not a directory"):
            img.extract(tmp_path / "file")
        os.symlink("elsewhere", tmp_path / "link")
        with pytest.raises(InvalidInputError):
            img.extract(tmp_path / "link")
        result = img.extract(tmp_path / "new")
    assert (result.files, result.directories) == (1, 0)
    assert (tmp_path / "new" / "f").read_bytes() == b"data"
    assert image


def _extract_as_nobody(image: Path, dest: Path) -> tuple[int, int, list[str]]:
    """Run Image.extract in a forked child that dropped to uid/gid 65534 (nobody)."""
    rfd, wfd = os.pipe()
    pid = os.fork()
    if pid == 0:  # child: never return into pytest
        status = 1
        try:
            os.close(rfd)
            os.setgroups([])
            os.setgid(65534)
            os.setuid(65534)
            with erofsgen.open_image(image) as img:
                r = img.extract(dest)
            os.write(wfd, json.dumps([r.files, r.specials, r.skipped]).encode())
            status = 0
        except BaseException:
            traceback.print_exc()
        finally:
            os._exit(status)
    os.close(wfd)
    with os.fdopen(rfd, "rb") as pipe:
        payload = pipe.read()
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0, "extract as nobody failed"
    files, specials, skipped = json.loads(payload)
    return files, specials, skipped


@needs_root
def test_unprivileged_extract_skips_what_it_cannot_set(
    erofs_utils: ErofsUtils, scenario_tree_short_names: Path
) -> None:
    work = Path(tempfile.mkdtemp(prefix="erofsgen-nobody-"))
    try:
        os.chmod(work, 0o777)
        image = work / "img"
        erofs_utils.mkfs(image, scenario_tree_short_names, "--quiet")
        os.chmod(image, 0o644)
        files, specials, skipped = _extract_as_nobody(image, work / "out")
        assert files > 2000 and specials > 0
        assert any("trusted.test needs privileges" in s for s in skipped)
        assert any("not created" in s for s in skipped)  # device nodes
        data = (work / "out" / "hardlinks" / "a" / "one").read_bytes()
        assert data == (scenario_tree_short_names / "hardlinks" / "a" / "one").read_bytes()
        assert os.stat(work / "out" / "modes" / "file_4755").st_mode & 0o7777 == 0o4755
    finally:
        shutil.rmtree(work)


def _listing(root: Path) -> dict[str, tuple[int, int, int, int, int, bytes]]:
    """Every entry below `root`: mode, owner, link count, mtime and content (or link target)."""
    out = {}
    for path in [root, *sorted(root.rglob("*"))]:
        st = path.lstat()
        if path.is_symlink():
            body = os.fsencode(os.readlink(path))
        elif path.is_file():
            body = path.read_bytes()
        else:
            body = b""
        out[str(path.relative_to(root))] = (
            st.st_mode,
            st.st_uid,
            st.st_gid,
            st.st_nlink,
            st.st_mtime_ns,
            body,
        )
    return out


def test_parallel_extract_equals_serial(
    erofs_utils: ErofsUtils, scenario_tree_short_names: Path, tmp_path: Path
) -> None:
    """Files made by the writer process (hard links to them included) match a serial extract."""
    image = tmp_path / "img"
    erofs_utils.mkfs(image, scenario_tree_short_names, "--quiet")
    with erofsgen.open_image(image) as img:
        serial = img.extract(tmp_path / "serial")
        parallel = img.extract(tmp_path / "parallel", parallel=True)
    assert parallel == serial and serial.files > 2000 and serial.hardlinks > 0
    assert _listing(tmp_path / "parallel") == _listing(tmp_path / "serial")


def test_parallel_extract_error_names_the_file(
    erofs_utils: ErofsUtils, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """An error in the writer process stops the extraction with the destination path."""
    _image(erofs_utils, tmp_path, {"d/a": b"one", "d/b": b"two"})

    def full(*args: object) -> None:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(erofsgen.reader.image.Image, "copy_planned", full)  # the child inherits it
    with erofsgen.open_image(tmp_path / "img") as img, pytest.raises(OSError) as caught:
        img.extract(tmp_path / "out", parallel=True)
    assert caught.value.errno == 28
    assert caught.value.filename == str(tmp_path / "out" / "d" / "a")


def test_parallel_extract_writer_that_dies_is_an_error_of_the_destination(
    erofs_utils: ErofsUtils, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A writer process that is gone (killed, crashed) is EIO naming the destination, never a
    bare BrokenPipeError, however many batches were still to be sent."""
    _image(erofs_utils, tmp_path, {f"d{i}/f{j}": b"x" * j for i in range(40) for j in range(30)})

    def die(image: object, open_dir: object, job_r: int, res_w: int) -> None:
        os.close(job_r)  # every batch sent from now on meets a closed pipe
        time.sleep(0.5)
        os._exit(9)

    monkeypatch.setattr(erofsgen.reader.extract, "_child_main", die)
    with erofsgen.open_image(tmp_path / "img") as img, pytest.raises(OSError) as caught:
        img.extract(tmp_path / "out", parallel=True)
    assert caught.value.errno == errno.EIO
    assert "writer process ended early" in str(caught.value)
