#!/usr/bin/env python3
"""Fuzz the reader and the read commands with damaged images.

Usage: tools/fuzz_reader.py [--cases N] [--seed S] [--timeout SECONDS] [--memory MIB] [--save DIR]
                            [--progress]

Seed images of a small tree are built with mkfs.erofs (plain, compacted LZ4HC with big
pclusters and tail packing, full-index LZ4, chunked, chunked with a blob device) and with
`erofsgen pack`. Each case applies 1-4 mutations: byte flips, overwrites, truncation, copies of
one structure over another, and field-targeted writes into the superblock, inode cores,
dirents, xattr headers, chunk and lcluster indexes, found with the structural dump. The
superblock checksum is usually fixed up afterwards so the damage reaches past it.

For every case, in this process: the library's check, dump (with rebuild) and statistics may
raise only ErofsgenError subclasses; `inspect`, `ls -R -l -i`, `cat` of every seed path, `dump`,
`check --data` and `extract` must exit 0, 1 or 2 without a traceback. Each case has a SIGALRM
time bound; RLIMIT_AS bounds memory, so a runaway allocation fails as MemoryError (a crash).
Exit status 1 if any case crashed or timed out; --save keeps those images.
"""

from __future__ import annotations

import argparse
import contextlib
import functools
import io
import os
import random
import resource
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import traceback
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import erofsgen
from erofsgen.cli import main as cli_main
from erofsgen.errors import ErofsgenError
from erofsgen.format.constants import EROFS_SUPER_OFFSET, FeatureCompat, FileType
from erofsgen.format.superblock import CHECKSUM_OFFSET, checksum_length, sb_checksum
from erofsgen.reader.check import check_image
from erofsgen.reader.dump import FIXED_SCHEMAS, Structure, iter_image, rebuild_check
from erofsgen.reader.stats import image_stats

MKFS_VARIANTS: dict[str, list[str]] = {
    "mkfs_plain": [],
    "mkfs_lz4hc": ["-zlz4hc", "-C16384", "-Eztailpacking"],
    "mkfs_lz4_full": ["-zlz4", "-Elegacy-compress"],
    "mkfs_chunked": ["--chunksize=8192"],
    "mkfs_blob": ["--chunksize=4096"],  # + --blobdev, added when building
}
PACK_VARIANTS: dict[str, list[str]] = {
    "pack": ["-T", "1000"],
    "pack_b1024": ["-b", "1024", "-T", "1000"],
    "pack_extended": ["-E", "force-inode-extended"],
}
OUTPUT_CAP = 32 << 20  # bytes a command may print before the harness stops reading


class CaseTimeout(Exception):
    """Raised by SIGALRM when a case runs past its time bound."""


class OutputCapped(Exception):
    """A command printed more than OUTPUT_CAP bytes (a huge sparse file under `cat`)."""


@dataclass
class Seed:
    name: str
    image: bytes
    devices: list[bytes]
    paths: list[str]  # regular files, for `cat`
    structures: list[tuple[str, int, int]]  # (kind, offset, size) from the dump
    checksum: bool
    block_size: int


@dataclass
class Failure:
    case: int
    seed: str
    mutations: list[str]
    what: str
    detail: str


@dataclass
class Stats:
    cases: int = 0
    statuses: dict[int, int] = field(default_factory=dict)
    failures: list[Failure] = field(default_factory=list)


# -------------------------------------------------------------------------------- seeds


def build_tree(root: Path) -> None:
    """A small tree touching every inode kind, xattrs, a two-block directory and hard links."""
    root.mkdir()
    (root / "empty").write_bytes(b"")
    (root / "small").write_bytes(b"hello world\n" * 9)
    (root / "text").write_bytes(b"".join(b"line %05d of some text\n" % i for i in range(3000)))
    (root / "random").write_bytes(random.Random(5).randbytes(9000))
    (root / "zeros").write_bytes(bytes(20000))
    (root / "blocks").write_bytes(random.Random(6).randbytes(8192))  # FLAT_PLAIN: no tail
    sub = root / "dir"
    sub.mkdir()
    for i in range(150):
        (sub / f"entry_{i:03d}_{'x' * (i % 23)}").write_bytes(b"%d" % i)
    (sub / "nested").mkdir()
    (sub / "nested" / "deep").write_bytes(b"deep\n")
    os.symlink("text", root / "link")
    os.symlink("d" * 300, sub / "longlink")
    os.mkfifo(root / "fifo")
    os.link(root / "small", sub / "hard")
    for raw in (b"\xff\xfe odd", b"new\nline"):
        with open(os.path.join(os.fsencode(root), raw), "wb") as f:
            f.write(b"odd name\n")
    for name in ("small", "text", "random"):
        os.setxattr(root / name, "user.shared", b"same on three files")
    os.setxattr(root / "text", "user.own", b"v" * 100)
    os.setxattr(sub, "user.dir", b"on a directory")
    if os.geteuid() == 0:
        os.mknod(root / "chr", 0o600 | 0o020000, os.makedev(1, 3))
        os.setxattr(root / "text", "trusted.t", b"trusted value")


def _regular_paths(img: erofsgen.Image) -> list[str]:
    paths = []
    for dirpath, _dirs, files in img.walk():
        for name in files:
            path = f"{dirpath.rstrip('/')}/{name}"
            if img.stat(path).type == FileType.REG_FILE:
                paths.append(path)
    return paths


def _seed(name: str, image: Path, devices: list[Path]) -> Seed:
    with erofsgen.open_image(image, [str(d) for d in devices]) as img:
        structures = [
            (s.kind, s.offset, s.size)
            for s in iter_image(img)
            if isinstance(s, Structure) and not s.location and s.kind not in ("extent", "inline data")
        ]
        paths = _regular_paths(img)
        checksum = bool(img.superblock.feature_compat & FeatureCompat.SB_CHKSUM)
        bs = img.superblock.block_size
    raw_devices = [d.read_bytes() for d in devices]
    return Seed(name, image.read_bytes(), raw_devices, paths, structures, checksum, bs)


def build_seeds(work: Path) -> list[Seed]:
    src = work / "src"
    build_tree(src)
    seeds = []
    mkfs = shutil.which("mkfs.erofs", path=os.environ.get("PATH", "") + ":/usr/sbin:/sbin")
    for name, opts in MKFS_VARIANTS.items() if mkfs else ():
        image = work / name
        devices = [work / f"{name}.blob"] if name == "mkfs_blob" else []
        extra = [f"--blobdev={devices[0]}"] if devices else []
        # No -T: mkfs 1.5 then writes extended inodes with each file's own mtime.
        cmd = [str(mkfs), "--quiet", *opts, *extra, str(image), str(src)]
        subprocess.run(cmd, check=True, capture_output=True)
        seeds.append(_seed(name, image, devices))
    for name, opts in PACK_VARIANTS.items():
        image = work / name
        with contextlib.redirect_stdout(io.StringIO()):
            status = cli_main(["pack", "--quiet", *opts, str(src), str(image)])
        if status != 0:
            raise SystemExit(f"erofsgen pack failed for seed {name}")
        seeds.append(_seed(name, image, []))
    return seeds


# -------------------------------------------------------------------------------- mutations


def _field_layout(schema: Any) -> list[tuple[str, int, int]]:
    """(name, offset, size) of each field of a fixed-size schema."""
    out = []
    pos = 0
    for sub in schema.subcons:
        size = sub.sizeof()
        out.append((getattr(sub, "name", None) or "?", pos, size))
        pos += size
    return out


def _interesting(rng: random.Random, current: int, size: int, block_size: int) -> int:
    top = (1 << (8 * size)) - 1
    choices = [0, 1, 2, top, top - 1, current + 1, current - 1, current ^ (1 << rng.randrange(8 * size))]
    choices += [rng.randrange(top + 1), 255, 256, 4095, 4096, block_size - 1, block_size, 1 << 15, 0x7FFF]
    choices.append(1 << rng.randrange(8 * size))  # large but plausible sizes and counts
    return rng.choice(choices) & top


Mutation = Callable[[bytearray], str]


def _pick_structure(rng: random.Random, seed: Seed) -> tuple[str, int, int]:
    # Metadata mostly: the superblock and inodes are few but matter most.
    kinds = sorted({k for k, _, _ in seed.structures})
    kind = rng.choice(kinds)
    return rng.choice([s for s in seed.structures if s[0] == kind])


def mutation(rng: random.Random, seed: Seed) -> Mutation:
    """One random mutation; calling it edits the image and describes what it did."""
    roll = rng.random()
    if roll < 0.45:
        kind, offset, size = _pick_structure(rng, seed)
        schema = FIXED_SCHEMAS.get(kind)
        if schema is not None:
            name, foff, fsize = rng.choice(_field_layout(schema))
            return lambda data: _set_field(data, rng, kind, name, offset + foff, fsize, seed.block_size)
        pos = offset + rng.randrange(max(1, size))
        value = rng.randrange(256)
        return lambda data: _set_byte(data, pos, value, f"{kind} byte +{pos - offset}")
    if roll < 0.60:
        (ka, oa, sa), (kb, ob, sb) = _pick_structure(rng, seed), _pick_structure(rng, seed)
        return lambda data: _copy(data, oa, ob, min(sa, sb), f"{ka}@{oa:#x} over {kb}@{ob:#x}")
    if roll < 0.85:
        span = min(len(seed.image), rng.choice([4096, 16384, len(seed.image)]))
        pos, bit = rng.randrange(span), 1 << rng.randrange(8)
        return lambda data: _set_byte(data, pos, data[pos] ^ bit if pos < len(data) else 0, "flip")
    if roll < 0.93:
        cut = rng.randrange(len(seed.image))
        return lambda data: _cut(data, cut)
    start, length = rng.randrange(len(seed.image)), rng.choice([4, 32, 512, 4096])
    return lambda data: _zero(data, start, length)


def _set_field(
    data: bytearray, rng: random.Random, kind: str, name: str, pos: int, size: int, bs: int
) -> str:
    if pos + size > len(data):
        return f"{kind}.{name}: out of range"
    current = int.from_bytes(data[pos : pos + size], "little")
    value = _interesting(rng, current, size, bs) if size <= 8 else 0
    if size > 8:
        data[pos : pos + size] = rng.randbytes(size) if rng.random() < 0.5 else bytes(size)
        return f"{kind}.{name} @{pos:#x} scrambled"
    data[pos : pos + size] = value.to_bytes(size, "little")
    return f"{kind}.{name} @{pos:#x} {current:#x} -> {value:#x}"


def _set_byte(data: bytearray, pos: int, value: int, what: str) -> str:
    if pos < len(data):
        data[pos] = value & 0xFF
    return f"{what} @{pos:#x} = {value & 0xFF:#04x}"


def _copy(data: bytearray, src: int, dst: int, size: int, what: str) -> str:
    data[dst : dst + size] = data[src : src + size]
    return f"copy {what} ({size} bytes)"


def _cut(data: bytearray, at: int) -> str:
    del data[at:]
    return f"truncate at {at:#x}"


def _zero(data: bytearray, start: int, length: int) -> str:
    end = min(len(data), start + length)
    data[start:end] = bytes(max(0, end - start))
    return f"zero {length} bytes @{start:#x}"


def fix_checksum(data: bytearray, block_size: int) -> None:
    """Recompute the superblock checksum so damage elsewhere in block 0 gets past it."""
    end = EROFS_SUPER_OFFSET + checksum_length(block_size)
    if len(data) >= end:
        value = sb_checksum(bytes(data[:end]), block_size)
        data[CHECKSUM_OFFSET : CHECKSUM_OFFSET + 4] = value.to_bytes(4, "little")


def focused(rng: random.Random, seed: Seed) -> list[Mutation]:
    """2-4 field writes into one fixed-size structure: damage that needs several fields at once
    (an inode with a huge size *and* a matching chunk format, say) is rare otherwise."""
    fixed = [s for s in seed.structures if s[0] in FIXED_SCHEMAS and s[0] != "superblock"]
    kind, offset, _ = rng.choice(fixed)
    fields = _field_layout(FIXED_SCHEMAS[kind])
    chosen = rng.sample(fields, min(len(fields), rng.randint(2, 4)))
    bs = seed.block_size
    return [
        functools.partial(_set_field, rng=rng, kind=kind, name=name, pos=offset + foff, size=size, bs=bs)
        for name, foff, size in chosen
    ]


def make_case(rng: random.Random, seed: Seed) -> tuple[bytes, list[str]]:
    data = bytearray(seed.image)
    if rng.random() < 0.3:
        mutations = focused(rng, seed)
    else:
        mutations = [mutation(rng, seed) for _ in range(rng.randint(1, 4))]
    notes = [m(data) for m in mutations]
    if seed.checksum and rng.random() < 0.8:
        fix_checksum(data, seed.block_size)
        notes.append("checksum fixed")
    return bytes(data), notes


# -------------------------------------------------------------------------------- running


class _CappedBytes(io.RawIOBase):
    """A binary sink that keeps nothing and refuses to grow past OUTPUT_CAP."""

    def __init__(self) -> None:
        super().__init__()
        self.count = 0

    def writable(self) -> bool:
        return True

    def write(self, b: Any) -> int:
        n = len(memoryview(b))
        self.count += n
        if self.count > OUTPUT_CAP:
            raise OutputCapped
        return n


@contextlib.contextmanager
def captured() -> Iterator[io.StringIO]:
    """Run with stdout going to a capped sink and stderr captured (returned)."""
    err = io.StringIO()
    out = io.TextIOWrapper(io.BufferedWriter(_CappedBytes()), encoding="utf-8", errors="strict")
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            yield err
        finally:
            with contextlib.suppress(Exception):
                out.flush()


def _on_alarm(signum: int, frame: Any) -> None:
    raise CaseTimeout


def commands(image: Path, devices: list[Path], paths: list[str], dest: Path) -> list[list[str]]:
    dev = [arg for d in devices for arg in ("--device", str(d))]
    img = str(image)
    cmds = [
        ["inspect", "--json", img, *dev],
        ["ls", "-R", "-l", "-i", img, *dev],
        ["dump", img, *dev],
        ["check", "--data", "--quiet", img, *dev],
        ["extract", "--quiet", img, str(dest), *dev],
    ]
    cmds += [["cat", img, path, *dev] for path in paths[:40]]
    return cmds


def library_pass(image: Path, devices: list[Path]) -> None:
    """check, dump + rebuild and statistics through the API: only ErofsgenError may escape."""
    try:
        img = erofsgen.open_image(image, [str(d) for d in devices], strict_checksum=False)
    except ErofsgenError:
        return
    with img:
        for run in (check_image, rebuild_check, image_stats):
            with contextlib.suppress(ErofsgenError):
                run(img)


def run_case(
    number: int, seed: Seed, data: bytes, notes: list[str], work: Path, timeout: float, stats: Stats
) -> None:
    case_dir = work / f"case{number}"
    case_dir.mkdir()
    image = case_dir / "image"
    image.write_bytes(data)
    devices = []
    for k, raw in enumerate(seed.devices):
        devices.append(case_dir / f"dev{k}")
        devices[-1].write_bytes(raw)

    def failed(what: str, detail: str) -> None:
        stats.failures.append(Failure(number, seed.name, notes, what, detail))

    signal.setitimer(signal.ITIMER_REAL, timeout)
    step = "library"
    try:
        library_pass(image, devices)
        for argv in commands(image, devices, seed.paths, case_dir / "out"):
            step = " ".join(argv[:1] + argv[2:3] if argv[0] == "cat" else argv[:1])
            with captured() as err:
                try:
                    status = cli_main(argv)
                except OutputCapped:
                    status = 0
            stats.statuses[status] = stats.statuses.get(status, 0) + 1
            if status not in (0, 1, 2) or "Traceback" in err.getvalue():
                failed(step, f"exit status {status}; stderr: {err.getvalue()[-2000:]}")
    except CaseTimeout:
        failed(step, f"no result within {timeout} s")
    except (Exception, SystemExit) as exc:
        failed(step, "".join(traceback.format_exception(exc))[-4000:])
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        shutil.rmtree(case_dir, ignore_errors=True)
    stats.cases += 1


def limit_memory(mib: int) -> None:
    """Bound the address space: an unbounded allocation becomes a MemoryError (a finding)."""
    limit = mib << 20
    _soft, hard = resource.getrlimit(resource.RLIMIT_AS)
    if hard != resource.RLIM_INFINITY:
        limit = min(limit, hard)
    resource.setrlimit(resource.RLIMIT_AS, (limit, hard))


def fuzz(cases: int, seed_value: int, timeout: float, save: Path | None, progress: bool = False) -> Stats:
    """Run `cases` cases round-robin over the seeds; failing images go to `save` if given."""
    rng = random.Random(seed_value)
    stats = Stats()
    previous = signal.signal(signal.SIGALRM, _on_alarm)
    started = time.monotonic()
    try:
        with tempfile.TemporaryDirectory(prefix="fuzz-reader-") as tmp:
            work = Path(tmp)
            seeds = build_seeds(work)
            for number in range(cases):
                seed = seeds[number % len(seeds)]
                data, notes = make_case(rng, seed)
                before = len(stats.failures)
                run_case(number, seed, data, notes, work, timeout, stats)
                if save is not None and len(stats.failures) > before:
                    _save(save, number, seed, data)
                if progress and (number + 1) % 100 == 0:
                    elapsed = time.monotonic() - started
                    print(
                        f"{number + 1} cases, {len(stats.failures)} failures, {elapsed:.0f} s",
                        file=sys.stderr,
                    )
    finally:
        signal.signal(signal.SIGALRM, previous)
    return stats


def _save(save: Path, number: int, seed: Seed, data: bytes) -> None:
    save.mkdir(parents=True, exist_ok=True)
    (save / f"case{number}-{seed.name}.img").write_bytes(data)
    for k, raw in enumerate(seed.devices):
        (save / f"case{number}-{seed.name}.dev{k}").write_bytes(raw)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--cases", type=int, default=200)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--timeout", type=float, default=20.0, help="seconds per case")
    parser.add_argument("--memory", type=int, default=1536, help="address-space limit in MiB")
    parser.add_argument("--save", type=Path, help="keep the images of failing cases here")
    parser.add_argument("--progress", action="store_true", help="report every 100 cases on stderr")
    args = parser.parse_args()
    started = time.monotonic()
    limit_memory(args.memory)
    stats = fuzz(args.cases, args.seed, args.timeout, args.save, progress=args.progress)
    for f in stats.failures:
        print(f"FAIL case {f.case} seed {f.seed} step {f.what}: mutations {f.mutations}\n{f.detail}\n")
    shown = ", ".join(f"{k}: {v}" for k, v in sorted(stats.statuses.items()))
    elapsed = time.monotonic() - started
    print(f"{stats.cases} cases, {len(stats.failures)} failures, {elapsed:.1f} s; exit statuses {shown}")
    return 1 if stats.failures else 0


if __name__ == "__main__":
    sys.exit(main())
