"""Peak RSS of a command, measured from a small parent.

A child's ru_maxrss starts from its parent's RSS at fork (Linux keeps the forked copy's high
water mark across exec), so a command started by the test process itself reports at least the
test process's size. A small Python parent in between starts it afresh.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence
from pathlib import Path

_PARENT = (
    "import resource, subprocess, sys\n"
    "code = subprocess.run(sys.argv[2:]).returncode\n"
    "with open(sys.argv[1], 'w') as out:\n"
    "    out.write(str(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss))\n"
    "sys.exit(code)\n"
)


def measured(argv: Sequence[str], report: Path) -> list[str]:
    """`argv` run by a small parent that writes the command's peak RSS (KiB) to `report`."""
    return [sys.executable, "-c", _PARENT, str(report), *argv]


def peak_rss_bytes(report: Path) -> int:
    return int(report.read_text()) * 1024
