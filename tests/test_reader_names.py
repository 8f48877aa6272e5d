"""Names in messages and listings are escaped exactly as GNU `ls -b` escapes them."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

from erofsgen.reader.names import escape_name

NAMES = [
    b"plain",
    b"with space",
    b"new\nline",
    b"tab\there",
    b"bell\x07vt\x0bff\x0ccr\rbs\x08",
    b"ctrl\x01\x1f\x7f",
    b"back\\slash",
    b"\xff\xfe not utf-8 \xc3(",
    "ünïcødé ☃".encode(),
    b"quote'\"glob*?[]",
]


@pytest.mark.skipif(shutil.which("ls") is None, reason="no ls")
def test_escape_name_matches_ls_b(tmp_path: Path) -> None:
    for name in NAMES:
        (tmp_path / os.fsdecode(name)).touch()
    env = {**os.environ, "LC_ALL": "C.UTF-8"}
    listed = subprocess.run(["ls", "-b", "-1", "-U", str(tmp_path)], capture_output=True, env=env, check=True)
    if b"\\n" not in listed.stdout:
        pytest.skip("ls does not support -b escaping")
    theirs = sorted(listed.stdout.decode().splitlines())
    assert sorted(escape_name(name) for name in NAMES) == theirs


def test_escape_name_cases() -> None:
    assert escape_name(b"a\x01b") == "a\\001b" and escape_name("a\nb") == "a\\nb"
    assert escape_name(os.fsdecode(b"x\xff")) == "x\\377"  # surrogate-escaped str: the original byte
    assert escape_name(Path("/a b/c")) == "/a\\ b/c"
    assert "b'" not in escape_name(b"\x00")
