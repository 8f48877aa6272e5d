#!/usr/bin/env python3
"""Benchmark `erofsgen pack` against `mkfs.erofs` on a real or generated tree.

Usage: tools/bench_pack.py [SOURCE] [--runs N] [--keep DIR] [--options "-T 0 ..."]
                           [--tiny N] [--mkfs PATH]... [--baseline DIR] [--compression [ALG,...]]
                           [--scaling]
SOURCE defaults to /usr/share. `--tiny N` packs a generated tree of N tiny files in nested
directories instead (made once, kept under /var/tmp). Every tool writes an image with the same
options; the page cache is warmed by a first run of each, then the tools run in turn, round
after round. Prints median wall time and peak RSS of each, the median of the per-round ratios
against every mkfs.erofs given (the first is the one on PATH unless --mkfs is used), per-inode
figures, MB/s (bytes of regular files in SOURCE / median wall time) and the image sizes.
The erofsgen measured is the one Python imports (run with PYTHONPATH=$PWD for a checkout);
`--baseline DIR` adds the erofsgen of checkout DIR as one more reference (before/after a change).

`--scaling` first measures how LZ4HC throughput grows from one thread to every cpu on a sample
of SOURCE: the bound it prints is what any multi-threaded writer can reach against a one-thread
mkfs.erofs doing the same LZ4HC work on this machine.

`--compression` runs that comparison once per algorithm, `-z ALG` added to `--options` (e.g.
`--options "-C 65536"`): every algorithm in ALGORITHMS, or those listed (`lz4hc,lz4hc,12`). An
algorithm `erofsgen pack` rejects is skipped; one a mkfs.erofs rejects is measured without it.
A summary follows: per algorithm, MB/s, peak RSS, image size, and the per-round ratios of wall
time, CPU time (user + system: steadier on a busy machine), peak RSS and image size to each
mkfs.erofs that supports it.

Examples: `tools/bench_pack.py --options "-zlz4hc"` (one algorithm);
`tools/bench_pack.py --compression --runs 3` (every algorithm);
`tools/bench_pack.py /usr/share/doc --compression lz4,lz4hc,12`.
"""

from __future__ import annotations

import argparse
import os
import shlex
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from benchlib import Command, Run, compare_all, round_ratios, tool_version

FILES_PER_DIR = 100
# mkfs.erofs's algorithm names, in its order; `--compression` asks each tool which it accepts.
ALGORITHMS = ("lz4", "lz4hc", "lzma", "deflate", "zstd")
MB = 1e6


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


@dataclass(frozen=True)
class Survey:
    inodes: int
    data_bytes: int  # bytes of regular files: what MB/s counts


def survey(source: str) -> Survey:
    inodes, data = 1, 0
    for directory, dirs, files in os.walk(source):
        inodes += len(dirs) + len(files)
        for name in files:
            st = os.lstat(os.path.join(directory, name))
            if st.st_mode & 0o170000 == 0o100000:
                data += st.st_size
    return Survey(inodes, data)


@dataclass(frozen=True)
class Tool:
    name: str
    argv: list[str]  # everything before the options
    image_first: bool  # mkfs.erofs takes IMAGE SOURCE, erofsgen SOURCE IMAGE

    def command(self, options: list[str], source: str, image: Path) -> list[str]:
        ends = [str(image), source] if self.image_first else [source, str(image)]
        return [*self.argv, *options, *ends]

    def rejects(self, options: list[str], probe: Path) -> str:
        """Why the tool refuses `options` on a small tree ("" if it accepts them)."""
        image = probe.parent / "probe.img"
        out = subprocess.run(self.command(options, str(probe), image), capture_output=True, text=True)
        if out.returncode == 0:
            return ""
        lines = (out.stderr + out.stdout).strip().splitlines()
        return lines[-1] if lines else f"exit status {out.returncode}"


def probe_tree(parent: Path) -> Path:
    """A file of a few compressible blocks and a small one: enough for every code path to run."""
    root = parent / "probe"
    root.mkdir()
    (root / "text").write_bytes(b"".join(b"line %d of the probe file\n" % i for i in range(1000)))
    (root / "small").write_bytes(b"small")
    return root


@dataclass(frozen=True)
class Measured:
    label: str  # the options that differ between variants ("" for a single comparison)
    names: list[str]  # the tools measured, erofsgen first
    runs: list[list[Run]]
    sizes: list[int]  # image bytes


def measure(
    tools: list[Tool], options: list[str], label: str, source: str, out: Path, runs: int, tree: Survey
) -> Measured:
    images = [out / f"{i}.img" for i in range(len(tools))]
    commands: list[Command] = [
        (tool.name, tool.command(options, source, image)) for tool, image in zip(tools, images, strict=True)
    ]
    if label:
        print(f"\n== {label}")
    results = compare_all(commands, runs)
    sizes = [image.stat().st_size for image in images]
    for tool, rs, size in zip(tools, results, sizes, strict=True):
        wall = statistics.median(r.wall for r in rs)
        rss = statistics.median(r.maxrss_kib for r in rs) * 1024
        print(
            f"{tool.name:20} {wall / tree.inodes * 1e6:7.1f} µs/inode"
            f" {rss / tree.inodes:7.0f} B peak RSS/inode"
            f" {tree.data_bytes / MB / wall:7.1f} MB/s  image {size} B"
        )
    return Measured(label, [tool.name for tool in tools], results, sizes)


def summarize(measured: list[Measured], tree: Survey) -> None:
    """One line per algorithm: erofsgen's figures, then its ratios to every mkfs.erofs that ran."""
    print(f"\nsummary ({tree.data_bytes / MB:.1f} MB of file data; ratios are erofsgen/mkfs.erofs):")
    columns = f"{'options':18}{'MB/s':>8}{'RSS MiB':>9}{'image MiB':>11}"
    print(f"{columns}  {'vs':19}{'wall':>7}{'CPU':>7}{'RSS':>7}{'size':>7}")
    for m in measured:
        ours = m.runs[0]
        wall = statistics.median(r.wall for r in ours)
        rss = statistics.median(r.maxrss_kib for r in ours) / 1024
        head = f"{m.label:18}{tree.data_bytes / MB / wall:>8.1f}{rss:>9.1f}{m.sizes[0] / 2**20:>11.1f}"
        if len(m.names) == 1:
            print(f"{head}  (no mkfs.erofs here supports it)")
        for name, theirs, size in zip(m.names[1:], m.runs[1:], m.sizes[1:], strict=True):
            wall, rss, cpu = round_ratios(ours, theirs)
            print(f"{head}  {name:19}{wall:>7.3f}{cpu:>7.2f}{rss:>7.2f}{m.sizes[0] / size:>7.3f}")
            head = " " * len(head)


def lz4hc_scaling(source: str, threads: int, sample: int = 96 << 20) -> None:
    """How LZ4HC throughput grows from 1 to `threads` threads here, on up to `sample` bytes of
    SOURCE's files: a writer doing the same LZ4HC work as a one-thread mkfs.erofs on `threads`
    cores cannot take less than 1/(that factor) of its time, whatever else it does."""
    from concurrent.futures import ThreadPoolExecutor

    from erofsgen.writer.lz4dest import dest_size_compressor

    files: list[bytes] = []
    total = 0
    for directory, _dirs, names in os.walk(source):
        for name in sorted(names):
            path = os.path.join(directory, name)
            if total < sample and os.path.isfile(path) and not os.path.islink(path):
                with open(path, "rb") as f:
                    data = f.read(sample - total)
                files.append(data)
                total += len(data)
    compress = dest_size_compressor("lz4hc", None)

    def work(part: list[bytes]) -> None:
        for data in part:
            pos = 0
            while pos < len(data):
                pos += compress(data, pos, min(len(data), pos + (1 << 20)), 4096)[1]

    def rate(n: int) -> float:
        parts = [files[i::n] for i in range(n)]
        start = time.perf_counter()
        with ThreadPoolExecutor(n) as pool:
            list(pool.map(work, parts))
        return total / MB / (time.perf_counter() - start)

    one, many = rate(1), rate(threads)
    print(
        f"LZ4HC (level 9, 4 KiB pclusters) on {total / MB:.0f} MB of {source}: {one:.0f} MB/s on 1 thread,"
        f" {many:.0f} MB/s on {threads} ({many / one:.2f}x): the same LZ4HC work on {threads} threads"
        f" takes at least {one / many:.2f}x the time it takes on one"
    )


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
    parser.add_argument("--baseline", metavar="DIR", help="also measure the erofsgen of checkout DIR")
    parser.add_argument(
        "--compression",
        nargs="?",
        const=",".join(ALGORITHMS),
        metavar="ALG,...",
        help=f"one comparison per algorithm (default: {', '.join(ALGORITHMS)}); ALG may carry a level",
    )
    parser.add_argument(
        "--scaling",
        action="store_true",
        help="first measure how LZ4HC scales from 1 thread to every cpu",
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
    tree = survey(source)
    print(
        f"source {source}: {tree.inodes} inodes, {tree.data_bytes} bytes of file data; {os.cpu_count()} cpus"
    )
    if args.scaling:
        lz4hc_scaling(source, os.cpu_count() or 1)
    ours = Tool("erofsgen", [sys.executable, "-m", "erofsgen", "pack", "--quiet"], image_first=False)
    references = [
        Tool(f"mkfs.erofs {tool_version([mkfs, '-V']).split()[-1]}", [mkfs, "--quiet"], image_first=True)
        for mkfs in mkfs_paths
    ]
    if args.baseline:
        # -P: `-m` must not import the erofsgen of the current directory instead of the baseline's.
        env = ["env", f"PYTHONPATH={os.path.abspath(args.baseline)}", sys.executable, "-P"]
        baseline = Tool(f"erofsgen@{args.baseline}", [*env, "-m", "erofsgen", "pack", "--quiet"], False)
        references.insert(0, baseline)
    if args.compression is None:
        measure([ours, *references], extra, "", source, out, args.runs, tree)
    else:
        # "lz4hc,12" is one algorithm with its level: a level starts with a digit.
        algorithms: list[str] = []
        for part in args.compression.split(","):
            if part[:1].isdigit() and algorithms:
                algorithms[-1] += "," + part
            else:
                algorithms.append(part)
        probe = probe_tree(Path(tempfile.mkdtemp(prefix="bench-probe-")))
        measured = []
        for algorithm in algorithms:
            options = [*extra, f"-z{algorithm}"]
            why = ours.rejects(options, probe)
            if why:
                print(f"\n== -z{algorithm}: skipped, erofsgen pack rejects it: {why}")
                continue
            tools = [ours]
            for tool in references:
                why = tool.rejects(options, probe)
                if why:
                    print(f"\n(-z{algorithm}: {tool.name} rejects it: {why})")
                else:
                    tools.append(tool)
            measured.append(measure(tools, options, f"-z{algorithm}", source, out, args.runs, tree))
        shutil.rmtree(probe.parent)
        summarize(measured, tree)
    if not args.keep:
        shutil.rmtree(out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
