#!/usr/bin/env python3
"""Benchmark `erofsgen extract` against `fsck.erofs --extract` on a real tree.

Usage: tools/bench_read.py [SOURCE] [--mode plain|lz4hc] [--runs N] [--mkfs-options "..."]
                           [--no-tmpfs] [--keep DIR]

Mode `plain` (the default) packs SOURCE (default /usr/share) uncompressed with mkfs.erofs;
mode `lz4hc` packs it (default /usr/share/doc) with -zlz4hc. The image and both destinations
live on a tmpfs mounted in a temporary directory for the run (unmounted afterwards; needs
root, or --no-tmpfs), so the disk does not decide the result. Both tools then extract the
image into a fresh, empty destination, alternately (A B A B ...); removing the destination
happens between runs and is not timed. Prints the median wall time of each tool, the median of
the per-round ratios, peak RSS (rusage of each child, from os.wait4) and the load average
before and after, which says how far the figures can be trusted.
"""

from __future__ import annotations

import argparse
import os
import shlex
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from benchlib import compare, tool_version

MODES = {"plain": ("/usr/share", ""), "lz4hc": ("/usr/share/doc", "-zlz4hc")}
REPO = Path(__file__).resolve().parents[1]


def _tool(name: str) -> str:
    found = shutil.which(name, path=os.environ.get("PATH", "") + ":/usr/sbin:/sbin")
    if found is None:
        sys.exit(f"{name} not found (apt-get install erofs-utils)")
    return found


@contextmanager
def _workdir(keep: str | None, tmpfs: bool) -> Iterator[Path]:
    """The directory holding image and destinations: a fresh tmpfs unless told otherwise."""
    base = Path(keep) if keep else Path(tempfile.mkdtemp(prefix="bench-read-"))
    base.mkdir(parents=True, exist_ok=True)
    if tmpfs:
        if os.geteuid() != 0:
            sys.exit("mounting a tmpfs needs root (or pass --no-tmpfs)")
        subprocess.run(["mount", "-t", "tmpfs", "-o", "mode=0755", "tmpfs", str(base)], check=True)
    try:
        yield base
    finally:
        if tmpfs:
            subprocess.run(["umount", str(base)], check=True)
        if not keep:
            shutil.rmtree(base, ignore_errors=True)


def _load() -> str:
    return " ".join(f"{x:.2f}" for x in os.getloadavg())


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("source", nargs="?", help="tree to pack (default: per mode)")
    parser.add_argument("--mode", choices=sorted(MODES), default="plain", help="image kind (default plain)")
    parser.add_argument("--runs", type=int, default=5, help="rounds after one warm-up each (default 5)")
    parser.add_argument("--keep", help="directory for the image and destinations (default: temporary)")
    parser.add_argument("--mkfs-options", help="options for mkfs.erofs (default: per mode)")
    parser.add_argument("--no-tmpfs", action="store_true", help="work in the directory as it is")
    args = parser.parse_args()
    source = args.source or MODES[args.mode][0]
    opts = shlex.split(args.mkfs_options if args.mkfs_options is not None else MODES[args.mode][1])
    mkfs, fsck = _tool("mkfs.erofs"), _tool("fsck.erofs")
    with _workdir(args.keep, not args.no_tmpfs) as work:
        image, dest = work / "image.erofs", work / "dest"
        subprocess.run([mkfs, "--quiet", *opts, str(image), source], check=True)
        where = "tmpfs" if not args.no_tmpfs else str(work)
        size = image.stat().st_size
        print(f"source {source}; image {size} bytes (mkfs.erofs {shlex.join(opts)}) on {where}")
        print(f"erofs-utils: {tool_version([fsck, '-V'])}; {os.cpu_count()} cpus; euid {os.geteuid()}")
        print(f"load average before: {_load()}")

        def fresh_dest() -> None:
            shutil.rmtree(dest, ignore_errors=True)

        env_cmd = [sys.executable, "-m", "erofsgen", "extract", "--quiet", str(image), str(dest)]
        argv_b = [fsck, f"--extract={dest}", str(image)]
        os.chdir(REPO)  # `-m erofsgen` imports the erofsgen of this checkout
        compare("erofsgen", env_cmd, "fsck.erofs", argv_b, args.runs, before_each=fresh_dest)
        fresh_dest()
        print(f"load average after: {_load()}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
