"""erofs-utils (mkfs.erofs, fsck.erofs, dump.erofs): the reference writer and checker."""

from __future__ import annotations

import functools
import os
import re
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

_TIMEOUT = 600  # seconds; a scenario-sized image takes well under one
_EXTRA_DIRS = ("/usr/sbin", "/sbin", "/usr/bin", "/bin", "/usr/local/bin")
_VERSION_RE = re.compile(r"\b(\d+)\.(\d+)(?:\.(\d+))?")


class ToolError(RuntimeError):
    """An erofs-utils command failed."""

    def __init__(self, result: subprocess.CompletedProcess[str]) -> None:
        cmd = " ".join(map(str, result.args))
        super().__init__(
            f"{cmd} exited {result.returncode}\n--- stdout:\n{result.stdout[-4000:]}\n"
            f"--- stderr:\n{result.stderr[-4000:]}"
        )
        self.result = result


def parse_version(text: str) -> tuple[int, int, int] | None:
    """(major, minor, patch) from output such as 'fsck.erofs 1.5' or 'mkfs.erofs 1.8.10-g1a2b'."""
    m = _VERSION_RE.search(text)
    return None if m is None else (int(m[1]), int(m[2]), int(m[3] or 0))


def _which(name: str) -> str | None:
    # CI may run with a PATH that lacks the sbin directories.
    path = os.pathsep.join([os.environ.get("PATH", ""), *_EXTRA_DIRS])
    return shutil.which(name, path=path)


def _run(cmd: list[str], *, check: bool) -> subprocess.CompletedProcess[str]:
    # surrogateescape keeps non-UTF-8 file names in dump output round-trippable.
    res = subprocess.run(
        cmd, capture_output=True, text=True, errors="surrogateescape", timeout=_TIMEOUT, check=False
    )
    if check and res.returncode != 0:
        raise ToolError(res)
    return res


@dataclass(frozen=True)
class ErofsUtils:
    mkfs_path: str
    fsck_path: str
    dump_path: str
    version: tuple[int, int, int]
    version_text: str  # first line the tool printed, e.g. "fsck.erofs 1.5"

    def mkfs(self, image: Path, src: Path, *opts: str) -> subprocess.CompletedProcess[str]:
        """mkfs.erofs [opts] IMAGE SRC; raises ToolError on failure."""
        return _run([self.mkfs_path, *opts, str(image), str(src)], check=True)

    def fsck(self, image: Path, *opts: str, check: bool = False) -> subprocess.CompletedProcess[str]:
        """fsck.erofs [opts] IMAGE; the caller judges the result unless check=True."""
        return _run([self.fsck_path, *opts, str(image)], check=check)

    def dump(self, image: Path, *opts: str) -> str:
        """dump.erofs [opts] IMAGE, returning its standard output; raises ToolError on failure."""
        return _run([self.dump_path, *opts, str(image)], check=True).stdout


def _probe_version(tools: list[str]) -> tuple[tuple[int, int, int], str] | None:
    # mkfs.erofs only learnt -V after 1.5; fsck/dump have it and come from the same package.
    for tool in tools:
        res = _run([tool, "-V"], check=False)
        line = next(iter((res.stdout + res.stderr).strip().splitlines()), "")
        version = parse_version(line) if res.returncode == 0 else None
        if version is not None:
            return version, line
    return None


@functools.cache
def find_erofs_utils() -> ErofsUtils | None:
    """The installed erofs-utils, or None when any of the three tools is missing."""
    paths = [_which(name) for name in ("mkfs.erofs", "fsck.erofs", "dump.erofs")]
    mkfs_path, fsck_path, dump_path = paths
    if mkfs_path is None or fsck_path is None or dump_path is None:
        return None
    probed = _probe_version([mkfs_path, fsck_path, dump_path])
    if probed is None:
        return None
    return ErofsUtils(mkfs_path, fsck_path, dump_path, *probed)


def unavailable_reason() -> str | None:
    if find_erofs_utils() is None:
        return "erofs-utils (mkfs.erofs, fsck.erofs, dump.erofs with -V) not installed"
    return None


def _require() -> ErofsUtils:
    utils = find_erofs_utils()
    if utils is None:
        raise ToolError(subprocess.CompletedProcess(["mkfs.erofs"], 127, "", "erofs-utils not installed"))
    return utils


def mkfs(image: Path, src: Path, *opts: str) -> subprocess.CompletedProcess[str]:
    return _require().mkfs(image, src, *opts)


def fsck(image: Path, *opts: str, check: bool = False) -> subprocess.CompletedProcess[str]:
    return _require().fsck(image, *opts, check=check)


def dump(image: Path, *opts: str) -> str:
    return _require().dump(image, *opts)
