"""`erofsgen check IMAGE`: validate an image against the kernel's and fsck.erofs's rules.

Prints one line per finding on standard output (warnings start with `warning:`) and a summary
on standard error. Exit status: 0 clean (warnings allowed unless --strict), 1 problems found,
2 the image cannot be checked at all (missing file, wrong number of devices, a feature this
reader does not implement).
"""

from __future__ import annotations

import argparse
import sys
from typing import Any

from ..reader.check import DEFAULT_LIMIT, check_source, summarize
from . import EXIT_OK, EXIT_PROBLEMS
from .common import add_blob_store_option, add_device_option, resolved_devices, stdout_gone


def register(subparsers: Any) -> None:
    """Add the `check` sub-command."""
    parser = subparsers.add_parser(
        "check",
        help="check an image for corruption",
        description="Check IMAGE against the rules of the Linux kernel and fsck.erofs: superblock, "
        "every reachable inode, xattrs, data maps, directories, link counts (warnings).",
    )
    parser.add_argument("image", metavar="IMAGE", help="EROFS image")
    add_device_option(parser)
    add_blob_store_option(parser)
    parser.add_argument("--data", action="store_true", help="also decompress and read all file data")
    parser.add_argument("--strict", action="store_true", help="count warnings as problems")
    parser.add_argument(
        "--max-problems",
        type=int,
        default=DEFAULT_LIMIT,
        metavar="N",
        help=f"stop after N findings (default {DEFAULT_LIMIT})",
    )
    parser.add_argument("--quiet", action="store_true", help="no summary line")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    """Check, print the findings, return 0/1."""
    problems = check_source(
        args.image, resolved_devices(args, verify=True), data=args.data, limit=max(1, args.max_problems)
    )
    try:
        for problem in problems:
            print(problem)
        sys.stdout.flush()
    except BrokenPipeError:
        stdout_gone()
    if not args.quiet:
        print(f"erofsgen: {args.image}: {summarize(problems)}", file=sys.stderr)
    failed = any(args.strict or not p.is_warning for p in problems)
    return EXIT_PROBLEMS if failed else EXIT_OK
