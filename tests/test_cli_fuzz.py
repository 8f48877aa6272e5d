"""The read commands on damaged images: a bounded run of tools/fuzz_reader.py, the harness
itself, and regressions for what fuzzing found.

tests/test_reader_fuzz.py covers the library's walk/stat/read; this covers the commands
(`inspect`, `ls`, `cat`, `dump`, `check`, `extract`) and the check/dump/statistics APIs, run
by the fuzz tool in its own process under a memory limit and a per-case time bound.
"""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
import time
from pathlib import Path
from types import ModuleType

import pytest

import erofsgen
from erofsgen.cli import main as cli_main
from erofsgen.reader import check
from erofsgen.reader.inode import InodeInfo
from tests.support.erofs_utils import ErofsUtils
from tests.test_check import patch

ROOT = Path(__file__).resolve().parent.parent
FUZZ = ROOT / "tools" / "fuzz_reader.py"


def load_fuzz_tool() -> ModuleType:
    spec = importlib.util.spec_from_file_location("fuzz_reader", FUZZ)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules.setdefault("fuzz_reader", module)  # dataclasses look their module up by name
    spec.loader.exec_module(module)
    return module


def test_bounded_fuzz_run(erofs_utils: ErofsUtils) -> None:
    cmd = [sys.executable, str(FUZZ), "--cases", "16", "--seed", "20261127", "--timeout", "60"]
    res = subprocess.run(cmd, capture_output=True, text=True, timeout=600, check=False)
    assert res.returncode == 0, res.stdout[-6000:] + res.stderr[-3000:]
    assert "16 cases, 0 failures" in res.stdout, erofs_utils.version_text


def test_harness_reports_crashes(
    erofs_utils: ErofsUtils, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A planted non-erofsgen exception is caught and reported, not hidden."""
    tool = load_fuzz_tool()
    seeds = tool.build_seeds(tmp_path)
    original = check._Checker.check_core

    def planted(self: check._Checker, info: InodeInfo) -> None:
        if info.size == 9000:
            raise IndexError("planted")
        original(self, info)

    monkeypatch.setattr(check._Checker, "check_core", planted)
    stats = tool.Stats()
    seed = seeds[0]
    tool.run_case(0, seed, seed.image, ["none"], tmp_path, 60.0, stats)
    assert stats.cases == 1 and len(stats.failures) == 1
    assert "IndexError: planted" in stats.failures[0].detail


def _sparse_terabyte(utils: ErofsUtils, tmp: Path) -> Path:
    """A chunk-based file claiming 1 TiB: one 8 TiB chunk, a hole."""
    src = tmp / "src"
    src.mkdir()
    (src / "f").write_bytes(os.urandom(20000))
    image = tmp / "img"
    utils.mkfs(image, src, "--quiet", "--chunksize=8192")
    with erofsgen.open_image(image) as img:
        info = img.inode(img.lookup("f"))
    assert info.version == 1 and info.chunk_array_offset is not None  # extended: 64-bit i_size
    patch(image, info.offset + 8, (1 << 40).to_bytes(8, "little"))
    fmt = 0x1F | (info.chunk_format or 0) & 0x20
    patch(image, info.offset + 16, fmt.to_bytes(2, "little"))
    entry_end = info.chunk_array_offset + info.chunk_entry_size
    patch(image, entry_end - 4, b"\xff\xff\xff\xff")
    return image


def test_extract_skips_huge_holes(erofs_utils: ErofsUtils, tmp_path: Path) -> None:
    """Found by fuzzing: extract used to read a sparse file's zeros, forever for 1 TiB."""
    image = _sparse_terabyte(erofs_utils, tmp_path)
    out = tmp_path / "out"
    started = time.monotonic()
    assert cli_main(["extract", "--quiet", str(image), str(out)]) == 0
    assert time.monotonic() - started < 30
    st = (out / "f").stat()
    assert st.st_size == 1 << 40 and st.st_blocks == 0
    assert cli_main(["check", "--data", "--quiet", str(image)]) == 0
