#!/usr/bin/env python3
"""Benchmark `erofsgen extract` against `fsck.erofs --extract` on a real tree (default /usr/share/doc).

Usage: tools/bench_read.py [SOURCE] [--runs N] [--keep DIR] [--mkfs-options "..."]
The tree is packed once with `mkfs.erofs -zlz4hc`; then both tools extract the image into a
fresh, empty destination, alternately (A B A B ...). Removing the destination happens between
runs and is not timed. Prints medians and the median pairwise ratios of wall time and peak RSS
(target: erofsgen within 2x of fsck.erofs in wall time).
"""

from __future__ import annotations

import argparse
import os
import shlex
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from benchlib import compare, tool_version


def _tool(name: str) -> str:
    found = shutil.which(name, path=os.environ.get("PATH", "") + ":/usr/sbin:/sbin")
    if found is None:
        sys.exit(f"{name} not found (apt-get install erofs-utils)")
    return found


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("source", nargs="?", default="/usr/share/doc")
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--keep", help="directory for the image and destinations (default: temporary)")
    parser.add_argument("--mkfs-options", default="-zlz4hc", help="options for mkfs.erofs (default -zlz4hc)")
    args = parser.parse_args()
    mkfs, fsck = _tool("mkfs.erofs"), _tool("fsck.erofs")
    work = Path(args.keep or tempfile.mkdtemp(prefix="bench-read-"))
    work.mkdir(parents=True, exist_ok=True)
    image, dest = work / "image.erofs", work / "dest"
    opts = shlex.split(args.mkfs_options)
    subprocess.run([mkfs, "--quiet", *opts, str(image), args.source], check=True)
    print(f"source {args.source}; image {image.stat().st_size} bytes (mkfs.erofs {' '.join(opts)})")
    print(f"erofs-utils: {tool_version([fsck, '-V'])}; {os.cpu_count()} cpus; euid {os.geteuid()}")

    def fresh_dest() -> None:
        shutil.rmtree(dest, ignore_errors=True)

    argv_a = [sys.executable, "-m", "erofsgen", "extract", "--quiet", str(image), str(dest)]
    argv_b = [fsck, f"--extract={dest}", str(image)]
    compare("erofsgen", argv_a, "fsck.erofs", argv_b, args.runs, before_each=fresh_dest)
    fresh_dest()
    if not args.keep:
        shutil.rmtree(work)
    return 0


if __name__ == "__main__":
    sys.exit(main())
