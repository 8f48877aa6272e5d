#!/usr/bin/env python3
"""Compare `erofsgen mkcomposefs` with composefs's own mkcomposefs on random dump trees.

Usage: tools/crosscheck_mkcomposefs.py MKCOMPOSEFS [--examples N]

MKCOMPOSEFS is a mkcomposefs 1.0.8 binary (not something a fresh machine can install, so the
test suite pins image digests instead). Trees come from the suite's hypothesis strategy; each
is written as a composefs-dump(5) file, built by both, and the images must be the same bytes
(hypothesis shrinks a difference to a small tree). Exit status 1 on a difference.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
from pathlib import Path

from hypothesis import given, settings

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from erofsgen.composefs.dump import DumpEntry, format_dump, read_dump
from erofsgen.composefs.image import image_bytes
from tests.test_composefs_read import trees


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("mkcomposefs", help="path to a mkcomposefs 1.0.8 binary")
    parser.add_argument("--examples", type=int, default=200, help="random trees to compare")
    args = parser.parse_args()

    @settings(max_examples=args.examples, deadline=None, database=None)
    @given(trees())
    def same_bytes(case: tuple[list[DumpEntry], int]) -> None:
        entries, version = case
        text = format_dump(entries)
        made = subprocess.run(
            [args.mkcomposefs, "--min-version=0", f"--max-version={version}", "--from-file", "-", "-"],
            input=text,
            capture_output=True,
            check=True,
        )
        assert image_bytes(read_dump(text)[1], min_version=0, max_version=version) == made.stdout, text

    try:
        same_bytes()
    except AssertionError as exc:
        print(f"different bytes: {exc}", file=sys.stderr)
        return 1
    print(f"{args.examples} random trees: identical images")
    return 0


if __name__ == "__main__":
    sys.exit(main())
