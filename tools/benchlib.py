"""Shared helpers for the benchmarks: run commands, measure wall time and peak RSS, print ratios.

Peak RSS comes from the kernel's rusage of each finished child (os.wait4), wall time from a
monotonic clock around it. Commands run alternately (A B A B ...) so drift affects both.
"""

from __future__ import annotations

import os
import re
import shlex
import statistics
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass


@dataclass(frozen=True)
class Run:
    wall: float  # seconds
    maxrss_kib: int  # peak resident set size of the process, KiB


def run_once(argv: Sequence[str], env: dict[str, str] | None = None) -> Run:
    start = time.monotonic()
    proc = subprocess.Popen(list(argv), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env=env)
    _, status, usage = os.wait4(proc.pid, 0)
    wall = time.monotonic() - start
    proc.returncode = os.waitstatus_to_exitcode(status)
    err = proc.stderr.read().decode(errors="replace") if proc.stderr else ""
    if proc.stderr:
        proc.stderr.close()
    if proc.returncode != 0:
        sys.exit(f"command failed ({proc.returncode}): {shlex.join(argv)}\n{err}")
    return Run(wall, usage.ru_maxrss)


def compare(
    name_a: str,
    argv_a: Sequence[str],
    name_b: str,
    argv_b: Sequence[str],
    runs: int,
    before_each: Callable[[], None] = lambda: None,
) -> tuple[list[Run], list[Run]]:
    """One warm-up each, then `runs` alternating runs of A and B."""
    for argv in (argv_a, argv_b):
        before_each()
        run_once(argv)
    a: list[Run] = []
    b: list[Run] = []
    for _ in range(runs):
        before_each()
        a.append(run_once(argv_a))
        before_each()
        b.append(run_once(argv_b))
    print(f"A = {name_a}: {shlex.join(argv_a)}")
    print(f"B = {name_b}: {shlex.join(argv_b)}")
    report(name_a, a, name_b, b)
    return a, b


def report(name_a: str, a: list[Run], name_b: str, b: list[Run]) -> None:
    def med(xs: list[float]) -> float:
        return statistics.median(xs)

    wall_ratio = med([x.wall / y.wall for x, y in zip(a, b, strict=True)])
    rss_ratio = med([x.maxrss_kib / y.maxrss_kib for x, y in zip(a, b, strict=True)])
    print(f"{'':12}{'median wall s':>15}{'min':>9}{'max':>9}{'median peak RSS MiB':>22}")
    for name, rs in ((name_a, a), (name_b, b)):
        walls = [r.wall for r in rs]
        rss = med([r.maxrss_kib / 1024 for r in rs])
        print(f"{name:12}{med(walls):>15.3f}{min(walls):>9.3f}{max(walls):>9.3f}{rss:>22.1f}")
    print(f"ratio A/B (median of pairwise): wall {wall_ratio:.2f}x, peak RSS {rss_ratio:.2f}x")


def tool_version(argv: Sequence[str]) -> str:
    """The first output line of `argv` that carries a version number (erofs-utils print it first)."""
    out = subprocess.run(list(argv), capture_output=True, text=True, check=False)
    for line in (out.stdout + "\n" + out.stderr).splitlines():
        if re.search(r"\b\d+\.\d+", line):
            return line.strip()
    return "unknown version"
