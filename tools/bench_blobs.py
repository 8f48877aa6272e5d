#!/usr/bin/env python3
"""Benchmark chunked packing: against mkfs.erofs --blobdev, and a re-pack into a blob store.

Usage: tools/bench_blobs.py [--source DIR] [--repack-source DIR] [--runs N] [--chunksize N]
                            [--skip-mkfs] [--skip-repack]

1. `erofsgen pack --chunksize N --blobdev B` vs `mkfs.erofs --chunksize=N --blobdev=B` on
   --source (default /usr/share), alternating, round after round: the median per-round wall
   time ratio and the blob bytes ratio (and image + blob bytes).
2. Re-pack: a copy of --repack-source (default /usr/lib, copied once under /var/tmp) is packed
   into a fresh store (first pack), then about 10% of its bytes change (some files rewritten
   whole, some changed in a 64 KiB region in the middle) and it is packed into the same store
   again (second pack), which reuses the unchanged chunks and, through the store's stat cache,
   does not read the unchanged files. Prints the median per-round ratio second/first and the
   store's growth. The benchmark's own writes (the changes, the removed store) are synced
   before each timed pack, so neither pack pays for flushing them.
"""

from __future__ import annotations

import argparse
import os
import random
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from benchlib import compare_all, load, run_once, tool_version

WORK = Path("/var/tmp/erofsgen-bench-blobs")
CHANGED_SHARE = 0.10
MIDDLE_CHANGE = 64 << 10
SETTLE_S = 2.1  # files changed more recently than 2 s are never taken from the stat cache
EROFSGEN = [sys.executable, "-m", "erofsgen"]


def compare_with_mkfs(source: str, runs: int, chunk: int) -> None:
    out = WORK / "mkfs-compare"
    shutil.rmtree(out, ignore_errors=True)
    out.mkdir(parents=True)
    ours_img, ours_blob = out / "erofsgen.img", out / "erofsgen.blob"
    mkfs_img, mkfs_blob = out / "mkfs.img", out / "mkfs.blob"
    print(f"== chunked pack vs {tool_version(['mkfs.erofs', '-V'])} on {source}, chunk size {chunk}")
    common = ["--quiet", "-T0", f"--chunksize={chunk}"]
    commands = [
        ("erofsgen", [*EROFSGEN, "pack", *common, f"--blobdev={ours_blob}", source, str(ours_img)]),
        ("mkfs.erofs", ["mkfs.erofs", *common, f"--blobdev={mkfs_blob}", str(mkfs_img), source]),
    ]
    compare_all(commands, runs)
    ours = ours_blob.stat().st_size
    theirs = mkfs_blob.stat().st_size
    print(f"blob bytes: erofsgen {ours}, mkfs.erofs {theirs}: ratio {ours / theirs:.3f}x")
    ours_all = ours + ours_img.stat().st_size
    theirs_all = theirs + mkfs_img.stat().st_size
    print(f"image + blob bytes: erofsgen {ours_all}, mkfs.erofs {theirs_all}: {ours_all / theirs_all:.3f}x")
    shutil.rmtree(out)


def _copy_tree(source: str) -> Path:
    """A private copy of `source` (regular files, directories, symlinks), made once."""
    tree = WORK / ("tree-" + source.strip("/").replace("/", "_"))
    marker = WORK / (tree.name + ".complete")
    if not marker.exists():
        shutil.rmtree(tree, ignore_errors=True)
        print(f"copying {source} to {tree} (once)")
        subprocess.run(["cp", "-a", "--no-preserve=links", source, str(tree)], check=False)
        marker.touch()
    return tree


def _changes(tree: Path) -> list[tuple[Path, bytes, bytes]]:
    """(file, original, changed) for about CHANGED_SHARE of the tree's bytes, chosen reproducibly."""
    files = sorted(
        p for p in tree.rglob("*") if p.is_file() and not p.is_symlink() and p.stat().st_size >= 4096
    )
    total = sum(p.stat().st_size for p in files)
    rng = random.Random(0)
    rng.shuffle(files)
    changes = []
    changed = 0
    for path in files:
        if changed >= CHANGED_SHARE * total:
            break
        original = path.read_bytes()
        if len(original) >= 4 * MIDDLE_CHANGE:
            middle = len(original) // 2
            new = original[:middle] + rng.randbytes(MIDDLE_CHANGE) + original[middle + MIDDLE_CHANGE :]
            changed += len(original)  # counted whole: the target is a tree of which 90% is untouched files
        else:
            new = rng.randbytes(len(original))
            changed += len(original)
        changes.append((path, original, new))
    print(f"changes: {len(changes)} of {len(files)} files, {changed} of {total} bytes in changed files")
    return changes


def _apply(changes: list[tuple[Path, bytes, bytes]], which: int) -> None:
    for path, original, changed in changes:
        path.write_bytes(changed if which else original)


def repack(source: str, runs: int, chunk: int) -> None:
    tree = _copy_tree(source)
    changes = _changes(tree)
    store = WORK / "store"
    image = WORK / "repack.img"
    pack = [
        *EROFSGEN,
        "pack",
        "--quiet",
        "-T0",
        f"--chunksize={chunk}",
        f"--blob-store={store}",
        str(tree),
        str(image),
    ]
    print(f"== re-pack of {source} ({tree}) into one store, chunk size {chunk}; {load()}")
    ratios = []
    for round_no in range(runs + 1):  # the first round warms the page cache and is not counted
        _apply(changes, 0)
        shutil.rmtree(store, ignore_errors=True)
        os.sync()  # the benchmark's own writes are not the pack's to flush
        time.sleep(SETTLE_S)
        first = run_once(pack)
        stored_first = _stored(store)
        _apply(changes, 1)
        os.sync()
        second = run_once(pack)
        stored_second = _stored(store)
        ratio = second.wall / first.wall
        label = "warm-up" if round_no == 0 else f"round {round_no}"
        print(
            f"{label}: first {first.wall:.3f} s, second {second.wall:.3f} s, ratio {ratio:.3f}x; "
            f"store {stored_first} B after the first, +{stored_second - stored_first} B after the second"
        )
        if round_no:
            ratios.append(ratio)
    _apply(changes, 0)
    print(f"re-pack ratio second/first (median per round): {statistics.median(ratios):.3f}x; {load()}")


def _stored(store: Path) -> int:
    blobs = store / "blobs" / "sha256"
    return sum(p.stat().st_size for p in blobs.iterdir()) if blobs.exists() else 0


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--source", default="/usr/share")
    parser.add_argument("--repack-source", default="/usr/lib")
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--chunksize", type=int, default=65536)
    parser.add_argument("--skip-mkfs", action="store_true")
    parser.add_argument("--skip-repack", action="store_true")
    args = parser.parse_args()
    WORK.mkdir(parents=True, exist_ok=True)
    print(f"cpus {os.cpu_count()}, python {sys.version.split()[0]}")
    if not args.skip_mkfs:
        compare_with_mkfs(args.source, args.runs, args.chunksize)
    if not args.skip_repack:
        repack(args.repack_source, args.runs, args.chunksize)
    return 0


if __name__ == "__main__":
    sys.exit(main())
