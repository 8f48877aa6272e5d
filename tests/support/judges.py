"""Judges of the image matrix: every way an image is read back and held against its source.

Each judge states the fixtures it needs and the features it cannot read, so the matrix leaves
those cells out instead of skipping them. A new reader of images (a FUSE mount, a newer
fsck.erofs) is one more entry in `JUDGES`.
"""

from __future__ import annotations

import re
import shutil
from pathlib import Path

from erofsgen import open_image
from erofsgen.cli import main as cli_main
from erofsgen.reader.dump import rebuild_check
from tests.support.compare import assert_same_tree
from tests.support.matrix import (
    CHUNK_HOLES,
    EROFS_UTILS,
    FRAGMENTS,
    KERNEL,
    LONG_NAMES,
    LONG_PREFIXES,
    NEW_ALGORITHMS,
    SMALL_BLOCKS,
    Built,
    Context,
    Judge,
)
from tests.support.snapshot import image_snapshot, snapshot

# erofs-utils 1.5 (Debian's, on the test machines) fails on 255-byte names, supports only the
# page size as block size, predates long xattr name prefixes (1.7) and the FRAGMENTS/DEDUPE
# feature bit (1.6), which it refuses at the superblock, and decodes only LZ4.
EROFS_UTILS_1_5_CANNOT_READ = frozenset({LONG_NAMES, SMALL_BLOCKS, LONG_PREFIXES, FRAGMENTS, NEW_ALGORITHMS})


def _device_args(built: Built, option: str = "--device") -> list[str]:
    return [f"{option}={d}" for d in built.devices]


def _discard(tree: Path) -> None:
    # A passing cell's extracted tree is of no further use: the thousands of files in every
    # cell's temporary directory would only slow down pytest's clean-up of old runs.
    shutil.rmtree(tree)


def kernel(built: Built, ctx: Context) -> None:
    """Loop-mounted by the running kernel, the tree equals the source."""
    with ctx.kernel_mount()(built.image, built.devices) as mnt:
        assert_same_tree(built.expected, snapshot(mnt), ignore_fields=built.producer.ignore)


def fsck(built: Built, ctx: Context) -> None:
    """fsck.erofs finds nothing wrong with the image's metadata."""
    utils = ctx.erofs_utils()
    result = utils.fsck(built.image, *_device_args(built))
    assert result.returncode == 0, f"{utils.version_text}: {result.stdout}{result.stderr}"


def fsck_extract(built: Built, ctx: Context) -> None:
    """fsck.erofs --extract decodes every file, and its extraction holds the source's files."""
    utils = ctx.erofs_utils()
    out = ctx.tmp / "fsck-out"
    result = utils.fsck(built.image, *_device_args(built), f"--extract={out}")
    assert result.returncode == 0, f"{utils.version_text}: {result.stdout}{result.stderr}"
    # 1.5 restores neither xattrs, owners, times, hard links nor all mode bits when extracting.
    assert_same_tree(
        built.expected,
        snapshot(out),
        ignore_root_meta=True,
        ignore_mtime=True,
        ignore_owner=True,
        ignore_fields=("xattrs", "hardlinks", "nlink", "mode", *built.producer.ignore),
    )
    _discard(out)


def dump_erofs(built: Built, ctx: Context) -> None:
    """dump.erofs finds erofsgen's root inode and lists the source's top-level names."""
    utils = ctx.erofs_utils()
    info = utils.dump(built.image, *_device_args(built), "-s")
    root = re.search(r"^Filesystem root nid:\s+(\d+)$", info, re.MULTILINE)
    assert root is not None, info
    with open_image(built.image, built.devices) as img:
        assert int(root[1]) == img.root_nid
    listing = utils.dump(built.image, *_device_args(built), "--path=/", "--ls")
    names = [line.split(None, 2)[2] for line in listing.split(" FILENAME\n", 1)[1].splitlines()]
    top = [p for p in built.expected.entries if "/" not in p and p != "."]
    assert sorted(names) == sorted([".", "..", *top]), listing


def reader(built: Built, ctx: Context) -> None:
    """erofsgen's reader sees the source's tree (no mount, no root needed)."""
    actual = image_snapshot(built.image, built.devices)
    assert_same_tree(built.expected, actual, ignore_fields=built.producer.ignore)


def extract(built: Built, ctx: Context) -> None:
    """`erofsgen extract` recreates the source tree, skipping nothing."""
    out = ctx.tmp / "extracted"
    status = cli_main(["extract", str(built.image), str(out), *_device_args(built)])
    captured = ctx.capsys.readouterr()
    assert (status, captured.err) == (0, ""), captured.err  # skipped entries are listed on stderr
    assert captured.out.startswith("extracted ") and captured.out.count("\n") == 1, captured.out
    assert_same_tree(built.expected, snapshot(out), ignore_fields=built.producer.ignore)
    _discard(out)


def check(built: Built, ctx: Context) -> None:
    """`erofsgen check --data` reports no problem and no warning."""
    status = cli_main(["check", "--data", str(built.image), *_device_args(built)])
    captured = ctx.capsys.readouterr()
    assert (status, captured.out) == (0, ""), captured.out
    assert captured.err.endswith(": 0 problems, 0 warnings\n"), captured.err


def schema(built: Built, ctx: Context) -> None:
    """`erofsgen dump` runs, and every structure it parses rebuilds to the same bytes."""
    assert cli_main(["dump", str(built.image), *_device_args(built)]) == 0
    text = ctx.capsys.readouterr().out
    assert text.startswith("superblock @0x400") and "\nerror:" not in text
    with open_image(built.image, built.devices) as img:
        report = rebuild_check(img)
    assert report.ok, report.failures[:10]
    # An inode, a dirent and more per path: a walk that stopped early falls short of this.
    assert report.checked > 2 * len(built.expected.entries), report.checked


def properties(built: Built, ctx: Context) -> None:
    """The producer's own claim about its images (block size, size bound, prefixes chosen)."""
    assert built.producer.check is not None
    built.producer.check(built, ctx.images)


JUDGES: tuple[Judge, ...] = (
    # The slow ones write or walk the whole tree in Python; the first producer's cells run
    # in quick runs all the same.
    Judge("kernel", kernel, fixtures=(KERNEL,)),
    Judge("fsck", fsck, fixtures=(EROFS_UTILS,), cannot_read=EROFS_UTILS_1_5_CANNOT_READ),
    # The slowest judge (it writes the whole tree), so not spent on erofs-utils' own images.
    Judge(
        "fsck_extract",
        fsck_extract,
        fixtures=(EROFS_UTILS,),
        cannot_read=EROFS_UTILS_1_5_CANNOT_READ | {CHUNK_HOLES},
        applies=lambda producer: not producer.reference,
        slow=True,
    ),
    Judge("dump_erofs", dump_erofs, fixtures=(EROFS_UTILS,), cannot_read=EROFS_UTILS_1_5_CANNOT_READ),
    Judge("reader", reader),
    Judge("extract", extract, slow=True),
    Judge("check", check),
    Judge("schema", schema, slow=True),
    Judge("properties", properties, applies=lambda producer: producer.check is not None),
)
