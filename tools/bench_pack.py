#!/usr/bin/env python3
"""Benchmark `erofsgen pack` against `mkfs.erofs` on a real or generated tree.

Usage: tools/bench_pack.py [SOURCE] [--runs N] [--keep DIR] [--options "-T 0 ..."]
                           [--tiny N] [--mkfs PATH]...
SOURCE defaults to /usr/share. `--tiny N` packs a generated tree of N tiny files in nested
directories instead (made once, kept under /var/tmp). Every tool writes an uncompressed image
with the same options; the page cache is warmed by a first run of each, then the tools run in
turn, round after round. Prints median wall time and peak RSS of each, the median of the
per-round ratios against every mkfs.erofs given (the first is the one on PATH unless --mkfs is
used), per-inode figures and the image sizes.
"""

from __future__ import annotations

import argparse
import os
import shlex
import shutil
import statistics
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from benchlib import Command, compare_all, tool_version

FILES_PER_DIR = 100


def tiny_tree(count: int) -> Path:
    """A tree of `count` files of 0-99 bytes, 100 to a directory, three directory levels deep.

    Made once and reused (a marker file says it is complete), so runs compare the same tree.
    """
    root = Path(f"/var/tmp/erofsgen-bench-tiny-{count}")
    marker = root / ".complete"
    if marker.exists():
        return root
    shutil.rmtree(root, ignore_errors=True)
    leaves = -(-count // FILES_PER_DIR)
    per_top = max(1, -(-leaves // 30))
    made = 0
    for leaf in range(leaves):
        top, mid = divmod(leaf, per_top)
        directory = root / f"d{top:03d}" / f"e{mid:04d}"
        directory.mkdir(parents=True)
        for i in range(min(FILES_PER_DIR, count - made)):
            (directory / f"file-{i:03d}.txt").write_bytes(b"x" * ((made + i) % 100))
        made += FILES_PER_DIR
    marker.touch()
    return root


def count_inodes(source: str) -> int:
    total = 1
    for _, dirs, files in os.walk(source):
        total += len(dirs) + len(files)
    return total


def main() -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("source", nargs="?", default="/usr/share")
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--keep", help="directory for the images (default: a temporary one)")
    parser.add_argument("--options", default="", help='options given to every tool, e.g. "-T 0 -x -1"')
    parser.add_argument("--tiny", type=int, metavar="N", help="pack a generated tree of N tiny files")
    parser.add_argument(
        "--mkfs", action="append", default=[], metavar="PATH", help="a mkfs.erofs to compare with (repeated)"
    )
    args = parser.parse_args()
    default_mkfs = shutil.which("mkfs.erofs")
    if not args.mkfs and default_mkfs is None:
        sys.exit("mkfs.erofs not found (apt-get install erofs-utils)")
    mkfs_paths: list[str] = args.mkfs or [default_mkfs]
    source = str(tiny_tree(args.tiny)) if args.tiny else args.source
    out = Path(args.keep or tempfile.mkdtemp(prefix="bench-pack-"))
    out.mkdir(parents=True, exist_ok=True)
    extra = shlex.split(args.options)
    inodes = count_inodes(source)
    print(f"source {source}: {inodes} inodes; {os.cpu_count()} cpus")
    ours = out / "erofsgen.img"
    commands: list[Command] = [
        ("erofsgen", [sys.executable, "-m", "erofsgen", "pack", "--quiet", *extra, source, str(ours)])
    ]
    images = [ours]
    for i, mkfs in enumerate(mkfs_paths):
        version = tool_version([mkfs, "-V"]).split()[-1]
        image = out / f"mkfs-{i}.img"
        images.append(image)
        commands.append((f"mkfs.erofs {version}", [mkfs, "--quiet", *extra, str(image), source]))
    results = compare_all(commands, args.runs)
    for (name, _), runs, image in zip(commands, results, images, strict=True):
        wall = statistics.median(r.wall for r in runs)
        rss = statistics.median(r.maxrss_kib for r in runs) * 1024
        print(
            f"{name:20} {wall / inodes * 1e6:7.1f} µs/inode {rss / inodes:7.0f} B peak RSS/inode"
            f"  image {image.stat().st_size} B"
        )
    if not args.keep:
        shutil.rmtree(out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
