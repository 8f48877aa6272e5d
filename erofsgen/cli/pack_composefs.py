"""`erofsgen pack --composefs [--digest-store DIR] SOURCE IMAGE`: `erofsgen mkcomposefs` under pack.

The image is the one `erofsgen mkcomposefs [--digest-store DIR] SOURCE IMAGE` writes, byte for
byte. Only the pack options that mean the same thing for a composefs image are taken: `--workers`
(mkcomposefs's `--threads`), `--no-sync` and `--quiet`; every other one is refused by name, since
a composefs image has its own fixed layout (no block size, compression, chunks, UUID, label or
owner and time rewrites).
"""

from __future__ import annotations

import argparse
import os
import sys
from typing import Any

from ..errors import InvalidInputError

# Destinations of pack's arguments that --composefs keeps (the rest must be left at their default).
KEPT = frozenset({"sources", "image", "composefs", "digest_store", "workers", "sync", "quiet", "func"})


def add_options(parser: argparse.ArgumentParser) -> None:
    """Add `--composefs` and `--digest-store` to pack's parser."""
    parser.add_argument(
        "--composefs",
        action="store_true",
        help="write a composefs image of the directory SOURCE, byte-identical to `erofsgen mkcomposefs "
        "SOURCE IMAGE` (mkcomposefs 1.0.8): metadata only, regular files over 64 bytes named by "
        "fs-verity digest; only --digest-store, --workers, --no-sync and --quiet go with it",
    )
    parser.add_argument(
        "--digest-store",
        metavar="DIR",
        help="with --composefs: copy those files into DIR as objects named by fs-verity digest, "
        "each content once (as mkcomposefs --digest-store)",
    )


def refuse_other_options(args: argparse.Namespace, parser_actions: list[argparse.Action]) -> None:
    """Raise InvalidInputError naming the first option given that --composefs cannot take."""
    for action in parser_actions:
        if action.dest in KEPT or not action.option_strings or action.default is argparse.SUPPRESS:
            continue
        if getattr(args, action.dest, action.default) != action.default:
            raise InvalidInputError(
                f"{action.option_strings[0]} cannot be used with --composefs (a composefs image has "
                "mkcomposefs's fixed layout); only --digest-store, --workers, --no-sync and --quiet can"
            )


def run(args: argparse.Namespace, parser_actions: list[argparse.Action], summary_stream: Any) -> None:
    """Build the composefs image the arguments ask for."""
    from ..composefs.build import MkcomposefsOptions, load_source, write_layout
    from ..composefs.image import lay_out

    refuse_other_options(args, parser_actions)
    if len(args.sources) != 1 or args.sources[0] == "-" or not os.path.isdir(args.sources[0]):
        raise InvalidInputError("--composefs takes one directory SOURCE (no tar archives)")
    threads = args.workers if args.workers is not None else len(os.sched_getaffinity(0))
    options = MkcomposefsOptions(digest_store=args.digest_store, threads=threads)
    source = args.sources[0]
    # As pack does, a symlink to a directory is followed (the trailing slash makes lstat resolve it).
    source = os.path.join(source, "") if os.path.islink(source) else source
    # The tree has no name here, so lay_out can free it once rewritten.
    layout = lay_out(
        load_source(source, options), min_version=options.min_version, max_version=options.max_version
    )
    if args.image == "/dev/stdout" and sys.stdout.isatty():
        raise InvalidInputError("standard output is a terminal; refusing to write an image to it")
    digest = write_layout(layout, args.image, sync=args.sync)
    if not args.quiet:
        print(
            f"{args.image}: composefs image, {len(layout.records)} inodes, fs-verity digest {digest.hex()}",
            file=summary_stream,
        )
