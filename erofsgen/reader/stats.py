"""Superblock summary and tree statistics, like `dump.erofs -s -S`.

Counts follow dump.erofs: every directory entry reached from the root is one file (a hard link
counts once per name, the root counts once), sizes are those of regular files, and a compressed
file's on-disk size is its pcluster block count times the block size. Unique inodes and layouts
are counted besides. A damaged part of the tree is noted in `errors` and skipped.
"""

from __future__ import annotations

import time
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

from ..errors import ErofsgenError
from ..format.constants import FeatureCompat, FeatureIncompat, FileType
from .image import Image
from .inode import InodeInfo
from .names import escape_name
from .superblock import SuperblockInfo
from .walk import walk_dirs

# Feature names as erofs-utils prints them; aliases share a bit and are both listed.
COMPAT_NAMES: dict[str, FeatureCompat] = {
    "sb_csum": FeatureCompat.SB_CHKSUM,
    "mtime": FeatureCompat.MTIME,
    "xattr_filter": FeatureCompat.XATTR_FILTER,
    "shared_ea_in_metabox": FeatureCompat.SHARED_EA_IN_METABOX,
    "plain_xattr_pfx": FeatureCompat.PLAIN_XATTR_PFX,
    "ishare_xattrs": FeatureCompat.ISHARE_XATTRS,
}
INCOMPAT_NAMES: dict[str, FeatureIncompat] = {
    "0padding": FeatureIncompat.ZERO_PADDING,
    "compr_cfgs": FeatureIncompat.COMPR_CFGS,
    "big_pcluster": FeatureIncompat.BIG_PCLUSTER,
    "chunked_file": FeatureIncompat.CHUNKED_FILE,
    "device_table": FeatureIncompat.DEVICE_TABLE,
    "ztailpacking": FeatureIncompat.ZTAILPACKING,
    "fragments": FeatureIncompat.FRAGMENTS,
    "dedupe": FeatureIncompat.DEDUPE,
    "xattr_prefixes": FeatureIncompat.XATTR_PREFIXES,
    "48bit": FeatureIncompat.BIT48,
    "metabox": FeatureIncompat.METABOX,
}
TYPE_NAMES = {
    FileType.REG_FILE: "regular",
    FileType.DIR: "directory",
    FileType.CHRDEV: "chardev",
    FileType.BLKDEV: "blockdev",
    FileType.FIFO: "fifo",
    FileType.SOCK: "socket",
    FileType.SYMLINK: "symlink",
}
# Size histogram buckets in KiB: [0, 1), [1, 2), [2, 4), ... [16384, 32768), [32768, inf).
HISTOGRAM_EDGES_KIB = (0, *(1 << k for k in range(16)))


def feature_names(sb: SuperblockInfo) -> list[str]:
    """Names of the compat then incompat features set (unknown bits as hex)."""
    names = [name for name, bit in COMPAT_NAMES.items() if sb.feature_compat & bit]
    names += [name for name, bit in INCOMPAT_NAMES.items() if sb.feature_incompat & bit]
    known_compat = sum(int(b) for b in COMPAT_NAMES.values())
    known_incompat = sum(set(map(int, INCOMPAT_NAMES.values())))
    if int(sb.feature_compat) & ~known_compat:
        names.append(f"compat:{int(sb.feature_compat) & ~known_compat:#x}")
    if int(sb.feature_incompat) & ~known_incompat:
        names.append(f"incompat:{int(sb.feature_incompat) & ~known_incompat:#x}")
    return names


def created_text(seconds: int) -> str:
    """The build time as dump.erofs prints it (ctime(3) in local time), or the raw number."""
    try:
        return time.ctime(seconds)
    except (OverflowError, OSError, ValueError):
        return str(seconds)


def superblock_summary(sb: SuperblockInfo) -> dict[str, Any]:
    """The superblock fields `inspect` prints, JSON-ready."""
    return {
        "magic": sb.magic,
        "checksum": sb.checksum,
        "checksum_verified": sb.checksum_verified,
        "block_size": sb.block_size,
        "blocks": sb.blocks,
        "meta_blkaddr": sb.meta_blkaddr,
        "xattr_blkaddr": sb.xattr_blkaddr,
        "root_nid": sb.root_nid,
        "inos": sb.inos,
        "build_time": sb.epoch,
        "build_time_nsec": sb.fixed_nsec,
        "created": created_text(sb.epoch),
        "features": feature_names(sb),
        "uuid": str(sb.uuid),
        "label": escape_name(sb.volume_name_raw.split(b"\0", 1)[0], spaces=False),
        "extra_devices": len(sb.devices),
        "devices": [
            {
                "tag": escape_name(d.tag.split(b"\0", 1)[0], spaces=False),
                "blocks": d.blocks,
                "uniaddr": d.uniaddr,
            }
            for d in sb.devices
        ],
        "compression_algorithms": [a.name for a in sb.compression_configs]
        or (["LZ4"] if sb.has(FeatureIncompat.ZERO_PADDING) else []),
        "long_xattr_prefixes": len(sb.long_prefixes),
    }


@dataclass
class Histogram:
    """File counts per size bucket (edges in KiB; the last bucket is open-ended)."""

    counts: list[int] = field(default_factory=lambda: [0] * len(HISTOGRAM_EDGES_KIB))

    def add(self, size: int) -> None:
        """Count one file of `size` bytes."""
        kib = size // 1024
        index = 0
        while index + 1 < len(HISTOGRAM_EDGES_KIB) and kib >= HISTOGRAM_EDGES_KIB[index + 1]:
            index += 1
        self.counts[index] += 1

    def rows(self) -> list[dict[str, Any]]:
        """[{"from_kib", "to_kib" (None = open), "count"}] in bucket order."""
        edges = HISTOGRAM_EDGES_KIB
        return [
            {"from_kib": lo, "to_kib": edges[i + 1] if i + 1 < len(edges) else None, "count": n}
            for i, (lo, n) in enumerate(zip(edges, self.counts, strict=True))
        ]


@dataclass
class ImageStats:
    """Everything `erofsgen inspect` reports."""

    superblock: dict[str, Any]
    files: int = 0  # directory entries reached, plus the root
    inodes: int = 0  # distinct inodes among them
    by_type: Counter[str] = field(default_factory=Counter)
    layouts: Counter[str] = field(default_factory=Counter)  # per distinct inode
    compressed_files: int = 0
    uncompressed_files: int = 0
    original_size: int = 0  # regular files
    ondisk_size: int = 0
    original_histogram: Histogram = field(default_factory=Histogram)
    ondisk_histogram: Histogram = field(default_factory=Histogram)
    errors: list[str] = field(default_factory=list)

    @property
    def compress_rate(self) -> float | None:
        """On-disk size over original size of regular files (None when there are none)."""
        return self.ondisk_size / self.original_size if self.original_size else None

    def to_json(self) -> dict[str, Any]:
        """A JSON-ready dict."""
        return {
            "superblock": self.superblock,
            "files": self.files,
            "inodes": self.inodes,
            "by_type": {name: self.by_type.get(name, 0) for name in TYPE_NAMES.values()},
            "layouts": dict(sorted(self.layouts.items())),
            "compressed_files": self.compressed_files,
            "uncompressed_files": self.uncompressed_files,
            "original_size": self.original_size,
            "ondisk_size": self.ondisk_size,
            "compress_rate": self.compress_rate,
            "original_size_histogram": self.original_histogram.rows(),
            "ondisk_size_histogram": self.ondisk_histogram.rows(),
            "errors": self.errors,
        }


def _ondisk_size(info: InodeInfo, blksz: int) -> int:
    return info.compressed_blocks * blksz if info.compressed else info.size


def _count(stats: ImageStats, info: InodeInfo, blksz: int, first_time: bool) -> None:
    stats.files += 1
    stats.by_type[TYPE_NAMES.get(info.file_type, "unknown")] += 1
    if info.compressed:
        stats.compressed_files += 1
    else:
        stats.uncompressed_files += 1
    if first_time:
        stats.inodes += 1
        stats.layouts[info.layout.name] += 1
    if info.file_type == FileType.REG_FILE:
        ondisk = _ondisk_size(info, blksz)
        stats.original_size += info.size
        stats.ondisk_size += ondisk
        stats.original_histogram.add(info.size)
        stats.ondisk_histogram.add(ondisk)


def image_stats(image: Image) -> ImageStats:
    """Walk the tree from the root and count (directories reached twice are not re-entered)."""
    sb = image.superblock
    stats = ImageStats(superblock_summary(sb))
    try:
        root = image.inode(image.root_nid)
    except ErofsgenError as exc:
        stats.errors.append(str(exc))
        return stats
    seen = {root.nid}
    _count(stats, root, sb.block_size, True)

    def listing_failed(_path: bytes, _nid: int, exc: ErofsgenError) -> None:
        stats.errors.append(str(exc))

    listing = lambda nid: list(image.scandir_nid(nid))  # noqa: E731
    for visit in walk_dirs(listing, root.nid, breadth_first=True, strict=False, on_error=listing_failed):
        for entry in visit.entries:
            try:
                info = image.inode(entry.nid)
            except ErofsgenError as exc:
                stats.errors.append(str(exc))
                continue
            _count(stats, info, sb.block_size, entry.nid not in seen)
            seen.add(entry.nid)
            if info.is_dir:
                visit.descend.append((entry.name, entry.nid))
    return stats


def format_stats(stats: ImageStats) -> str:
    """The text `inspect` prints: superblock, then counts and histograms."""
    sb = stats.superblock
    rows: list[tuple[str, Any]] = [
        ("magic number", f"{sb['magic']:#010X}".replace("0X", "0x")),
        ("block size", sb["block_size"]),
        ("blocks", sb["blocks"]),
        ("inode metadata start block", sb["meta_blkaddr"]),
        ("shared xattr metadata start block", sb["xattr_blkaddr"]),
        ("root nid", sb["root_nid"]),
        ("inode count", sb["inos"]),
        ("created", sb["created"]),
        ("features", " ".join(sb["features"])),
        ("UUID", sb["uuid"]),
        ("label", sb["label"]),
        ("checksum", _checksum_text(sb)),
        ("extra devices", sb["extra_devices"]),
        ("compression", " ".join(sb["compression_algorithms"]) or "none"),
        ("total file count", stats.files),
        ("distinct inodes", stats.inodes),
    ]
    rows += [(f"{name} count", stats.by_type.get(name, 0)) for name in TYPE_NAMES.values()]
    rate = stats.compress_rate
    rows += [
        ("compressed files", stats.compressed_files),
        ("uncompressed files", stats.uncompressed_files),
        ("total original file size", f"{stats.original_size} bytes"),
        ("total file size", f"{stats.ondisk_size} bytes"),
        ("compress rate", f"{rate * 100:.2f}%" if rate is not None else "-"),
        ("layouts", " ".join(f"{k}:{v}" for k, v in sorted(stats.layouts.items()))),
    ]
    lines = [f"{label + ':':<36}{value}" for label, value in rows]
    for title, hist in (("original", stats.original_histogram), ("on-disk", stats.ondisk_histogram)):
        lines += ["", f"{title} file size distribution (KiB):"]
        for row in hist.rows():
            upper = "" if row["to_kib"] is None else row["to_kib"]
            lines.append(f"  {row['from_kib']:>6} .. {upper:<6} {row['count']:>8}")
    lines += [f"error: {e}" for e in stats.errors]
    return "\n".join(lines)


def _checksum_text(sb: dict[str, Any]) -> str:
    verified = sb["checksum_verified"]
    state = "not used" if verified is None else "ok" if verified else "MISMATCH"
    return f"{sb['checksum']:#010x} ({state})"
