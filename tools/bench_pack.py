#!/usr/bin/env python3
"""Benchmark `erofsgen pack` against `mkfs.erofs` on a real tree (default /usr/share).

Usage: tools/bench_pack.py [SOURCE] [--runs N] [--keep DIR] [--options "-T 0 ..."]
Both tools write uncompressed images with the same options into the same directory; the page
cache is warmed by a first run of each. Prints medians, ratios A/B and both image sizes.
"""

from __future__ import annotations

import argparse
import os
import shlex
import shutil
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from benchlib import compare, tool_version


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("source", nargs="?", default="/usr/share")
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--keep", help="directory for the images (default: a temporary one)")
    parser.add_argument("--options", default="", help='options given to both tools, e.g. "-T 0 -x -1"')
    args = parser.parse_args()
    mkfs = shutil.which("mkfs.erofs")
    if mkfs is None:
        sys.exit("mkfs.erofs not found (apt-get install erofs-utils)")
    out = Path(args.keep or tempfile.mkdtemp(prefix="bench-pack-"))
    out.mkdir(parents=True, exist_ok=True)
    ours, theirs = out / "erofsgen.img", out / "mkfs.img"
    version = tool_version([shutil.which("dump.erofs") or mkfs, "-V"])
    print(f"source {args.source}; erofs-utils: {version}; {os.cpu_count()} cpus")
    extra = shlex.split(args.options)
    argv_a = [sys.executable, "-m", "erofsgen", "pack", "--quiet", *extra, args.source, str(ours)]
    argv_b = [mkfs, "--quiet", *extra, str(theirs), args.source]
    compare("erofsgen", argv_a, "mkfs.erofs", argv_b, args.runs)
    a, b = ours.stat().st_size, theirs.stat().st_size
    print(f"image size: erofsgen {a} B, mkfs.erofs {b} B, ratio {a / b:.4f}")
    if not args.keep:
        shutil.rmtree(out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
