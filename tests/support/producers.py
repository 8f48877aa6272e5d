"""Producers of the image matrix: erofsgen and mkfs.erofs, each with the option sets worth judging.

Every entry says what its images need (extra devices, fixtures), what they contain that some
judge cannot read, and what it changes or drops on purpose. A new writer capability (a
compressor, a blob store, tar input) is one more entry in `PRODUCERS`.

mkfs.erofs is Debian's 1.5 on the test machines: it cannot pack 255-byte names, so its
producers take the short-name scenario. With default options it keeps everything the
scenario records (see tests/test_support.py), so its round trips compare exactly.
"""

from __future__ import annotations

import dataclasses
import stat
import subprocess
from collections.abc import Callable, Collection
from pathlib import Path

from erofsgen import open_image
from erofsgen.cli import main as cli_main
from erofsgen.format.constants import ChunkFormat, CompressionAlgorithm, DataLayout, FeatureIncompat
from erofsgen.reader.zmap import Extent
from tests.support import erofs_utils as eu
from tests.support.matrix import (
    CHUNK_HOLES,
    EROFS_UTILS,
    FRAGMENTS,
    LONG_NAMES,
    LONG_PREFIXES,
    NEW_ALGORITHMS,
    SMALL_BLOCKS,
    Built,
    ImageCache,
    Producer,
    blank,
    unchanged,
)
from tests.support.snapshot import TreeSnapshot

DEFAULT = "erofsgen_default"  # the image others compare their size with
BLOB = "{blob}"  # in erofsgen and mkfs.erofs options: the extra device's path
STORE = "{store}"  # in erofsgen options: a blob store, whose blobs become the extra devices
_Expect = Callable[[TreeSnapshot], TreeSnapshot]
_Check = Callable[[Built, ImageCache], None]


def _pack(args: tuple[str, ...]) -> Callable[[Path, Path], tuple[Path, ...]]:
    def make(source: Path, image: Path) -> tuple[Path, ...]:
        blob, store = image.with_name("blob"), image.with_name("store")
        args_here = [a.replace(BLOB, str(blob)).replace(STORE, str(store)) for a in args]
        status = cli_main(["pack", "--quiet", *args_here, str(source), str(image)])
        assert status == 0, f"erofsgen pack {' '.join(args)} exited {status}"
        assert image.stat().st_size > 0
        if STORE in "".join(args):  # the devices are the store's blobs the image names
            with open_image(image) as img:
                return tuple(store / "blobs" / "sha256" / d.tag.decode() for d in img.superblock.devices)
        return (blob,) if BLOB in "".join(args) else ()

    return make


def _tar(args: tuple[str, ...]) -> Callable[[Path, Path], tuple[Path, ...]]:
    """GNU tar (PAX, xattrs, ACLs, sparse) of the source, then `erofsgen pack ARGS ARCHIVE IMAGE`."""

    def make(source: Path, image: Path) -> tuple[Path, ...]:
        archive = image.with_name("source.tar")
        tar = ["tar", "--format=posix", "--xattrs", "--xattrs-include=*", "--acls", "--sparse"]
        subprocess.run([*tar, "--numeric-owner", "-cf", str(archive), "-C", str(source), "."], check=True)
        status = cli_main(["pack", "--quiet", *args, str(archive), str(image)])
        assert status == 0, f"erofsgen pack {' '.join(args)} ARCHIVE exited {status}"
        archive.unlink()
        return ()

    return make


def _as_gnu_tar_keeps_it(snap: TreeSnapshot) -> TreeSnapshot:
    """No sockets (tar cannot hold them); FIFOs and devices hard-linked in the source come out
    as separate inodes (GNU tar links only regular files and symlinks)."""
    kept = {path: entry for path, entry in snap.entries.items() if entry.kind != "sock"}
    separate = {path for path, entry in kept.items() if entry.kind in ("fifo", "chr", "blk")}
    for path in separate:
        kept[path] = dataclasses.replace(kept[path], nlink=1)
    links = frozenset(group for group in snap.hardlinks if not group & separate)
    return TreeSnapshot(kept, links)


def _mkfs(args: tuple[str, ...]) -> Callable[[Path, Path], tuple[Path, ...]]:
    def make(source: Path, image: Path) -> tuple[Path, ...]:
        blob = image.with_name("blob")
        eu.mkfs(image, source, "--quiet", *(a.replace(BLOB, str(blob)) for a in args))
        return (blob,) if BLOB in "".join(args) else ()

    return make


def erofsgen(
    name: str,
    *args: str,
    features: Collection[str] = (),
    expect: _Expect | None = None,
    ignore: tuple[str, ...] = (),
    check: _Check | None = None,
) -> Producer:
    """`erofsgen pack ARGS SOURCE IMAGE`."""
    return Producer(
        f"erofsgen_{name}",
        _pack(args),
        features=frozenset(features),
        expect=expect or unchanged,
        ignore=ignore,
        check=check,
    )


def erofsgen_tar(name: str, *args: str, check: _Check | None = None) -> Producer:
    """`erofsgen pack ARGS ARCHIVE IMAGE` from a GNU tar archive of the source."""
    return Producer(f"erofsgen_tar_{name}", _tar(args), expect=_as_gnu_tar_keeps_it, check=check)


def mkfs_erofs(name: str, *args: str, expect: _Expect | None = None) -> Producer:
    """`mkfs.erofs --quiet ARGS IMAGE SOURCE`; "{blob}" in ARGS makes an extra device."""
    return Producer(
        f"mkfs_{name}",
        _mkfs(args),
        fixtures=(EROFS_UTILS,),
        reference=True,
        slow=True,  # the mkfs.erofs matrix is the suite's long tail
        cannot_pack=frozenset({LONG_NAMES}),
        expect=expect or unchanged,
    )


# --------------------------------------------------------------------------- what they change


def _mtime(seconds: int) -> _Expect:
    return lambda snap: blank(snap, mtime_ns=seconds * 1_000_000_000)


def _all_root(snap: TreeSnapshot) -> TreeSnapshot:
    return blank(snap, uid=0, gid=0)


def _no_xattrs(snap: TreeSnapshot) -> TreeSnapshot:
    # ACLs are xattrs too: the group bits they set in the mode stay, so the mode compares.
    return blank(snap, xattrs=())


# --------------------------------------------------------------------------- their own properties


def _block_size(size: int) -> _Check:
    def check(built: Built, images: ImageCache) -> None:
        with open_image(built.image) as img:
            assert img.superblock.block_size == size
        assert built.image.stat().st_size % size == 0

    return check


def _no_larger_than_default(built: Built, images: ImageCache) -> None:
    plain = images.sibling(built, DEFAULT).image.stat().st_size
    assert built.image.stat().st_size <= plain, f"{built.image.stat().st_size} B > {plain} B without prefixes"


def _picks_prefixes(built: Built, images: ImageCache) -> None:
    with open_image(built.image) as img:
        assert img.superblock.long_prefixes, "the scenario's 40-xattr file should call for a prefix"
    _no_larger_than_default(built, images)


def _has_prefixes(*prefixes: bytes) -> _Check:
    def check(built: Built, images: ImageCache) -> None:
        with open_image(built.image) as img:
            sb = img.superblock
            assert sb.xattr_prefix_count == len(sb.long_prefixes) > 0
            assert {lp.prefix for lp in sb.long_prefixes} <= set(prefixes)
            records = [
                rec
                for top, dirs, files in img.walk("/")
                for name in ["", *dirs, *files]
                for rec in img.xattr_records_nid(img.lookup(f"{top.rstrip('/')}/{name}"))
            ]
            # Every entry whose name starts with a given prefix is stored under a long prefix
            # (e_name_index bit 0x80) that the name really starts with.
            matching = [rec for rec in records if (rec.name or b"").startswith(prefixes)]
            assert matching
            for rec in matching:
                assert rec.name_index & 0x80, rec.name
                prefix = sb.long_prefixes[rec.name_index & 0x7F].prefix
                assert prefix is not None and (rec.name or b"").startswith(prefix)
        _no_larger_than_default(built, images)

    return check


def _chunked(block_size: int, chunk_size: int, *, indexes: bool) -> _Check:
    """Every regular file of a block or more is chunk-based, with the asked chunk size and entries."""

    def check(built: Built, images: ImageCache) -> None:
        with open_image(built.image, devices=[str(d) for d in built.devices]) as img:
            assert img.superblock.block_size == block_size
            seen = 0
            for top, _dirs, files in img.walk("/"):
                for name in files:
                    nid = img.lookup(f"{top.rstrip('/')}/{name}")
                    inode = img.inode(nid)
                    if not stat.S_ISREG(inode.mode) or inode.size < block_size:
                        continue
                    assert inode.layout == DataLayout.CHUNK_BASED, f"{top}/{name}"
                    fmt = inode.i_u
                    assert block_size << (fmt & ChunkFormat.BLKBITS_MASK) == chunk_size
                    assert bool(fmt & ChunkFormat.INDEXES) == indexes
                    seen += 1
            assert seen, "the scenario has files of a block or more"

    return check


def _compressed(layout: DataLayout) -> _Check:
    """Compressible files of the scenario are compressed with this layout, and 0PADDING is set."""

    def check(built: Built, images: ImageCache) -> None:
        _check_compressed(built, layout)

    return check


def _check_compressed(
    built: Built, expected: DataLayout, algorithm: CompressionAlgorithm | None = None
) -> None:
    with open_image(built.image) as img:
        sb = img.superblock
        assert sb.feature_incompat & FeatureIncompat.ZERO_PADDING
        if algorithm is not None:  # anything but LZ4: COMPR_CFGS with its one record
            assert sb.feature_incompat & FeatureIncompat.COMPR_CFGS
            assert sb.u1 == 1 << algorithm
            assert set(sb.compression_configs) == {algorithm}
        layouts = set()
        used = set()
        for top, _dirs, files in img.walk("/"):
            for name in files:
                nid = img.lookup(f"{top.rstrip('/')}/{name}")
                inode = img.inode(nid)
                if stat.S_ISREG(inode.mode):
                    layouts.add(inode.layout)
                    if inode.layout == expected:
                        used |= {getattr(e, "algorithm", None) for e in img.extents_nid(nid)}
        assert expected in layouts
        assert (algorithm or CompressionAlgorithm.LZ4) in used


def _compressed_with(algorithm: CompressionAlgorithm, layout: DataLayout) -> _Check:
    def check(built: Built, images: ImageCache) -> None:
        _check_compressed(built, layout, algorithm)

    return check


def _ztailpacked(layout: DataLayout) -> _Check:
    """Compressed as `_compressed`, and some file's last pcluster is inline (ZTAILPACKING)."""

    def check(built: Built, images: ImageCache) -> None:
        _check_compressed(built, layout)
        with open_image(built.image) as img:
            assert img.superblock.feature_incompat & FeatureIncompat.ZTAILPACKING

    return check


def _fragments(*, whole: bool, shared: bool) -> _Check:
    """The packed inode holds the tails (`whole`: every compressed file whole); `shared`: no packed
    inode, and DEDUPE is set exactly when some extents name the same pcluster."""

    def check(built: Built, images: ImageCache) -> None:
        with open_image(built.image) as img:
            sb = img.superblock
            kinds: set[str] = set()
            heads: list[int] = []
            for top, _dirs, files in img.walk("/"):
                for name in files:
                    inode = img.inode(img.lookup(f"{top.rstrip('/')}/{name}"))
                    if stat.S_ISREG(inode.mode) and inode.layout in _COMPRESSED:
                        extents = [e for e in img.extents_nid(inode.nid) if isinstance(e, Extent)]
                        kinds.add("whole" if len(extents) == 1 and extents[0].fragment else "tail")
                        heads += [e.physical for e in extents if not e.fragment]
            if shared:
                assert not sb.packed_nid
                assert bool(sb.feature_incompat & FeatureIncompat.DEDUPE) == (len(heads) > len(set(heads)))
            else:
                assert sb.feature_incompat & FeatureIncompat.FRAGMENTS and sb.packed_nid, "no packed inode"
                assert kinds == {"whole"} if whole else "tail" in kinds, kinds

    return check


_COMPRESSED = (DataLayout.COMPRESSED_FULL, DataLayout.COMPRESSED_COMPACT)
_PREFIXES = (b"trusted.overlay.", b"user.attr", b"user.kkkkkkkk", b"user.k")

PRODUCERS: tuple[Producer, ...] = (
    erofsgen("default"),
    erofsgen("b512", "-b", "512", features={SMALL_BLOCKS}, check=_block_size(512)),
    erofsgen("b1024", "-b", "1024", features={SMALL_BLOCKS}, check=_block_size(1024)),
    erofsgen("b2048", "-b", "2048", features={SMALL_BLOCKS}, check=_block_size(2048)),
    erofsgen("inode_extended", "-E", "force-inode-extended"),
    # Compact inodes have no mtime of their own: they all take the image's build time.
    erofsgen("inode_compact", "-E", "force-inode-compact", ignore=("mtime_ns",)),
    erofsgen("noinline", "-E", "noinline_data"),
    erofsgen("T1700000000", "-T", "1700000000", expect=_mtime(1_700_000_000)),
    erofsgen("all_root", "--all-root", expect=_all_root),
    erofsgen("xattrs_shared", "-x", "0"),
    erofsgen("no_xattrs", "-x", "-1", expect=_no_xattrs),
    erofsgen(
        "xattr_prefixes",
        *(f"--xattr-prefix={p.decode()}" for p in _PREFIXES),
        features={LONG_PREFIXES},
        check=_has_prefixes(*_PREFIXES),
    ),
    erofsgen("xattr_prefix_auto", "--xattr-prefix=auto", features={LONG_PREFIXES}, check=_picks_prefixes),
    erofsgen(
        "chunks_4k", "--chunksize=4096", features={CHUNK_HOLES}, check=_chunked(4096, 4096, indexes=False)
    ),
    erofsgen(
        "chunks_b512",
        *("-b", "512", "--chunksize=1024"),
        features={SMALL_BLOCKS, CHUNK_HOLES},
        check=_chunked(512, 1024, indexes=False),
    ),
    erofsgen(
        "chunks_64k_blob",
        *("--chunksize=65536", f"--blobdev={BLOB}"),
        features={CHUNK_HOLES},
        check=_chunked(4096, 65536, indexes=True),
    ),
    erofsgen(
        "blob_store",
        f"--blob-store={STORE}",
        features={CHUNK_HOLES},
        check=_chunked(4096, 65536, indexes=True),
    ),
    erofsgen("lz4", "-zlz4", check=_compressed(DataLayout.COMPRESSED_COMPACT)),
    erofsgen("lz4hc", "-zlz4hc,12", check=_compressed(DataLayout.COMPRESSED_COMPACT)),
    erofsgen("lz4_legacy", "-zlz4", "-Elegacy-compress", check=_compressed(DataLayout.COMPRESSED_FULL)),
    erofsgen("lz4hc_pcluster64k", "-zlz4hc", "-C65536", check=_compressed(DataLayout.COMPRESSED_COMPACT)),
    erofsgen(
        "lz4_b1024",
        *("-b", "1024", "-zlz4hc"),
        features={SMALL_BLOCKS},
        check=_compressed(DataLayout.COMPRESSED_COMPACT),
    ),
    erofsgen("lz4hc_ztail", "-zlz4hc", "-Eztailpacking", check=_ztailpacked(DataLayout.COMPRESSED_COMPACT)),
    erofsgen(
        "lz4_ztail_pcluster64k",
        *("-zlz4", "-C65536", "-Eztailpacking", "--max-extent-bytes=131072"),
        check=_ztailpacked(DataLayout.COMPRESSED_COMPACT),
    ),
    erofsgen(
        "lz4_ztail_legacy",
        *("-zlz4", "-Eztailpacking,legacy-compress"),
        check=_ztailpacked(DataLayout.COMPRESSED_FULL),
    ),
    erofsgen(
        "lz4_ztail_b1024",
        *("-b", "1024", "-zlz4hc", "-Eztailpacking"),
        features={SMALL_BLOCKS},
        check=_ztailpacked(DataLayout.COMPRESSED_COMPACT),
    ),
    erofsgen_tar("default"),
    erofsgen_tar("lz4hc", "-zlz4hc", check=_compressed(DataLayout.COMPRESSED_COMPACT)),
    erofsgen(
        "zstd",
        "-zzstd",
        features={NEW_ALGORITHMS},
        check=_compressed_with(CompressionAlgorithm.ZSTD, DataLayout.COMPRESSED_COMPACT),
    ),
    erofsgen(
        "zstd19_pcluster64k",
        *("-zzstd,level=19", "-C65536"),
        features={NEW_ALGORITHMS},
        check=_compressed_with(CompressionAlgorithm.ZSTD, DataLayout.COMPRESSED_COMPACT),
    ),
    erofsgen(
        "deflate",
        "-zdeflate",
        features={NEW_ALGORITHMS},
        check=_compressed_with(CompressionAlgorithm.DEFLATE, DataLayout.COMPRESSED_COMPACT),
    ),
    erofsgen(
        "deflate9_pcluster16k_legacy",
        *("-zdeflate,9", "-C16384", "-Elegacy-compress"),
        features={NEW_ALGORITHMS},
        check=_compressed_with(CompressionAlgorithm.DEFLATE, DataLayout.COMPRESSED_FULL),
    ),
    erofsgen(
        "lzma",
        "-zlzma",
        features={NEW_ALGORITHMS},
        check=_compressed_with(CompressionAlgorithm.LZMA, DataLayout.COMPRESSED_COMPACT),
    ),
    erofsgen(
        "lzma9_pcluster64k",
        *("-zlzma,9", "-C65536"),
        features={NEW_ALGORITHMS},
        check=_compressed_with(CompressionAlgorithm.LZMA, DataLayout.COMPRESSED_COMPACT),
    ),
    erofsgen(
        "zstd_b1024",
        *("-b", "1024", "-zzstd,1"),
        features={NEW_ALGORITHMS, SMALL_BLOCKS},
        check=_compressed_with(CompressionAlgorithm.ZSTD, DataLayout.COMPRESSED_COMPACT),
    ),
    mkfs_erofs("default"),
    mkfs_erofs("lz4", "-zlz4"),
    erofsgen(
        "lz4hc_fragments",
        "-zlz4hc",
        "-Efragments",
        features={FRAGMENTS},
        check=_fragments(whole=False, shared=False),
    ),
    erofsgen(
        "lz4hc_all_fragments",
        "-zlz4hc",
        "-Eall-fragments",
        features={FRAGMENTS},
        check=_fragments(whole=True, shared=False),
    ),
    erofsgen(
        "lz4hc_dedupe",
        "-zlz4hc",
        "-Ededupe",
        features={FRAGMENTS},
        check=_fragments(whole=False, shared=True),
    ),
    mkfs_erofs("lz4hc", "-zlz4hc"),
    mkfs_erofs("lz4hc_pcluster64k", "-zlz4hc", "-C65536"),
    mkfs_erofs("lz4hc_ztailpacking", "-zlz4hc", "-Eztailpacking"),
    mkfs_erofs("lz4_legacy", "-zlz4", "-Elegacy-compress"),
    mkfs_erofs("chunks_4k", "--chunksize=4096"),
    mkfs_erofs("chunks_64k_blob", "--chunksize=65536", f"--blobdev={BLOB}"),
    mkfs_erofs("T1234", "-T1234", expect=_mtime(1234)),
    mkfs_erofs("all_root", "--all-root", expect=_all_root),
    mkfs_erofs("no_xattrs", "-x", "-1", expect=_no_xattrs),
)
