"""write_image and WriteOptions refuse values of the wrong type by name, never deep in a build."""

from __future__ import annotations

import uuid
from pathlib import Path
from typing import Any

import pytest

from erofsgen import InvalidInputError
from erofsgen.model import Directory, Metadata
from erofsgen.writer import WriteOptions, write_image


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("uuid", "clear"),
        ("uuid", b"\0" * 16),
        ("label", 5),
        ("block_size", "4096"),
        ("block_size", True),
        ("xattr_share_threshold", "2"),
        ("build_time_ns", 1.5),
        ("xattrs", 1),
        ("xattr_prefixes", [b"user."]),
        ("xattr_prefixes", ("user.",)),
        ("inode_format", "auto"),
        ("policy", "composefs"),
    ],
)
def test_wrong_option_types_are_named(field: str, value: Any) -> None:
    with pytest.raises(InvalidInputError, match=f"WriteOptions.{field}"):
        WriteOptions(**{field: value})


def test_right_option_types_are_accepted() -> None:
    WriteOptions(uuid=uuid.UUID(int=0), label="x", build_time_ns=0, xattr_prefixes=(b"user.",))


@pytest.mark.parametrize(
    ("root", "output", "options", "message"),
    [
        (None, "x.img", None, "root of an image must be a Directory, not NoneType"),
        ({}, "x.img", None, "must be a Directory, not dict"),
        ("root", 5, None, "the output must be a path, not int"),
        ("root", "x.img", {"block_size": 4096}, "options must be WriteOptions, not dict"),
    ],
)
def test_write_image_argument_types(
    tmp_path: Path, root: Any, output: Any, options: Any, message: str
) -> None:
    if root == "root":
        root = Directory(Metadata(0o755))
    if isinstance(output, str):
        output = tmp_path / output
    with pytest.raises(InvalidInputError, match=message):
        write_image(root, output, options)
    assert list(tmp_path.iterdir()) == []
