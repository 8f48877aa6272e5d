"""`erofsgen store ACTION DIR ...`: maintenance of a content-addressed blob store.

verify: re-hash every blob and check every index segment; exit 0 clean (warnings such as orphan
blobs and temporary files allowed), 1 problems found (with --repair: found, and removed),
2 the store cannot be checked. gc: remove what no kept image references (a dry run unless
--delete). du: space used, and shared by the given images.
"""

from __future__ import annotations

import argparse
import sys
from typing import Any

from ..blobs.maintenance import DEFAULT_STALE_MINUTES, UsageReport
from ..blobs.store import BlobStore
from ..errors import InvalidInputError
from ..reader.names import escape_name
from . import EXIT_OK, EXIT_PROBLEMS
from .common import stdout_gone

ACTIONS = ("verify", "gc", "du")


def register(subparsers: Any) -> None:
    """Add the `store` sub-command."""
    parser = subparsers.add_parser(
        "store",
        help="verify, garbage-collect or measure a blob store",
        description="Maintain the blob store DIR. verify: re-hash every blob and check every index "
        "segment against its blob; problems (corrupt blobs, damaged segments) make the exit "
        "status 1, warnings (orphan blobs, temporary files) do not. gc: remove the blobs no "
        "--keep image references, orphan blobs, segments without a blob and stale temporary "
        "files; only a list unless --delete. du: blob count and bytes, and with IMAGE "
        "arguments the bytes those images reference in the store.",
    )
    parser.add_argument("action", metavar="ACTION", choices=ACTIONS, help="verify, gc or du")
    parser.add_argument("store", metavar="DIR", help="the blob store directory")
    parser.add_argument("images", metavar="IMAGE", nargs="*", help="du: images whose usage to show")
    parser.add_argument(
        "--keep",
        action="extend",
        nargs="+",
        default=[],
        metavar="IMAGE",
        help="gc: an image whose blobs stay (repeatable; gc needs at least one)",
    )
    parser.add_argument("--delete", action="store_true", help="gc: remove the files, not only list them")
    parser.add_argument(
        "--repair",
        action="store_true",
        help="verify: remove damaged segments, corrupt blobs and their segments, stale temporary files",
    )
    parser.add_argument(
        "--stale-minutes",
        type=float,
        default=DEFAULT_STALE_MINUTES,
        metavar="N",
        help="a temporary file is stale when its writer's process is gone or it is older than N "
        f"minutes (default {DEFAULT_STALE_MINUTES:g})",
    )
    parser.add_argument("--quiet", action="store_true", help="no summary line")
    parser.set_defaults(func=run)


def _check_options(args: argparse.Namespace) -> None:
    misplaced = [
        (args.keep and args.action != "gc", "--keep"),
        (args.delete and args.action != "gc", "--delete"),
        (args.repair and args.action != "verify", "--repair"),
        (args.images and args.action != "du", "IMAGE arguments"),
    ]
    for wrong, what in misplaced:
        if wrong:
            raise InvalidInputError(f"{what} cannot be used with 'store {args.action}'")
    if args.action == "gc" and not args.keep:
        raise InvalidInputError("'store gc' needs --keep IMAGE (the images whose blobs stay)")


def run(args: argparse.Namespace) -> int:
    """Run one maintenance action; exit status as the module says."""
    _check_options(args)
    writable = args.repair or args.delete
    store = BlobStore.open(args.store, writable=writable)
    try:
        if args.action == "verify":
            return _verify(store, args)
        if args.action == "gc":
            return _gc(store, args)
        return _du(store, args)
    except BrokenPipeError:
        return stdout_gone()


def _summary(args: argparse.Namespace, text: str) -> None:
    if not args.quiet:
        print(f"erofsgen: {escape_name(args.store)}: {text}", file=sys.stderr)


def _verify(store: BlobStore, args: argparse.Namespace) -> int:
    report = store.verify(repair=args.repair, stale_minutes=args.stale_minutes)
    for finding in report.findings:
        print(finding)
    sys.stdout.flush()
    problems, warnings = len(report.problems), len(report.warnings)
    _summary(
        args,
        f"{report.blobs} blobs, {report.segments} segments, {report.chunks} chunks checked: "
        f"{problems} problems, {warnings} warnings",
    )
    return EXIT_PROBLEMS if problems else EXIT_OK


def _gc(store: BlobStore, args: argparse.Namespace) -> int:
    report = store.gc(args.keep, dry_run=not args.delete)
    verb = "would remove" if report.dry_run else "removed"
    for removal in report.removals:
        print(f"{verb} {escape_name(removal.name)}: {removal.size} bytes, {removal.reason}")
    for name in report.missing_blobs:
        print(f"warning: blobs/sha256/{name}: a kept image needs it, the store does not have it")
    sys.stdout.flush()
    hint = " (a dry run: --delete removes them)" if report.dry_run and report.removals else ""
    _summary(
        args,
        f"{verb} {len(report.removals)} files, {report.bytes} bytes; kept {report.kept_blobs} blobs{hint}",
    )
    return EXIT_OK


def format_usage(report: UsageReport) -> list[str]:
    """`store du` output lines."""
    lines = [
        f"blobs: {report.blobs}",
        f"stored bytes: {report.stored_bytes}",
        f"index segments: {report.segments}",
        f"indexed chunk bytes: {report.indexed_bytes}",
    ]
    if report.damaged_segments:
        lines.append(f"damaged index segments: {report.damaged_segments}")
    for image in report.images:
        lines.append(
            f"image {escape_name(image.image)}: {image.logical_bytes} logical bytes in {image.blobs} blobs"
        )
    if report.images:
        lines.append(f"images logical bytes: {report.logical_bytes}")
        lines.append(f"images stored bytes: {report.referenced_stored_bytes}")
        if report.referenced_stored_bytes:
            ratio = report.logical_bytes / report.referenced_stored_bytes
            lines.append(f"sharing ratio: {ratio:.2f}")
    return lines


def _du(store: BlobStore, args: argparse.Namespace) -> int:
    for line in format_usage(store.du(args.images)):
        print(line)
    sys.stdout.flush()
    return EXIT_OK
