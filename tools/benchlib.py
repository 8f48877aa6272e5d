"""Shared helpers for the benchmarks: run commands, measure wall time and peak RSS, print ratios.

CPU time comes from the kernel's rusage of each finished child (os.wait4), which includes the
processes it reaped, wall time from a monotonic clock around it. Peak RSS is the larger of the
kernel's figure (one process) and the sum of the resident sets of the command and its child
processes, sampled every 10 ms: a writer that forks workers is charged for all of them (shared
pages count once per process, so the sum errs high). Commands run alternately (A B A B ..., or
A B C A B C ... with more references) so drift affects all of them; ratios are taken per round
and their median printed.
The load average before and after is printed too: a busy machine makes every figure noisy.
"""

from __future__ import annotations

import os
import re
import shlex
import statistics
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass


@dataclass(frozen=True)
class Run:
    wall: float  # seconds
    maxrss_kib: int  # peak resident set size of the process, KiB
    cpu: float = 0.0  # user + system seconds: steadier than wall time on a busy machine


# (name, argv) of one command taking part in a comparison.
Command = tuple[str, Sequence[str]]


def run_once(argv: Sequence[str], env: dict[str, str] | None = None) -> Run:
    start = time.monotonic()
    proc = subprocess.Popen(list(argv), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env=env)
    done = threading.Event()
    peak = [0]
    sampler = threading.Thread(target=_sample_tree_rss, args=(proc.pid, done, peak))
    sampler.start()
    try:
        _, status, usage = os.wait4(proc.pid, 0)
    finally:
        done.set()
        sampler.join()
    wall = time.monotonic() - start
    proc.returncode = os.waitstatus_to_exitcode(status)
    err = proc.stderr.read().decode(errors="replace") if proc.stderr else ""
    if proc.stderr:
        proc.stderr.close()
    if proc.returncode != 0:
        sys.exit(f"command failed ({proc.returncode}): {shlex.join(argv)}\n{err}")
    return Run(wall, max(usage.ru_maxrss, peak[0]), usage.ru_utime + usage.ru_stime)


def _sample_tree_rss(pid: int, done: threading.Event, peak: list[int]) -> None:
    """Keep in peak[0] the largest sum of VmRSS (KiB) over `pid` and its descendants."""
    while not done.wait(0.01):
        total = 0
        pids = [pid]
        while pids:
            current = pids.pop()
            try:
                with open(f"/proc/{current}/status", "rb") as status:
                    for line in status:
                        if line.startswith(b"VmRSS:"):
                            total += int(line.split()[1])
                            break
                for task in os.listdir(f"/proc/{current}/task"):
                    with open(f"/proc/{current}/task/{task}/children", "rb") as children:
                        pids.extend(int(child) for child in children.read().split())
            except (OSError, ValueError):
                continue  # ended meanwhile
        peak[0] = max(peak[0], total)


def load() -> str:
    one, five, fifteen = os.getloadavg()
    return f"load average {one:.2f} {five:.2f} {fifteen:.2f}"


def compare(
    name_a: str,
    argv_a: Sequence[str],
    name_b: str,
    argv_b: Sequence[str],
    runs: int,
    before_each: Callable[[], None] = lambda: None,
) -> tuple[list[Run], list[Run]]:
    """One warm-up each, then `runs` alternating runs of A and B."""
    a, b = compare_all([(name_a, argv_a), (name_b, argv_b)], runs, before_each)
    return a, b


def compare_all(
    commands: Sequence[Command], runs: int, before_each: Callable[[], None] = lambda: None
) -> list[list[Run]]:
    """One warm-up each, then `runs` rounds running every command once, in turn.

    The first command is the one measured; every other is a reference it is divided by.
    """
    print(f"before: {load()}")
    for _, argv in commands:
        before_each()
        run_once(argv)
    results: list[list[Run]] = [[] for _ in commands]
    for _ in range(runs):
        for (_, argv), runs_of in zip(commands, results, strict=True):
            before_each()
            runs_of.append(run_once(argv))
    for letter, (name, argv) in zip("ABCDEFGH", commands, strict=False):
        print(f"{letter} = {name}: {shlex.join(argv)}")
    report(commands, results)
    print(f"after: {load()}")
    return results


def _median(xs: list[float]) -> float:
    return statistics.median(xs)


def report(commands: Sequence[Command], results: list[list[Run]]) -> None:
    print(f"{'':14}{'median wall s':>15}{'min':>9}{'max':>9}{'median peak RSS MiB':>22}{'CPU s':>8}")
    for (name, _), rs in zip(commands, results, strict=True):
        walls = [r.wall for r in rs]
        rss = _median([r.maxrss_kib / 1024 for r in rs])
        cpu = _median([r.cpu for r in rs])
        print(f"{name:14}{_median(walls):>15.3f}{min(walls):>9.3f}{max(walls):>9.3f}{rss:>22.1f}{cpu:>8.2f}")
    first_name, first = commands[0][0], results[0]
    for (name, _), rs in zip(commands[1:], results[1:], strict=True):
        wall, rss, cpu = round_ratios(first, rs)
        print(
            f"ratio {first_name}/{name} (median per round): wall {wall:.3f}x, peak RSS {rss:.2f}x,"
            f" CPU time {cpu:.2f}x"
        )


def round_ratios(measured: list[Run], reference: list[Run]) -> tuple[float, float, float]:
    """Medians of the per-round ratios measured/reference: (wall time, peak RSS, CPU time)."""
    pairs = list(zip(measured, reference, strict=True))
    wall = _median([x.wall / y.wall for x, y in pairs])
    rss = _median([x.maxrss_kib / y.maxrss_kib for x, y in pairs])
    cpu = _median([x.cpu / max(y.cpu, 1e-6) for x, y in pairs])
    return wall, rss, cpu


def tool_version(argv: Sequence[str]) -> str:
    """The first output line of `argv` that carries a version number (erofs-utils print it first)."""
    out = subprocess.run(list(argv), capture_output=True, text=True, check=False)
    for line in (out.stdout + "\n" + out.stderr).splitlines():
        if re.search(r"\b\d+\.\d+", line):
            return line.strip()
    return "unknown version"
