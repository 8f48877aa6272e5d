"""`erofsgen pack --composefs` and `erofsgen.mkcomposefs`: the same image as `erofsgen mkcomposefs`."""

from __future__ import annotations

import io
import os
import tarfile
from pathlib import Path

import pytest

import erofsgen
from erofsgen.cli import main as cli_main
from erofsgen.errors import InvalidInputError

from .test_composefs_cli import make_source


def _store_listing(store: Path) -> dict[str, bytes]:
    return {str(p.relative_to(store)): p.read_bytes() for p in sorted(store.rglob("*")) if p.is_file()}


def test_pack_composefs_writes_what_mkcomposefs_writes(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    src = tmp_path / "src"
    src.mkdir()
    make_source(src)
    made = tmp_path / "made.img"
    argv = ["mkcomposefs", "--digest-store", str(tmp_path / "s1"), "--print-digest", str(src), str(made)]
    assert cli_main(argv) == 0
    digest = capsys.readouterr().out.strip()
    packed = tmp_path / "packed.img"
    argv = [
        "pack",
        "--composefs",
        "--digest-store",
        str(tmp_path / "s2"),
        "--workers=2",
        str(src),
        str(packed),
    ]
    assert cli_main(argv) == 0
    # 10 entries and the root's 256 whiteout stubs
    assert capsys.readouterr().out == f"{packed}: composefs image, 266 inodes, fs-verity digest {digest}\n"
    assert packed.read_bytes() == made.read_bytes()
    assert _store_listing(tmp_path / "s2") == _store_listing(tmp_path / "s1") != {}
    link = tmp_path / "link"
    link.symlink_to(src)  # followed, as pack follows a symlink SOURCE
    assert cli_main(["pack", "--composefs", "--quiet", str(link), str(tmp_path / "via-link.img")]) == 0
    assert capsys.readouterr().out == ""
    assert (tmp_path / "via-link.img").read_bytes() == made.read_bytes()

    api = tmp_path / "api.img"
    options = erofsgen.MkcomposefsOptions(digest_store=str(tmp_path / "s3"))
    assert erofsgen.mkcomposefs(src, api, options).hex() == digest
    assert api.read_bytes() == made.read_bytes()
    assert _store_listing(tmp_path / "s3") == _store_listing(tmp_path / "s1")
    buffer = io.BytesIO()
    assert erofsgen.mkcomposefs(str(src), buffer).hex() == digest
    assert buffer.getvalue() == made.read_bytes()
    assert erofsgen.mkcomposefs(src, None).hex() == digest  # only the digest


@pytest.mark.parametrize(
    "extra",
    [["-z", "lz4"], ["-T", "0"], ["-b", "1024"], ["--all-root"], ["--exclude-path", "x"], ["-E", "dedupe"],
     ["--chunksize", "65536"], ["-U", "clear"], ["-x", "-1"], ["--tar", "f"], ["--aufs"]],
)  # fmt: skip
def test_pack_composefs_refuses_what_does_not_apply(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], extra: list[str]
) -> None:
    src = tmp_path / "src"
    src.mkdir()
    image = tmp_path / "img"
    assert cli_main(["pack", "--composefs", *extra, str(src), str(image)]) == 2
    assert f"{extra[0]} cannot be used with --composefs" in capsys.readouterr().err
    assert not image.exists()


def test_pack_composefs_takes_one_directory(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    archive = tmp_path / "a.tar"
    with tarfile.open(archive, "w"):
        pass
    assert cli_main(["pack", "--composefs", str(archive), str(tmp_path / "img")]) == 2
    assert "--composefs takes one directory SOURCE" in capsys.readouterr().err
    assert (
        cli_main(["pack", "--digest-store", str(tmp_path / "s"), str(tmp_path), str(tmp_path / "img")]) == 2
    )
    assert "--digest-store goes with --composefs" in capsys.readouterr().err
    assert not os.path.exists(tmp_path / "img") and not os.path.exists(tmp_path / "s")


def test_source_and_store_errors_name_the_path(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    missing = tmp_path / "missing"
    assert cli_main(["mkcomposefs", str(missing), str(tmp_path / "img")]) == 2
    assert capsys.readouterr().err == f"erofsgen: error: {missing}: No such file or directory\n"
    src = tmp_path / "src"
    src.mkdir()
    make_source(src)
    not_a_dir = tmp_path / "file"
    not_a_dir.write_bytes(b"")
    assert cli_main(["mkcomposefs", "--digest-store", str(not_a_dir), str(src), str(tmp_path / "img")]) == 2
    assert capsys.readouterr().err == f"erofsgen: error: {not_a_dir}: the digest store is not a directory\n"
    assert not (tmp_path / "img").exists()


@pytest.mark.parametrize(
    ("args", "message"),
    [
        ((123, "out"), "SOURCE must be a path, not int"),
        (("src", 5), "output must be a path, a binary file or None, not int"),
        (("src", "out", "opts"), "options must be MkcomposefsOptions, not str"),
    ],
)
def test_api_refuses_wrong_types(tmp_path: Path, args: tuple[object, ...], message: str) -> None:
    (tmp_path / "src").mkdir()
    where = [tmp_path / a if isinstance(a, str) and a in ("src", "out") else a for a in args]
    with pytest.raises(InvalidInputError, match=message):
        erofsgen.mkcomposefs(*where)  # type: ignore[arg-type]
    assert not (tmp_path / "out").exists()
