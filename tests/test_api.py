"""The public surface: exported names, error attributes, rules shared by every tree source."""

from __future__ import annotations

import errno
import os
import pickle
from pathlib import Path

import pytest

import erofsgen
from erofsgen import errors
from erofsgen.limits import MAX_ID
from erofsgen.model import Directory, File, Metadata
from erofsgen.sources.builder import ImageBuilder
from erofsgen.transform import TreeOverrides, apply_overrides
from erofsgen.writer import write_image

EAGER = {
    "CorruptImageError",
    "ErofsgenError",
    "ImageWriteError",
    "InvalidInputError",
    "NotFoundError",
    "UnsupportedFeatureError",
}


def test_every_exported_name_resolves() -> None:
    assert set(erofsgen.__all__) == {*EAGER, "__version__", *erofsgen._LAZY}
    for name in erofsgen.__all__:
        assert getattr(erofsgen, name) is not None, name
    assert set(erofsgen.__all__) <= set(dir(erofsgen))


@pytest.mark.parametrize(
    "name",
    [
        "FileType",
        "Stat",
        "ImageFile",
        "DirEntry",
        "ImageBuilder",
        "WriteOptions",
        "InodeFormat",
        "Directory",
        "File",
        "Symlink",
        "Device",
        "Fifo",
        "Socket",
        "Metadata",
        "BytesData",
        "PathData",
        "FileObjectData",
    ],
)
def test_types_for_annotations_are_exported(name: str) -> None:
    assert isinstance(getattr(erofsgen, name), type)


def test_not_found_error_is_a_file_not_found_error(tmp_path: Path) -> None:
    image = tmp_path / "img"
    with ImageBuilder(image) as b:
        b.add_file("etc/hosts")
    with erofsgen.open_image(image) as img:
        with pytest.raises(FileNotFoundError) as info:
            img.stat("/etc/nope")
        with pytest.raises(erofsgen.NotFoundError) as under_file:
            img.listdir("etc/hosts/x")
    exc = info.value
    assert isinstance(exc, erofsgen.NotFoundError)
    assert (exc.errno, exc.strerror, exc.filename) == (errno.ENOENT, "no such file or directory", "/etc/nope")
    assert str(exc) == "/etc/nope: no such file or directory"
    assert under_file.value.errno == errno.ENOENT and under_file.value.filename == "/etc/hosts"
    assert str(under_file.value) == "/etc/hosts: not a directory"
    copy = pickle.loads(pickle.dumps(exc))
    assert (type(copy), copy.errno, copy.filename, str(copy)) == (
        type(exc),
        exc.errno,
        exc.filename,
        str(exc),
    )


def test_errors_keep_where() -> None:
    invalid = errors.InvalidInputError("bad", "/p")
    assert (invalid.path, str(invalid)) == ("/p", "/p: bad") and isinstance(invalid, ValueError)
    corrupt = errors.CorruptImageError("broken", nid=5, offset=0x40, area="inode")
    assert (corrupt.nid, corrupt.offset, corrupt.area) == (5, 0x40, "inode")
    assert str(corrupt) == "inode nid 5 offset 0x40: broken"
    for exc in (invalid, corrupt):
        copy = pickle.loads(pickle.dumps(exc))
        assert (str(copy), vars(copy)) == (str(exc), vars(exc))


# --------------------------------------------------------------------------- shared rules


def _tree(uid: int = 0, xattrs: dict[bytes, bytes] | None = None) -> Directory:
    child = File(Metadata(uid=uid, xattrs=xattrs or {}))
    return Directory(Metadata(mode=0o755), {b"f": child})


@pytest.mark.parametrize("name", [b"user.", b"trusted.", b"security.", b"system."])
def test_writer_refuses_xattr_names_that_are_only_a_namespace(tmp_path: Path, name: bytes) -> None:
    """A hand-built tree gets the rule the builder applies (Linux cannot read such a name back)."""
    with pytest.raises(erofsgen.InvalidInputError, match=name.decode()) as info:
        write_image(_tree(xattrs={name: b"v"}), tmp_path / "img")
    assert info.value.path == "/f"
    assert not os.listdir(tmp_path)


def test_acl_names_still_have_no_suffix(tmp_path: Path) -> None:
    acl = b"\x02\0\0\0" + b"\x01\0\x06\0\xff\xff\xff\xff"  # version 2, USER_OBJ rw-
    summary = write_image(_tree(xattrs={b"system.posix_acl_access": acl}), tmp_path / "img")
    with erofsgen.open_image(summary.path) as img:
        assert img.xattrs("f") == {"system.posix_acl_access": acl}


def test_one_id_range_for_builder_transforms_and_writer(tmp_path: Path) -> None:
    assert MAX_ID == 2**32 - 2
    ImageBuilder().mkfifo("ok", uid=MAX_ID, gid=MAX_ID)
    write_image(_tree(uid=MAX_ID), tmp_path / "ok.img")
    apply_overrides(_tree(), TreeOverrides(force_uid=MAX_ID))
    with pytest.raises(erofsgen.InvalidInputError, match=f"outside 0..{MAX_ID}"):
        ImageBuilder().mkfifo("no", uid=MAX_ID + 1)
    with pytest.raises(erofsgen.InvalidInputError, match=f"outside 0..{MAX_ID}"):
        write_image(_tree(uid=MAX_ID + 1), tmp_path / "no.img")
    with pytest.raises(erofsgen.InvalidInputError, match=f"outside 0..{MAX_ID}"):
        TreeOverrides(force_uid=MAX_ID + 1)
    with pytest.raises(erofsgen.InvalidInputError, match=f"outside 0..{MAX_ID}"):
        apply_overrides(_tree(uid=MAX_ID), TreeOverrides(uid_offset=1))
