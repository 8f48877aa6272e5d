"""`erofsgen mkcomposefs [options] SOURCE IMAGE`: a composefs image, as mkcomposefs 1.0.8 writes it."""

from __future__ import annotations

import argparse
import os
import sys
from typing import Any

from ..composefs.build import MkcomposefsOptions, load_source, write_layout
from ..composefs.image import emit, lay_out
from ..errors import ImageWriteError, InvalidInputError
from . import EXIT_OK
from .common import stdout_gone


def register(subparsers: Any) -> None:
    """Add the `mkcomposefs` sub-command."""
    parser = subparsers.add_parser(
        "mkcomposefs",
        help="write a composefs image byte-identical to mkcomposefs 1.0.8",
        description="Write the composefs image of SOURCE (a directory, or with --from-file a "
        "composefs-dump(5) file, - for standard input) to IMAGE (- for standard output), byte for "
        "byte as composefs's mkcomposefs 1.0.8 does, so its fs-verity digest is the same.",
    )
    parser.add_argument("source", metavar="SOURCE", help="directory, or dump file with --from-file")
    parser.add_argument("image", metavar="IMAGE", nargs="?", help="the image to write; - for stdout")
    parser.add_argument("--from-file", action="store_true", help="SOURCE is a composefs-dump(5) file")
    parser.add_argument(
        "--digest-store",
        metavar="DIR",
        help="copy regular files over 64 bytes into DIR as objects named by fs-verity digest",
    )
    parser.add_argument("--print-digest", action="store_true", help="print the image's fs-verity digest")
    parser.add_argument(
        "--print-digest-only",
        action="store_true",
        help="print the image's fs-verity digest and write no image (leave IMAGE out)",
    )
    parser.add_argument("--use-epoch", action="store_true", help="make every mtime zero")
    parser.add_argument("--skip-devices", action="store_true", help="leave out device nodes")
    parser.add_argument("--skip-xattrs", action="store_true", help="leave out xattrs")
    parser.add_argument("--user-xattrs", action="store_true", help="keep only user.* xattrs")
    parser.add_argument(
        "--min-version", type=int, metavar="N", help="format version to start from (default 0)"
    )
    parser.add_argument(
        "--max-version",
        type=int,
        metavar="N",
        help="highest format version to raise to when the tree needs it (default 1)",
    )
    parser.add_argument(
        "--threads",
        type=int,
        metavar="N",
        help="threads computing digests and filling the store (default: the usable CPUs)",
    )
    parser.set_defaults(func=run)


def _versions(args: argparse.Namespace) -> tuple[int, int]:
    """mkcomposefs's rule: defaults 0..1 unless either is given; an unset one is then 0."""
    if args.min_version is None and args.max_version is None:
        return 0, 1
    return args.min_version or 0, args.max_version or 0


def run(args: argparse.Namespace) -> int:
    """Build the image."""
    if args.print_digest_only and args.image is not None:
        raise InvalidInputError("IMAGE cannot be given with --print-digest-only")
    if not args.print_digest_only and args.image is None:
        raise InvalidInputError("no IMAGE given")
    if not args.source:
        raise InvalidInputError("empty SOURCE")
    threads = args.threads if args.threads is not None else len(os.sched_getaffinity(0))
    if threads <= 0:
        raise InvalidInputError(f"invalid thread count {threads}")
    low, high = _versions(args)
    options = MkcomposefsOptions(
        args.from_file,
        args.digest_store,
        args.use_epoch,
        args.skip_devices,
        args.skip_xattrs,
        args.user_xattrs,
        low,
        high,
        threads,
    )
    data = sys.stdin.buffer.read() if args.from_file and args.source == "-" else None
    if args.image == "-" and sys.stdout.isatty():
        raise InvalidInputError("standard output is a terminal; refusing to write an image to it")
    # Every refusal comes before output; the tree has no name, so lay_out can free it early.
    layout = lay_out(load_source(args.source, options, data), min_version=low, max_version=high)
    if args.print_digest_only:
        digest = emit(layout)[1]
    elif args.image == "-":
        try:
            digest = emit(layout, sys.stdout.buffer.write)[1]
            sys.stdout.buffer.flush()
        except BrokenPipeError:
            stdout_gone()
            raise ImageWriteError(
                "cannot write the image: the reader closed the pipe", "standard output"
            ) from None
    else:
        # As `pack` writes images: a regular file replaced whole or not at all (not even SIGKILL
        # leaves a part), a device or FIFO written in place and never unlinked.
        digest = write_layout(layout, args.image)
    if args.print_digest or args.print_digest_only:
        print(digest.hex())
    return EXIT_OK
