"""Command-line usage: --version, not-yet-supported mkfs.erofs options, suggestions for typos,
the argument-order hint, symlinked sources, and which libraries a command loads."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import textwrap
import tomllib
from pathlib import Path

import pytest

import erofsgen
from erofsgen import open_image
from erofsgen.cli import build_parser, command_parsers, main
from erofsgen.cli.pack import EXTENDED_NOT_YET_SUPPORTED, NOT_YET_SUPPORTED
from tests.support.erofs_utils import ErofsUtils

ROOT = Path(__file__).resolve().parents[1]


def usage_error(capsys: pytest.CaptureFixture[str], *argv: str) -> str:
    """Run the CLI expecting a usage error (exit 2); its stderr."""
    with pytest.raises(SystemExit) as info:
        main(list(argv))
    assert info.value.code == 2
    captured = capsys.readouterr()
    assert captured.out == ""
    return captured.err


@pytest.fixture
def src(tmp_path: Path) -> Path:
    root = tmp_path / "src"
    root.mkdir()
    (root / "file").write_bytes(b"data\n")
    return root


# --------------------------------------------------------------------------- --version


def test_version_is_the_package_version(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as info:
        main(["--version"])
    assert info.value.code == 0
    assert capsys.readouterr().out == f"erofsgen {erofsgen.__version__}\n"
    assert re.fullmatch(r"\d+\.\d+\.\d+", erofsgen.__version__)


def test_package_metadata_takes_the_version_from_the_package() -> None:
    # One place defines the version: erofsgen.__version__; the build reads it from there.
    pyproject = tomllib.loads((ROOT / "pyproject.toml").read_text())
    assert "version" not in pyproject["project"]
    assert "version" in pyproject["project"]["dynamic"]
    assert pyproject["tool"]["setuptools"]["dynamic"]["version"] == {"attr": "erofsgen.__version__"}


# --------------------------------------------------------------------------- not supported yet


@pytest.mark.parametrize("option", NOT_YET_SUPPORTED)
def test_unsupported_mkfs_option_is_named(option: str, src: Path, capsys: pytest.CaptureFixture[str]) -> None:
    image = src.parent / "out.img"
    err = usage_error(capsys, "pack", option, str(src), str(image))
    assert err == f"erofsgen pack: error: {option} is not supported yet\n"
    assert not image.exists()


@pytest.mark.parametrize(
    ("args", "named"),
    [
        (["--zfeature-bits=4096"], "--zfeature-bits"),
        (["--sort", "none"], "--sort"),
        (["--clean=1"], "--clean"),
        (["--offset", "4096"], "--offset"),
        (["-E", "xattr-name-filter"], "-E xattr-name-filter"),
        (["-E", "all-fragments,dedupe,xattr-name-filter"], "-E xattr-name-filter"),
    ],
)
def test_unsupported_option_forms(
    args: list[str], named: str, src: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    err = usage_error(capsys, "pack", str(src), str(src.parent / "out.img"), *args)
    assert err == f"erofsgen pack: error: {named} is not supported yet\n"


@pytest.mark.parametrize("name", EXTENDED_NOT_YET_SUPPORTED)
def test_unsupported_extended_option_is_named(
    name: str, src: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    err = usage_error(capsys, "pack", "-E", name, str(src), str(src.parent / "out.img"))
    assert err == f"erofsgen pack: error: -E {name} is not supported yet\n"


def test_every_mkfs_erofs_option_is_known_to_pack(erofs_utils: ErofsUtils) -> None:
    """Each option `mkfs.erofs --help` lists is implemented or reported as not supported yet."""
    result = subprocess.run(
        [str(erofs_utils.mkfs_path), "--help"], capture_output=True, text=True, check=False
    )
    listed = set(re.findall(r"^\s+(-[A-Za-z]|--[a-z][a-z-]+)", result.stdout + result.stderr, re.M))
    assert {"-z", "-T", "--exclude-path", "--quiet"} <= listed
    pack = command_parsers(build_parser("pack"))["pack"]
    known = {opt for action in pack._actions for opt in action.option_strings}
    assert listed - known == set()


def test_unsupported_options_are_listed_in_help(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        main(["pack", "--help"])
    out = " ".join(capsys.readouterr().out.split())
    for option in (*NOT_YET_SUPPORTED, *EXTENDED_NOT_YET_SUPPORTED):
        assert option in out.replace("- ", "-"), option


# --------------------------------------------------------------------------- suggestions


@pytest.mark.parametrize(
    ("argv", "expected"),
    [
        (["pakc", "a", "b"], "erofsgen: error: unknown command 'pakc'; did you mean 'pack'?\n"),
        (["--verison"], "erofsgen: error: unrecognized option '--verison'; did you mean '--version'?\n"),
        (["--verbose", "pack", "a", "b"], "erofsgen: error: unrecognized option '--verbose'\n"),
        (["extrat", "a", "b"], "erofsgen: error: unknown command 'extrat'; did you mean 'extract'?\n"),
        (
            ["pack", "--exclude-pth=x", "a", "b"],
            "erofsgen pack: error: unrecognized option '--exclude-pth'; did you mean '--exclude-path'?\n",
        ),
        (
            ["pack", "a", "b", "--forse-uid", "1"],
            "erofsgen pack: error: unrecognized option '--forse-uid'; did you mean '--force-uid'?\n",
        ),
        (
            ["inspect", "img", "--jsno"],
            "erofsgen inspect: error: unrecognized option '--jsno'; did you mean '--json'?\n",
        ),
    ],
)
def test_typos_get_a_suggestion(argv: list[str], expected: str, capsys: pytest.CaptureFixture[str]) -> None:
    assert usage_error(capsys, *argv) == expected


def test_no_suggestion_for_unrelated_words(capsys: pytest.CaptureFixture[str]) -> None:
    err = usage_error(capsys, "pack", "a", "b", "--zzzzzzzz")
    assert err.endswith("erofsgen pack: error: unrecognized arguments: --zzzzzzzz\n")
    assert "did you mean" not in err
    err = usage_error(capsys, "qqqq")
    assert "invalid choice: 'qqqq'" in err and "did you mean" not in err


# --------------------------------------------------------------------------- SOURCE and IMAGE


@pytest.mark.parametrize("image_exists", [False, True])
def test_mkfs_argument_order_gets_a_hint(
    src: Path, image_exists: bool, capsys: pytest.CaptureFixture[str]
) -> None:
    image = src.parent / "out.img"
    if image_exists:
        image.write_bytes(b"old image")
    assert main(["pack", "--quiet", str(image), str(src)]) == 2
    assert capsys.readouterr().err == (
        f"erofsgen: error: {image}: {'not a' if image_exists else 'no such'} directory; IMAGE is a "
        "directory — the order is `erofsgen pack SOURCE IMAGE` (mkfs.erofs takes IMAGE first)\n"
    )
    assert sorted(p.name for p in src.iterdir()) == ["file"]


def test_symlinked_source_is_followed(src: Path, tmp_path: Path) -> None:
    os.chmod(src, 0o710)
    os.setxattr(src, "user.origin", b"target")
    os.utime(src, ns=(1, 1234567890_123456789))
    link = tmp_path / "link"
    link.symlink_to(src.name)
    image = tmp_path / "out.img"
    assert main(["pack", "--quiet", str(link), str(image)]) == 0
    with open_image(image) as img:
        root = img.stat("/")
        assert root.mode == 0o040710
        assert root.mtime_ns == 1234567890_123456789
        assert img.xattrs("/") == {"user.origin": b"target"}
        assert img.listdir("/") == ["file"]
        assert img.read_bytes("/file") == b"data\n"


# --------------------------------------------------------------------------- lazy imports

# Runs in a fresh interpreter where importing a compression library fails; argv: IMAGE, then
# "pack SOURCE" to write IMAGE first, or "read". (shutil, which argparse uses, tries lzma and
# zlib but copes without them.)
PROBE = textwrap.dedent(
    """
    import sys
    for name in ("lz4", "zstandard", "lzma", "zlib"):
        sys.modules[name] = None
    import erofsgen, erofsgen.reader
    from erofsgen.cli import main
    image = sys.argv[1]
    if sys.argv[2] == "pack":
        assert main(["pack", "--quiet", "-T", "0", sys.argv[3], image]) == 0
    with erofsgen.open_image(image) as img:
        for top, dirs, files in img.walk("/"):
            for name in files:
                img.read_bytes(f"{top.rstrip('/')}/{name}")
    """
)


def probe(*args: str) -> subprocess.CompletedProcess[str]:
    """PROBE run with `args`."""
    return subprocess.run(
        [sys.executable, "-c", PROBE, *args], capture_output=True, text=True, check=False, cwd=ROOT
    )


def test_uncompressed_pack_and_read_load_no_compression_library(src: Path, tmp_path: Path) -> None:
    (src / "big").write_bytes(b"compressible " * 4000)
    result = probe(str(tmp_path / "plain.img"), "pack", str(src))
    assert result.returncode == 0, result.stderr


def test_compressed_image_needs_its_library(src: Path, tmp_path: Path, erofs_utils: ErofsUtils) -> None:
    """The probe's blocking works: an LZ4 image cannot be read without lz4."""
    image = tmp_path / "lz4.img"
    (src / "big").write_bytes(b"compressible " * 4000)
    erofs_utils.mkfs(image, src, "-zlz4hc")
    result = probe(str(image), "read")
    assert result.returncode == 1 and "ModuleNotFoundError" in result.stderr and "lz4" in result.stderr


def test_pack_errors_escape_raw_paths(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """Paths from the command line reach messages as `ls -b` shows them: one line, no surrogates."""
    source = os.fsdecode(bytes(tmp_path) + b"/new\nsrc\xff")
    assert main(["pack", "--quiet", source, str(tmp_path / "out.img")]) == 2
    assert capsys.readouterr().err == (
        f"erofsgen: error: {tmp_path}/new\\nsrc\\377: cannot stat: No such file or directory\n"
    )
    (tmp_path / "src").mkdir()
    image = os.fsdecode(bytes(tmp_path) + b"/no\tdir\xfe/out.img")
    assert main(["pack", "--quiet", str(tmp_path / "src"), image]) == 2
    assert capsys.readouterr().err == (
        f"erofsgen: error: {tmp_path}/no\\tdir\\376/out.img: cannot create the image: "
        "No such file or directory\n"
    )


def test_a_missing_file_is_named_as_a_path_not_as_bytes(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    missing = tmp_path / "no-such-dir"
    assert main(["mkcomposefs", str(missing), str(tmp_path / "out")]) == 2
    assert capsys.readouterr().err == f"erofsgen: error: {missing}: No such file or directory\n"
    assert not (tmp_path / "out").exists()
