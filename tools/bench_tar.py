#!/usr/bin/env python3
"""Benchmark packing a tar stream against packing the directory it was made from.

Usage: tools/bench_tar.py [SOURCE] [--runs N] [--keep DIR]

SOURCE (default /usr/share) is packed, round after round, by:

* A `tar -cf - SOURCE | erofsgen pack - IMAGE` (the measured one: GNU tar writes the archive to
  the pipe while erofsgen reads it, so the time is the pipeline's; peak RSS is the larger of
  the two processes);
* B `erofsgen pack SOURCE IMAGE`, the directory itself;
* C `tar -cf - SOURCE | mkfs.erofs --tar=f IMAGE`, when the mkfs.erofs on PATH has `--tar`
  (erofs-utils 1.6+; 1.5 has not, which is said and the column left out).

Every image is written with `-T 0`. Medians, the per-round ratios A/B (and A/C) and the load
average before and after come from benchlib. Then, once, the tar index mode: the archive is
saved to a file and `erofsgen pack --tar=i` timed on it, with the archive's and each image's
size. The erofsgen measured is the one Python imports (run with PYTHONPATH=$PWD for a checkout).
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
from benchlib import Command, compare_all, load, run_once, tool_version

MB = 1e6


def mkfs_has_tar(mkfs: str) -> bool:
    """Whether this mkfs.erofs takes `--tar` (its usage text lists it)."""
    out = subprocess.run([mkfs, "--help"], capture_output=True, text=True, check=False)
    return "--tar" in out.stdout + out.stderr


def tar_pipe(source: Path, consumer: list[str]) -> list[str]:
    """argv of `tar -cf - SOURCE | CONSUMER` (tar run from SOURCE's parent, as `tar -C`)."""
    tar = shlex.join(["tar", "-cf", "-", "-C", str(source.parent), source.name])
    return ["bash", "-c", f"set -o pipefail; {tar} | {shlex.join(consumer)}"]


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("source", nargs="?", default="/usr/share", type=Path)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument(
        "--keep", type=Path, help="write the images and the archive here (default: a temp dir)"
    )
    args = parser.parse_args()
    source = args.source.resolve()
    work = args.keep or Path(tempfile.mkdtemp(prefix="erofsgen-bench-tar-", dir="/var/tmp"))
    work.mkdir(parents=True, exist_ok=True)
    erofsgen = [sys.executable, "-m", "erofsgen", "pack", "--quiet", "-T", "0"]
    commands: list[Command] = [
        ("tar|pack -", tar_pipe(source, [*erofsgen, "-", str(work / "stream.img")])),
        ("pack DIR", [*erofsgen, str(source), str(work / "dir.img")]),
    ]
    mkfs = shutil.which("mkfs.erofs")
    if mkfs is None:
        print("mkfs.erofs: not installed, no --tar=f reference")
    elif not mkfs_has_tar(mkfs):
        print(f"{tool_version([mkfs, '-V'])}: no --tar option (erofs-utils 1.6+), no --tar=f reference")
    else:
        print(f"reference: {tool_version([mkfs, '-V'])}")
        commands.append(
            ("mkfs --tar=f", tar_pipe(source, [mkfs, "--quiet", "-T0", "--tar=f", str(work / "mkfs.img")]))
        )
    try:
        compare_all(commands, args.runs)
        archive = work / "source.tar"
        subprocess.run(["tar", "-cf", str(archive), "-C", str(source.parent), source.name], check=True)
        index_image = work / "index.img"
        index = run_once([*erofsgen, "--tar=i", str(archive), str(index_image)])
        print(f"{load()}")
        rss = index.maxrss_kib / 1024
        print(f"index mode: erofsgen pack --tar=i ARCHIVE: {index.wall:.3f} s, peak RSS {rss:.1f} MiB")
        tar_size = archive.stat().st_size
        print(f"archive {tar_size / MB:.1f} MB")
        for name in ("stream.img", "dir.img", "mkfs.img", "index.img"):
            path = work / name
            if path.exists():
                size = path.stat().st_size
                print(f"{name:11} {size / MB:9.1f} MB  ({100 * size / tar_size:.2f}% of the archive)")
    finally:
        if args.keep is None:
            shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    if os.geteuid() != 0:
        print("note: not root; files root cannot read are skipped by tar and refused by pack")
    main()
