"""Packaging: the sdist and wheel contents and metadata, the generated man page and completion."""

from __future__ import annotations

import argparse
import email
import email.message
import shutil
import subprocess
import sys
import tarfile
import tomllib
import zipfile
from pathlib import Path

import pytest

import erofsgen
from erofsgen.cli import COMMANDS, build_parser, command_parsers
from erofsgen.cli.pack import EXTENDED_NOT_YET_SUPPORTED, NOT_YET_SUPPORTED

ROOT = Path(__file__).resolve().parents[1]
# What a build never needs; caches and earlier builds would only slow the copy down.
NOT_COPIED = shutil.ignore_patterns(
    ".git", ".venv", "__pycache__", "*.egg-info", "build", "dist", ".*_cache", ".hypothesis", ".benchmarks"
)


@pytest.fixture(scope="module")
def dist(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """sdist and wheel built offline (the wheel from the sdist) from a copy of the checkout."""
    work = tmp_path_factory.mktemp("build")
    shutil.copytree(ROOT, work / "src", ignore=NOT_COPIED)
    result = subprocess.run(
        [sys.executable, "-m", "build", "--no-isolation", "--outdir", str(work / "dist"), str(work / "src")],
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    return work / "dist"


def _one(directory: Path, pattern: str) -> Path:
    (found,) = directory.glob(pattern)
    return found


def test_sdist_carries_the_package_and_no_tests(dist: Path) -> None:
    sdist = _one(dist, "erofsgen-*.tar.gz")
    top = f"erofsgen-{erofsgen.__version__}/"
    with tarfile.open(sdist) as tar:
        names = {name.removeprefix(top) for name in tar.getnames()}
    sources = {str(p.relative_to(ROOT)) for p in (ROOT / "erofsgen").rglob("*.py")}
    assert sources <= names
    for name in ("erofsgen/py.typed", "LICENSE", "README.md", "pyproject.toml", "man/erofsgen.1"):
        assert name in names
    assert "completions/erofsgen.bash" in names
    # The suite needs the repository (root, kernel, erofs-utils, specs vectors): not shipped.
    assert not {n for n in names if n.split("/")[0] in ("tests", "tools", "specs", ".ci")}
    assert not {n for n in names if "__pycache__" in n or n.endswith(".pyc")}


def _metadata(dist: Path) -> email.message.Message:
    with zipfile.ZipFile(_one(dist, "erofsgen-*.whl")) as wheel:
        names = wheel.namelist()
        assert f"erofsgen-{erofsgen.__version__}.dist-info/licenses/LICENSE" in names
        assert "erofsgen/py.typed" in names
        assert not [n for n in names if n.startswith(("tests/", "tools/"))]
        text = wheel.read(f"erofsgen-{erofsgen.__version__}.dist-info/METADATA").decode()
    return email.message_from_string(text)


def test_wheel_metadata(dist: Path) -> None:
    meta = _metadata(dist)
    assert meta["Version"] == erofsgen.__version__
    assert meta["License-Expression"] == "Apache-2.0"
    assert meta["License-File"] == "LICENSE"
    classifiers = set(meta.get_all("Classifier") or [])
    for classifier in (
        "Typing :: Typed",
        "Operating System :: POSIX :: Linux",
        "Programming Language :: Python :: 3.11",
        "Programming Language :: Python :: 3.12",
        "Programming Language :: Python :: 3.13",
        "Topic :: System :: Filesystems",
    ):
        assert classifier in classifiers
    urls = dict(url.split(", ", 1) for url in meta.get_all("Project-URL") or [])
    assert set(urls) == {"Homepage", "Repository", "Issues"}
    assert all(url.startswith("https://github.com/erofsgen/erofsgen") for url in urls.values())
    assert meta["Requires-Python"] == ">=3.11"


def test_license_is_the_apache_license() -> None:
    text = (ROOT / "LICENSE").read_text()
    assert "Apache License\n                           Version 2.0, January 2004" in text
    assert "END OF TERMS AND CONDITIONS" in text and len(text) > 11000


# --------------------------------------------------------------------------- man page and completion


def test_generated_docs_are_up_to_date() -> None:
    result = subprocess.run(
        [sys.executable, str(ROOT / "tools" / "gen_docs.py"), "--check"],
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 0, result.stderr


def _visible_options(parser: argparse.ArgumentParser) -> set[str]:
    return {
        opt for action in parser._actions if action.help != argparse.SUPPRESS for opt in action.option_strings
    }


def test_man_page_documents_every_command_and_option() -> None:
    page = (ROOT / "man" / "erofsgen.1").read_text().replace("\\-", "-")
    assert f'"erofsgen {erofsgen.__version__}"' in page
    for name, parser in command_parsers(build_parser()).items():
        assert f".SS {name}\n" in page
        for option in _visible_options(parser):
            assert option in page, (name, option)
    for option in (*NOT_YET_SUPPORTED, *EXTENDED_NOT_YET_SUPPORTED):
        assert option in page


def test_man_page_is_valid_roff() -> None:
    groff = shutil.which("groff")
    if groff is None:
        pytest.skip("groff is not installed")
    result = subprocess.run(
        [groff, "-man", "-Tutf8", "-ww", "-z", str(ROOT / "man" / "erofsgen.1")],
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 0 and result.stderr == "", result.stderr


def complete(*words: str) -> list[str]:
    """What the bash completion offers for the command line `words` (the last one being typed)."""
    script = (
        f"source {ROOT / 'completions' / 'erofsgen.bash'}\n"
        'COMP_WORDS=("$@"); COMP_CWORD=$(($# - 1)); _erofsgen; printf "%s\\n" "${COMPREPLY[@]}"\n'
    )
    result = subprocess.run(
        ["bash", "-c", script, "bash", "erofsgen", *words], capture_output=True, text=True, check=True
    )
    return result.stdout.split()


def test_bash_completion() -> None:
    assert complete("pa") == ["pack"]
    assert complete("") == ["--help", "--version", "-h", *COMMANDS]
    assert complete("pack", "--excl") == ["--exclude-path", "--exclude-regex"]
    assert complete("pack", "-b", "") == ["512", "1024", "2048", "4096"]
    assert complete("check", "--st") == ["--strict"]
    assert "--exclude-path" not in complete("ls", "--")


# --------------------------------------------------------------------------- test configuration


def test_slow_marker_is_used_and_ci_runs_slow_tests() -> None:
    pyproject = tomllib.loads((ROOT / "pyproject.toml").read_text())
    options = pyproject["tool"]["pytest"]["ini_options"]
    assert any(marker.startswith("slow:") for marker in options["markers"])
    assert "-m" not in options["addopts"].split()
    used = [p.name for p in (ROOT / "tests").glob("test_*.py") if "pytest.mark.slow" in p.read_text()]
    assert used
    # CI is .ci/run -> tools/test -> pytest with no marker expression: slow tests run there.
    assert "exec tools/test\n" in (ROOT / ".ci" / "run").read_text()
    assert "not slow" not in (ROOT / "tools" / "test").read_text()
