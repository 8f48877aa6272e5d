#!/usr/bin/env python3
"""Benchmark composefs image builds with a digest store, and the fs-verity digest itself.

Usage: tools/bench_composefs.py [SOURCE] [--runs N] [--threads N] [--mkcomposefs PATH] [--verity-mib N]

1. `erofsgen mkcomposefs --digest-store STORE SOURCE IMAGE` (default SOURCE /usr/share), with a
   fresh store every round (removed and synced before the timed run, so no build finds its
   objects already there nor pays for flushing the last removal); with --mkcomposefs PATH,
   composefs's own mkcomposefs run the same way, in turn, round after round. Prints median wall
   time, files/s (entries of SOURCE per second), MB/s (bytes of its regular files per second),
   peak RSS, the median per-round ratios, and whether both wrote the same image and objects.
2. The same builds with `--print-digest-only` (no store, no image): the scan, the digests and
   the layout alone, which the store's synced writes hide in (1).
3. fs-verity digest against hashlib.sha256 on the same data, one thread, best of a few passes:
   in memory (tools/bench_verity.py) and over SOURCE's regular files (from the page cache).

The erofsgen measured is the one Python imports (run with PYTHONPATH=$PWD for a checkout).
Peak RSS: a child's ru_maxrss starts at its parent's RSS at fork (Linux keeps the forked copy's
high-water mark across exec), so each build is started by GNU time when it is installed (a
parent of about 2 MiB), else by a small Python parent; the floor that parent sets (the figure
for `true`) is printed with the results.
"""

from __future__ import annotations

import argparse
import os
import shutil
import stat
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Sequence
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_verity import in_memory, throughput
from benchlib import Command, Run, load, report

WORK = Path("/var/tmp/erofsgen-bench-composefs")
EROFSGEN = [sys.executable, "-m", "erofsgen"]
GNU_TIME = "/usr/bin/time"
_PYTHON_PARENT = (
    "import resource, subprocess, sys\n"
    "code = subprocess.run(sys.argv[2:], stdout=subprocess.DEVNULL).returncode\n"
    "with open(sys.argv[1], 'w') as out:\n"
    "    out.write(str(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss))\n"
    "sys.exit(code)\n"
)


def measured_run(argv: Sequence[str]) -> Run:
    """Wall time, peak RSS (from a small parent) and CPU time of one run of `argv`."""
    with tempfile.NamedTemporaryFile("r", prefix="rss-", dir=WORK) as report_file:
        if os.access(GNU_TIME, os.X_OK):
            wrapped = [GNU_TIME, "-f", "%M", "-o", report_file.name, *argv]
        else:
            wrapped = [sys.executable, "-c", _PYTHON_PARENT, report_file.name, *argv]
        start = time.monotonic()
        proc = subprocess.Popen(wrapped, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        _, status, usage = os.wait4(proc.pid, 0)
        wall = time.monotonic() - start
        err = proc.stderr.read().decode(errors="replace") if proc.stderr else ""
        if proc.stderr:
            proc.stderr.close()
        if os.waitstatus_to_exitcode(status) != 0:
            sys.exit(f"command failed: {' '.join(argv)}\n{err}")
        maxrss_kib = int(report_file.read().split()[-1])
    return Run(wall, maxrss_kib, usage.ru_utime + usage.ru_stime)


def fresh(store: Path) -> None:
    shutil.rmtree(store, ignore_errors=True)
    os.sync()


def source_size(source: str) -> tuple[int, int, int]:
    """(entries, regular files, bytes of regular files) under `source`, the root included."""
    entries, files, size = 1, 0, 0
    for root, dirs, names in os.walk(source):
        entries += len(dirs) + len(names)
        for name in names:
            st = os.lstat(os.path.join(root, name))
            if stat.S_ISREG(st.st_mode):
                files += 1
                size += st.st_size
    return entries, files, size


def _regular_files(source: str) -> Iterator[str]:
    for root, _dirs, names in os.walk(source):
        for name in names:
            path = os.path.join(root, name)
            if stat.S_ISREG(os.lstat(path).st_mode):
                yield path


def _file_pieces(paths: list[str]) -> Iterator[bytes]:
    for path in paths:
        try:
            with open(path, "rb") as f:
                while piece := f.read(1 << 20):
                    yield piece
        except OSError:
            continue


def compare_digests(source: str, runs: int, threads: int, mkcomposefs: str | None) -> None:
    """`--print-digest-only` builds: the scan, digests and layout without any writes."""
    print(f"== --print-digest-only builds of {source} (no store, no image)")
    commands: list[Command] = [
        ("erofsgen", [*EROFSGEN, "mkcomposefs", f"--threads={threads}", "--print-digest-only", source])
    ]
    if mkcomposefs is not None:
        commands.append(("mkcomposefs", [mkcomposefs, f"--threads={threads}", "--print-digest-only", source]))
    results: list[list[Run]] = [[] for _ in commands]
    for round_no in range(runs + 1):  # round 0 warms the page cache and is not counted
        for (_, argv), runs_of in zip(commands, results, strict=True):
            run = measured_run(argv)
            if round_no:
                runs_of.append(run)
    report(commands, results)


def compare_builds(source: str, runs: int, threads: int, mkcomposefs: str | None) -> None:
    entries, files, size = source_size(source)
    print(f"== digest-store builds of {source}: {entries} entries, {files} files, {size / 1e6:.0f} MB")
    stores = {"erofsgen": WORK / "store-erofsgen", "mkcomposefs": WORK / "store-mkcomposefs"}
    images = {name: WORK / f"{name}.img" for name in stores}
    commands: list[Command] = [
        ("erofsgen", [*EROFSGEN, "mkcomposefs", f"--threads={threads}", "--digest-store",
                      str(stores["erofsgen"]), source, str(images["erofsgen"])]),
    ]  # fmt: skip
    if mkcomposefs is not None:
        commands.append(
            ("mkcomposefs", [mkcomposefs, f"--threads={threads}", "--digest-store",
                             str(stores["mkcomposefs"]), source, str(images["mkcomposefs"])])
        )  # fmt: skip
    print(f"before: {load()}")
    results: list[list[Run]] = [[] for _ in commands]
    for round_no in range(runs + 1):  # round 0 warms the page cache and is not counted
        for (name, argv), runs_of in zip(commands, results, strict=True):
            fresh(stores[name])
            run = measured_run(argv)
            if round_no:
                runs_of.append(run)
    for letter, (name, argv) in zip("AB", commands, strict=False):
        print(f"{letter} = {name}: {' '.join(argv)}")
    report(commands, results)
    for (name, _), runs_of in zip(commands, results, strict=True):
        wall = statistics.median(r.wall for r in runs_of)
        print(f"{name:14} {entries / wall:10.0f} files/s {size / 1e6 / wall:8.1f} MB/s")
    floor = measured_run(["true"]).maxrss_kib
    print(f"peak RSS floor of the measuring parent (true): {floor / 1024:.1f} MiB")
    if mkcomposefs is not None:
        same_image = images["erofsgen"].read_bytes() == images["mkcomposefs"].read_bytes()
        listed = [sorted(str(p.relative_to(s)) for p in s.rglob("*") if p.is_file()) for s in stores.values()]
        print(f"same image: {same_image}; same objects: {listed[0] == listed[1]} ({len(listed[0])} objects)")
    print(f"after: {load()}")
    for store in stores.values():
        shutil.rmtree(store, ignore_errors=True)


def compare_verity(source: str, mib: int) -> None:
    print(f"== fs-verity digest vs hashlib.sha256, one thread: {mib} MiB in memory")
    for name, rate in in_memory(mib):
        print(f"{name:15} {rate:8.0f} MB/s")
    paths = list(_regular_files(source))
    print(f"== the same over the {len(paths)} regular files of {source} (page cache, read included)")
    for _ in _file_pieces(paths):
        pass  # into the page cache
    for name, rate in throughput(lambda: _file_pieces(paths), passes=2):
        print(f"{name:15} {rate:8.0f} MB/s")


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("source", nargs="?", default="/usr/share")
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--threads", type=int, default=len(os.sched_getaffinity(0)))
    parser.add_argument("--mkcomposefs", metavar="PATH", help="composefs's mkcomposefs, to compare with")
    parser.add_argument("--verity-mib", type=int, default=256)
    args = parser.parse_args()
    WORK.mkdir(parents=True, exist_ok=True)
    compare_builds(args.source, args.runs, args.threads, args.mkcomposefs)
    compare_digests(args.source, args.runs, args.threads, args.mkcomposefs)
    compare_verity(args.source, args.verity_mib)


if __name__ == "__main__":
    main()
