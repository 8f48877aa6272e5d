"""`erofsgen pack SOURCE... IMAGE`: an image from a directory or tar archives, with mkfs.erofs's options.

SOURCE is a directory, a tar archive (plain, gzip, zstd, xz or bzip2, recognised by content)
or `-` for a tar archive on standard input. Several archives are OCI layers, lowest first,
merged into one tree with their whiteouts applied; `--aufs` keeps whiteouts as overlayfs ones.
`--tar=i` (tar index mode) leaves the data of one uncompressed archive file where it is: the
image's chunk indexes point into it, its extra device 1 (specs/tar-input.md).

Options keep mkfs.erofs 1.8's spellings and meanings. Times: `-T EPOCH` sets every file's mtime
and the build time to EPOCH (with `--mkfs-time`, only the build time); without `-T`,
SOURCE_DATE_EPOCH sets the build time and clamps newer mtimes to it (with `--mkfs-time`, only
the build time).
"""

from __future__ import annotations

import argparse
import os
import sys
import uuid
from collections.abc import Mapping
from typing import Any, NoReturn

from ..errors import InvalidInputError
from ..limits import MAX_TIME_NS
from ..model import Directory
from ..sources.directory import ScanProgress, tree_from_directory
from ..transform import TreeOverrides, apply_overrides
from ..writer.options import COMPRESSION_ALGORITHMS, MAX_WORKERS, InodeFormat, WriteOptions
from . import EXIT_ERROR, EXIT_OK, pack_composefs
from .progress import Progress

NS = 10**9
EXTENDED_OPTIONS = (
    "all-fragments",
    "dedupe",
    "force-inode-compact",
    "force-inode-extended",
    "fragments",
    "legacy-compress",
    "noinline_data",
    "nosbcrc",
    "ztailpacking",
)

# mkfs.erofs options that `pack` does not implement yet: each gets "OPTION is not supported yet"
# instead of an unknown-option error. Implementing one means deleting its line here.
NOT_YET_SUPPORTED = (
    "-d",
    "--block-list-file",
    "--clean",
    "--compress-hints",
    "--dsunit",
    "--file-contexts",
    "--fs-config-file",
    "--gzip",
    "--ignore-mtime",
    "--incremental",
    "--mount-point",
    "--offset",
    "--ovlfs-strip",
    "--preserve-mtime",
    "--product-out",
    "--random-algorithms",
    "--random-pclusterblks",
    "--root-xattr-isize",
    "--sort",
    "--ungzip",
    "--zfeature-bits",
)
# -E options that take "=VALUE": fragments=SIZE and all-fragments=SIZE, the packed inode's pclusters.
EXTENDED_WITH_SIZE = ("fragments", "all-fragments")
# mkfs.erofs -E options likewise (the name before any "=").
EXTENDED_NOT_YET_SUPPORTED = ("xattr-name-filter",)
# The parser's arguments, for --composefs to refuse those it cannot take.
_ACTIONS: list[argparse.Action] = []


def register(subparsers: Any) -> None:
    """Add the `pack` sub-command."""
    parser = subparsers.add_parser(
        "pack",
        help="build an image from a directory or tar archives",
        description="Build an EROFS image from the directory SOURCE, or from tar archives (plain, gzip, "
        "zstd, xz or bzip2, recognised by content; - reads one from standard input), "
        "with mkfs.erofs-compatible options. Several archives are layers, lowest first, merged "
        "with their OCI whiteouts (.wh.NAME, .wh..wh..opq) applied, as are the layers of "
        "oci:DIR[:TAG], an image of an OCI image layout directory. "
        "Note the order: SOURCE first, then IMAGE (mkfs.erofs takes IMAGE first).",
        epilog="mkfs.erofs options not supported yet: "
        + ", ".join(NOT_YET_SUPPORTED)
        + "; -E "
        + ", ".join(EXTENDED_NOT_YET_SUPPORTED)
        + ".",
    )
    parser.add_argument(
        "sources",
        nargs="+",
        metavar="SOURCE",
        help="directory to pack (a symlink to one is followed), or tar archives, or - for a tar on "
        "stdin, or oci:DIR[:TAG] for the layers of an image in an OCI image layout",
    )
    parser.add_argument("image", metavar="IMAGE", help="image file to write (- for standard output)")
    parser.add_argument(
        "--aufs",
        action="store_true",
        help="tar sources: keep whiteouts as overlayfs whiteouts (character device 0/0; "
        "trusted.overlay.opaque=y on opaque directories)",
    )
    parser.add_argument(
        "--tar",
        choices=("f", "i"),
        metavar="MODE",
        help="SOURCE is a tar archive: f copies its data into the image (the default for any "
        "archive); i (index mode) leaves the data in the archive, an uncompressed regular file, "
        "and the image (512-byte blocks) points into it: mount with the archive as extra device 1",
    )
    _add_layout_options(parser)
    _add_chunk_options(parser)
    _add_compression_options(parser)
    _add_time_options(parser)
    _add_owner_options(parser)
    parser.add_argument(
        "--exclude-path",
        action="append",
        default=[],
        metavar="X",
        help="skip the path X relative to SOURCE (repeatable)",
    )
    parser.add_argument(
        "--exclude-regex",
        action="append",
        default=[],
        metavar="X",
        help="skip paths matching the regular expression X (repeatable)",
    )
    parser.add_argument(
        "--no-sync",
        dest="sync",
        action="store_false",
        help="do not flush the image to disk before renaming it into place (faster, not crash-safe)",
    )
    parser.add_argument("--quiet", action="store_true", help="print nothing but errors")
    pack_composefs.add_options(parser)
    for option in NOT_YET_SUPPORTED:
        parser.add_argument(option, action=_NotYetSupported)
    parser.set_defaults(func=run)
    _ACTIONS[:] = parser._actions


class _NotYetSupported(argparse.Action):
    """A mkfs.erofs option `pack` lacks: one-line usage error naming it, whatever its value."""

    def __init__(self, option_strings: list[str], dest: str, **kwargs: Any) -> None:
        super().__init__(option_strings, dest, nargs="?", default=argparse.SUPPRESS, help=argparse.SUPPRESS)

    def __call__(
        self, parser: argparse.ArgumentParser, namespace: argparse.Namespace, values: Any, option: Any = None
    ) -> None:
        _not_yet_supported(parser, str(option))


class _ExtendedAction(argparse.Action):
    """-E: collects the option lists; names an -E option `pack` lacks."""

    def __call__(
        self, parser: argparse.ArgumentParser, namespace: argparse.Namespace, values: Any, option: Any = None
    ) -> None:
        for opt in values:
            if opt.partition("=")[0] in EXTENDED_NOT_YET_SUPPORTED:
                _not_yet_supported(parser, f"-E {opt}")
        setattr(namespace, self.dest, [*getattr(namespace, self.dest), values])


def _not_yet_supported(parser: argparse.ArgumentParser, option: str) -> NoReturn:
    parser.exit(EXIT_ERROR, f"{parser.prog}: error: {option} is not supported yet\n")


def _add_layout_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "-b",
        dest="block_size",
        type=int,
        choices=(512, 1024, 2048, 4096),
        metavar="SIZE",
        help="block size: 512, 1024, 2048 or 4096 (default 4096; 512, the only one, with --tar=i)",
    )
    parser.add_argument(
        "-U", dest="uuid", type=_uuid, metavar="UUID", help="volume UUID, or 'clear' (all zeros) or 'random'"
    )
    parser.add_argument("-L", dest="label", default="", metavar="LABEL", help="volume label (≤15 bytes)")
    parser.add_argument(
        "-x",
        dest="xattr_threshold",
        type=int,
        default=2,
        metavar="N",
        help="share xattrs found on more than N inodes; -1 drops all xattrs",
    )
    parser.add_argument(
        "-E",
        dest="extended",
        type=_extended,
        action=_ExtendedAction,
        default=[],
        metavar="OPT[,OPT...]",
        help=f"extended options: {', '.join(EXTENDED_OPTIONS)}",
    )
    parser.add_argument(
        "--xattr-prefix",
        action="append",
        default=[],
        metavar="PREFIX",
        help="store xattrs starting with PREFIX under a long name prefix (repeatable); "
        "'auto': wherever that makes the image smaller (Linux 6.4+)",
    )


def _add_chunk_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--chunksize",
        dest="chunk_size",
        type=_chunk_size,
        metavar="BYTES",
        help="store files of a block or more as chunks of BYTES (a power of two ≥ the block size), "
        "deduplicated, all-zero chunks as holes (default with --blobdev/--blob-store: 65536)",
    )
    target = parser.add_mutually_exclusive_group()
    target.add_argument(
        "--blobdev",
        dest="blob_device",
        metavar="FILE",
        help="write every chunk to FILE, one extra device of the image (mount with -o device=FILE)",
    )
    target.add_argument(
        "--blob-store",
        dest="blob_stores",
        action="append",
        default=[],
        metavar="DIR",
        help="reuse chunks found in the blob store DIR (repeatable); new chunks go into one new "
        "blob in the first DIR, which is created if missing",
    )


def _add_compression_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "-z",
        dest="compression",
        type=_compression,
        metavar="ALG[,LEVEL]",
        help="compress regular files with lz4, lz4hc (LEVEL 0..12, default 9), zstd (1..22, default 3), "
        "deflate (0..9, default 6) or lzma (MicroLZMA, 0..9, default 6; 100..109: extreme), "
        "e.g. -zlz4hc,12 or -zzstd,level=19; zstd, deflate and lzma need Linux 6.10, 6.6 and 5.16",
    )
    parser.add_argument(
        "-C",
        dest="pcluster_size",
        type=_pcluster_size,
        metavar="BYTES",
        help="largest physical cluster of compressed data: a multiple of the block size up to 1 MiB "
        "(default: the block size; larger needs Linux 5.13)",
    )
    parser.add_argument(
        "--max-extent-bytes",
        dest="max_extent_bytes",
        type=_max_extent_bytes,
        metavar="BYTES",
        help="most file bytes one compressed extent may hold (at least the block size)",
    )
    parser.add_argument(
        "--workers",
        type=_workers,
        metavar="N",
        help="workers that read and compress files: processes where they can be forked, else threads "
        "(default: every usable cpu for compression, 2 threads otherwise); the image is the same for any N",
    )


def _compression(text: str) -> tuple[str, int | None]:
    """ALG, ALG,LEVEL or (mkfs.erofs 1.8+) ALG,level=LEVEL."""
    from ..writer.codecs import check_level

    name, sep, level_text = text.partition(",")
    if name not in COMPRESSION_ALGORITHMS:
        known = ", ".join(COMPRESSION_ALGORITHMS)
        raise argparse.ArgumentTypeError(f"{name!r} is not a supported algorithm ({known})")
    if not sep:
        return name, None
    key, eq, value = level_text.partition("=")
    if eq and key != "level":
        raise argparse.ArgumentTypeError(f"{key!r} is not a compression option (only level=LEVEL)")
    try:
        level = int(value if eq else level_text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{level_text!r} is not a compression level") from None
    try:
        check_level(name, level)
    except InvalidInputError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None
    return name, level


def _workers(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
    if not 1 <= value <= MAX_WORKERS:
        raise argparse.ArgumentTypeError(f"{value} is not from 1 to {MAX_WORKERS}")
    return value


def _max_extent_bytes(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number of bytes") from None
    if value <= 0:
        raise argparse.ArgumentTypeError(f"{value} is not a positive number of bytes")
    return value


def _pcluster_size(text: str) -> int:
    try:
        value = int(text, 0)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number of bytes") from None
    if value <= 0:
        raise argparse.ArgumentTypeError(f"{value} is not a positive size")
    return value


def _chunk_size(text: str) -> int:
    try:
        value = int(text, 0)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number of bytes") from None
    if value <= 0 or value & (value - 1):
        raise argparse.ArgumentTypeError(f"{value} is not a power of two")
    return value


def _add_time_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "-T", dest="epoch", type=_epoch, metavar="EPOCH", help="give every file and the image this UNIX time"
    )
    scope = parser.add_mutually_exclusive_group()
    scope.add_argument(
        "--all-time",
        dest="mkfs_time",
        action="store_false",
        help="with -T: apply the time to every file too (default)",
    )
    scope.add_argument(
        "--mkfs-time",
        dest="mkfs_time",
        action="store_true",
        help="with -T or SOURCE_DATE_EPOCH: set only the image's build time",
    )
    parser.set_defaults(mkfs_time=False)


def _add_owner_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--all-root", action="store_true", help="make every file owned by 0:0")
    parser.add_argument("--force-uid", type=int, metavar="N", help="make every file owned by uid N")
    parser.add_argument("--force-gid", type=int, metavar="N", help="make every file's group gid N")
    parser.add_argument("--uid-offset", type=int, default=0, metavar="N", help="add N to every uid")
    parser.add_argument("--gid-offset", type=int, default=0, metavar="N", help="add N to every gid")


def run(args: argparse.Namespace) -> int:
    """Scan SOURCE, apply the overrides and write IMAGE."""
    if args.image == "-":  # as for SOURCE, "-" is the standard stream; "./-" names a file
        args.image = "/dev/stdout"
    if args.composefs:
        pack_composefs.run(args, _ACTIONS, sys.stderr if _is_stdout(args.image) else sys.stdout)
        return EXIT_OK
    if args.digest_store is not None:
        raise InvalidInputError("--digest-store goes with --composefs")
    build_time_ns, mtime_ns, clamp_ns = _times(args, os.environ)
    options = write_options(args, build_time_ns)
    overrides = tree_overrides(args, mtime_ns, clamp_ns)
    from ..writer import cutting_ahead, write_image

    # An image written to standard output must not get the summary mixed into it.
    summary_stream = sys.stderr if _is_stdout(args.image) else sys.stdout
    archives = tar_sources(args.sources, args.image)
    if args.tar and not archives:  # one SOURCE that is a directory or missing
        what = "a directory" if os.path.isdir(args.sources[0]) else "missing"
        raise InvalidInputError(f"--tar={args.tar} needs a tar archive; this is {what}", path=args.sources[0])
    source = "" if archives else source_directory(args.sources[0], args.image)
    # Files found by the scan of a directory are compressed while it goes on.
    with Progress(quiet=args.quiet) as progress, cutting_ahead(options) as stage:
        if archives:
            root = archive_tree(args, archives, progress.scanned)
        else:
            if args.aufs:
                raise InvalidInputError("--aufs applies to tar sources only", path=source)
            root = tree_from_directory(
                source,
                exclude_paths=args.exclude_path,
                exclude_regexes=args.exclude_regex,
                read_xattrs=options.xattrs,
                on_progress=progress.scanned,
                on_file=stage.cut_ahead if stage is not None else None,
            )
        apply_overrides(root, overrides)
        summary = write_image(
            root, args.image, options, progress=progress.written, sync=args.sync, stage=stage
        )
    if not args.quiet:
        print(
            f"{args.image}: {summary.inodes} inodes, {summary.blocks} blocks of {summary.block_size} bytes, "
            f"uuid {summary.uuid}",
            file=summary_stream,
        )
    return EXIT_OK


def archive_tree(args: argparse.Namespace, archives: list[str], on_progress: ScanProgress) -> Directory:
    """The tree of the tar SOURCEs: one archive as it extracts; several, or the layers of an
    `oci:` image, merged with their whiteouts."""
    if args.exclude_path or args.exclude_regex:
        raise InvalidInputError("--exclude-path and --exclude-regex apply to directory sources only")
    # tarfile, the decompressors and json: imported only for archives.
    from ..sources.oci import is_oci_source, oci_layers
    from ..sources.tar_tree import tree_from_layers

    if args.tar == "i":
        return index_tree(args, archives, on_progress)
    layers: list[object] = []
    for archive in archives:
        layers.extend(oci_layers(archive) if is_oci_source(archive) else [archive])
    layered = len(layers) > 1 or any(map(is_oci_source, archives))
    return tree_from_layers(layers, whiteouts=layered, overlay=args.aufs, on_progress=on_progress)


def index_tree(args: argparse.Namespace, archives: list[str], on_progress: ScanProgress) -> Directory:
    """--tar=i: the tree of one uncompressed archive file, its data left there."""
    from ..sources.tar_tree import tree_from_tar

    if len(archives) != 1 or archives[0].startswith("oci:"):
        raise InvalidInputError("--tar=i indexes exactly one tar archive file")
    return tree_from_tar(archives[0], overlay=args.aufs, on_progress=on_progress, index=True)


def tar_sources(sources: list[str], image: str) -> list[str]:
    """The SOURCE arguments as tar archives, or [] for one directory (checked by the scan).

    `-` and anything that is not a directory (a regular file, a pipe) is read as an archive;
    whether it is one is up to its content; `oci:DIR[:TAG]` stands for an image's layers.
    Several SOURCEs must all be archives.
    """
    if len(sources) == 1 and sources[0] != "-" and not sources[0].startswith("oci:"):
        only = sources[0]
        if os.path.isdir(only) or not os.path.exists(only) or os.path.isdir(image):
            return []  # a directory, or a mistake the directory check explains
    if sources.count("-") > 1:
        raise InvalidInputError("standard input (-) can be read only once")
    for source in sources:
        if source != "-" and not source.startswith("oci:") and os.path.isdir(source):
            raise InvalidInputError("a directory cannot be merged with tar layers", path=source)
    return sources


def source_directory(source: str, image: str) -> str:
    """SOURCE as the scan should take it: a symlink to a directory is followed, as by mkfs.erofs.

    A SOURCE that is no directory while IMAGE is one is the mkfs.erofs argument order: say so.
    """
    if os.path.isdir(source):
        # The trailing slash makes the scan's lstat of the root resolve the link.
        return os.path.join(source, "") if os.path.islink(source) else source
    if os.path.isdir(image):
        # A new image's name given first (mkfs order) does not exist yet: say that, not "not a directory".
        what = "not a directory" if os.path.lexists(source) else "no such directory"
        raise InvalidInputError(
            f"{what}; IMAGE is a directory — the order is `erofsgen pack SOURCE IMAGE` "
            "(mkfs.erofs takes IMAGE first)",
            path=source,
        )
    return source


def _is_stdout(image: str) -> bool:
    """Whether IMAGE is the file standard output goes to (`/dev/stdout`, `/dev/fd/1`, ...)."""
    try:
        out = os.fstat(sys.stdout.fileno())
        target = os.stat(image)
    except (OSError, ValueError, AttributeError):
        return False  # no real stdout (captured), or no IMAGE yet
    return (out.st_dev, out.st_ino) == (target.st_dev, target.st_ino)


def write_options(args: argparse.Namespace, build_time_ns: int | None) -> WriteOptions:
    """The WriteOptions the parsed arguments ask for."""
    extended, packed_pcluster_size = _packed_pcluster_size([opt for group in args.extended for opt in group])
    return WriteOptions(
        block_size=args.block_size or (512 if args.tar == "i" else 4096),
        build_time_ns=build_time_ns,
        uuid=args.uuid,
        label=args.label,
        xattrs=args.xattr_threshold >= 0,
        xattr_share_threshold=max(args.xattr_threshold, 0),
        xattr_prefixes=tuple(os.fsencode(p) for p in args.xattr_prefix if p != "auto"),
        auto_xattr_prefixes="auto" in args.xattr_prefix,
        inode_format=_inode_format(args.extended),
        inline_data="noinline_data" not in extended,
        sb_checksum="nosbcrc" not in extended,
        chunk_size=args.chunk_size,
        blob_device=args.blob_device,
        blob_stores=tuple(args.blob_stores),
        tar_index=args.sources[0] if args.tar == "i" else None,
        compression=args.compression[0] if args.compression else None,
        compression_level=args.compression[1] if args.compression else None,
        pcluster_size=args.pcluster_size,
        compact_indexes="legacy-compress" not in extended,
        ztailpacking="ztailpacking" in extended,
        max_extent_bytes=args.max_extent_bytes,
        fragments="fragments" in extended or "all-fragments" in extended,
        all_fragments="all-fragments" in extended,
        dedupe="dedupe" in extended,
        packed_pcluster_size=packed_pcluster_size,
        workers=args.workers,
    )


def tree_overrides(args: argparse.Namespace, mtime_ns: int | None, clamp_ns: int | None) -> TreeOverrides:
    """The owner and time rewrites the parsed arguments ask for."""
    return TreeOverrides(
        mtime_ns=mtime_ns,
        clamp_mtime_ns=clamp_ns,
        all_root=args.all_root,
        force_uid=args.force_uid,
        force_gid=args.force_gid,
        uid_offset=args.uid_offset,
        gid_offset=args.gid_offset,
    )


def _times(args: argparse.Namespace, environ: Mapping[str, str]) -> tuple[int | None, int | None, int | None]:
    """(build time, fixed mtime, mtime clamp) in nanoseconds, from -T, --mkfs-time and the env."""
    if args.epoch is not None:
        epoch_ns = args.epoch * NS
        return epoch_ns, None if args.mkfs_time else epoch_ns, None
    source_date_epoch = environ.get("SOURCE_DATE_EPOCH", "")
    if not source_date_epoch:
        return None, None, None
    try:
        epoch_ns = _epoch(source_date_epoch) * NS
    except argparse.ArgumentTypeError as exc:
        raise InvalidInputError(f"SOURCE_DATE_EPOCH: {exc}") from None
    return epoch_ns, None, None if args.mkfs_time else epoch_ns


def _inode_format(groups: list[list[str]]) -> InodeFormat:
    # As in mkfs.erofs, the last force-inode-* given wins.
    chosen = InodeFormat.AUTO
    for opt in (opt for group in groups for opt in group):
        if opt == "force-inode-compact":
            chosen = InodeFormat.COMPACT
        elif opt == "force-inode-extended":
            chosen = InodeFormat.EXTENDED
    return chosen


def _epoch(text: str) -> int:
    try:
        value = int(text, 10)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a UNIX timestamp") from None
    if value < 0:
        raise argparse.ArgumentTypeError(f"{text!r} is a negative timestamp")
    if value * NS > MAX_TIME_NS:
        raise argparse.ArgumentTypeError(f"{text!r} is beyond the last time an image can hold")
    return value


def _uuid(text: str) -> uuid.UUID:
    if text == "clear":
        return uuid.UUID(int=0)
    if text == "random":
        return uuid.uuid4()
    try:
        return uuid.UUID(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a UUID, 'clear' or 'random'") from None


def _extended(text: str) -> list[str]:
    opts = [opt for opt in text.split(",") if opt]
    for opt in opts:
        name, valued, value = opt.partition("=")
        if valued and name in EXTENDED_WITH_SIZE:
            if not value.isdigit():
                raise argparse.ArgumentTypeError(f"-E {name}={value}: the size must be a number of bytes")
        elif opt not in EXTENDED_OPTIONS and name not in EXTENDED_NOT_YET_SUPPORTED:
            raise argparse.ArgumentTypeError(
                f"unknown extended option {opt!r} (known: {', '.join(EXTENDED_OPTIONS)})"
            )
    return opts


def _packed_pcluster_size(extended: list[str]) -> tuple[set[str], int | None]:
    """-E fragments=SIZE / all-fragments=SIZE: the options without their sizes, and the size
    (the last one given)."""
    size = None
    plain = set()
    for opt in extended:
        name, valued, value = opt.partition("=")
        if valued and name in EXTENDED_WITH_SIZE:
            size = int(value)
        plain.add(name)
    return plain, size
