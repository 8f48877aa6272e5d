"""Decode and validate the superblock, compression configs, device table and long xattr prefixes.

The checks follow the kernel's mount path (super.c): a bad magic, block size, checksum or an
incompat feature this reader does not implement refuses the image up front.
"""

from __future__ import annotations

import os
import uuid
from dataclasses import dataclass, field
from functools import cached_property
from typing import Any, BinaryIO

import construct as cs

from ..errors import CorruptImageError, InvalidInputError, UnsupportedFeatureError
from ..format.constants import (
    EROFS_DEVT_SLOT_SIZE,
    EROFS_MIN_BLKSZBITS,
    EROFS_SUPER_MAGIC_V1,
    EROFS_SUPER_OFFSET,
    SUPPORTED_INCOMPAT,
    XATTR_PREFIXES,
    CompressionAlgorithm,
    FeatureCompat,
    FeatureIncompat,
    XattrIndex,
)
from ..format.device import DEVICE_SLOT
from ..format.superblock import SUPERBLOCK, SuperBlockRec, checksum_length, sb_checksum, sb_size, volume_label
from ..format.xattr import XattrLongPrefix
from ..format.zmap import COMPRESSION_CONFIGS
from .storage import DeviceSlotInfo, Storage

# Block sizes up to 64 KiB exist on large-page machines; the format itself allows them.
MAX_BLKSZBITS = 16
PAGE_SIZE = 4096
LZMA_MAX_DICT_SIZE = 8 * 1024 * 1024
PCLUSTER_MAX_SIZE = 1024 * 1024
ALL_ALGORITHMS = (1 << len(CompressionAlgorithm)) - 1

_NAMED_REFUSALS = {
    FeatureIncompat.BIT48: "48BIT (48-bit block addresses)",
    FeatureIncompat.METABOX: "METABOX (compressed metadata)",
}


@dataclass(frozen=True)
class LongPrefix:
    """One long xattr name prefix: the short prefix of `base_index` plus `infix`."""

    base_index: int
    infix: bytes

    @property
    def prefix(self) -> bytes | None:
        """The full prefix bytes (e.g. b"trusted.overlay."), None for an unknown base index."""
        base = short_prefix(self.base_index)
        return None if base is None else base + self.infix


def short_prefix(index: int) -> bytes | None:
    """The name prefix of a short e_name_index, None if Linux knows no such prefix."""
    try:
        return XATTR_PREFIXES[XattrIndex(index)]
    except ValueError:
        return None


@dataclass(frozen=True)
class SuperblockInfo:
    """Every field of the superblock, decoded, plus what was derived from it at open."""

    magic: int
    checksum: int
    checksum_verified: bool | None  # None: the image does not ask for a checksum
    feature_compat: FeatureCompat
    feature_incompat: FeatureIncompat
    blkszbits: int
    sb_extslots: int
    root_nid: int
    inos: int
    epoch: int
    fixed_nsec: int
    blocks: int
    meta_blkaddr: int
    xattr_blkaddr: int
    uuid: uuid.UUID
    volume_name: str
    volume_name_raw: bytes
    u1: int
    available_compr_algs: int  # bitmap of CompressionAlgorithm (LZ4 only without COMPR_CFGS)
    lz4_max_distance: int  # u1 without COMPR_CFGS, else from the LZ4 config record
    extra_devices: int
    devt_slotoff: int
    dirblkbits: int
    xattr_prefix_count: int
    xattr_prefix_start: int
    packed_nid: int
    xattr_filter_reserved: int
    ishare_xattr_prefix_id: int
    build_time: int
    rootnid_8b: int
    reserved: bytes
    reserved2: bytes
    extslots: bytes  # raw bytes of the extension slots (metabox_nid lives there)
    compression_configs: dict[CompressionAlgorithm, dict[str, Any]] = field(default_factory=dict)
    devices: tuple[DeviceSlotInfo, ...] = ()
    long_prefixes: tuple[LongPrefix, ...] = ()

    @cached_property
    def block_size(self) -> int:
        """Bytes per block."""
        return 1 << self.blkszbits

    @property
    def sb_size(self) -> int:
        """Bytes of the superblock including extension slots."""
        return sb_size(self.sb_extslots)

    def has(self, feature: FeatureIncompat) -> bool:
        """Whether an incompat feature bit is set."""
        return bool(self.feature_incompat & feature)


def _check_features(incompat: int) -> None:
    for bit, name in _NAMED_REFUSALS.items():
        if incompat & bit:
            raise UnsupportedFeatureError(f"image uses incompat feature {name}, which is not supported")
    unknown = incompat & ~int(SUPPORTED_INCOMPAT)
    if unknown:
        raise UnsupportedFeatureError(f"image uses unknown incompat feature bits {unknown:#x}")


def _parse_compression_configs(
    storage: Storage, algs: int, start: int
) -> dict[CompressionAlgorithm, dict[str, Any]]:
    """The COMPR_CFGS records after the superblock: u16 length + payload, each 4-byte aligned."""
    if algs & ~ALL_ALGORITHMS:
        raise UnsupportedFeatureError(f"unknown compression algorithms in bitmap {algs:#x}")
    configs: dict[CompressionAlgorithm, dict[str, Any]] = {}
    offset = start
    for alg in CompressionAlgorithm:
        if not algs & (1 << alg):
            continue
        offset = (offset + 3) & ~3
        length = int.from_bytes(storage.read(offset, 2, area="compression config"), "little") or 65536
        payload = storage.read(offset + 2, length, area="compression config")
        schema = COMPRESSION_CONFIGS[alg]
        if length < schema.sizeof():
            raise CorruptImageError(
                f"{alg.name} config record is {length} bytes, need {schema.sizeof()}",
                offset=offset,
                area="compression config",
            )
        rec = schema.parse(payload[: schema.sizeof()])
        configs[alg] = {k: v for k, v in rec.items() if not k.startswith("_")}
        _check_config(alg, configs[alg], offset)
        offset += 2 + length
    return configs


def _check_config(alg: CompressionAlgorithm, cfg: dict[str, Any], offset: int) -> None:
    bad = None
    if alg == CompressionAlgorithm.LZ4 and cfg["max_pclusterblks"] * PAGE_SIZE > PCLUSTER_MAX_SIZE:
        bad = f"max_pclusterblks {cfg['max_pclusterblks']} too large"
    elif alg == CompressionAlgorithm.LZMA and (cfg["dict_size"] > LZMA_MAX_DICT_SIZE or cfg["format"]):
        bad = f"dict_size {cfg['dict_size']} / format {cfg['format']} out of range"
    elif alg == CompressionAlgorithm.DEFLATE and not 8 <= cfg["windowbits"] <= 15:
        bad = f"windowbits {cfg['windowbits']} out of range"
    elif alg == CompressionAlgorithm.ZSTD and (cfg["format"] or cfg["windowlog"] > 10):
        bad = f"format {cfg['format']} / windowlog {cfg['windowlog']} out of range"
    if bad:
        raise CorruptImageError(f"{alg.name} config: {bad}", offset=offset, area="compression config")


def _parse_devices(storage: Storage, count: int, slotoff: int) -> tuple[DeviceSlotInfo, ...]:
    slots = []
    base = slotoff * EROFS_DEVT_SLOT_SIZE
    for i in range(count):
        off = base + i * EROFS_DEVT_SLOT_SIZE
        rec = DEVICE_SLOT.unpack(storage.read(off, DEVICE_SLOT.size, area="device table"), area="device slot")
        slots.append(DeviceSlotInfo(i, rec.tag, rec.blocks_lo, rec.uniaddr_lo, off))
    return tuple(slots)


def _parse_long_prefixes(storage: Storage, count: int, start: int) -> tuple[LongPrefix, ...]:
    """The long-prefix table at byte `start` of the primary device (no packed inode here)."""
    prefixes = []
    offset = start
    for _ in range(count):
        head = storage.read(offset, 2, area="xattr long prefix")
        size = int.from_bytes(head, "little")
        total = (2 + size + 3) & ~3
        raw = storage.read(offset, total, area="xattr long prefix")
        try:
            rec = XattrLongPrefix.parse(raw)
        except cs.ConstructError as exc:
            raise CorruptImageError(
                f"bad long prefix record: {exc}", offset=offset, area="xattr long prefix"
            ) from None
        prefixes.append(LongPrefix(rec.base_index, bytes(rec.infix)))
        offset += total
    return tuple(prefixes)


def _verify_checksum(storage: Storage, rec_checksum: int, blksz: int) -> bool:
    end = EROFS_SUPER_OFFSET + checksum_length(blksz)
    block0 = storage.read(0, end, area="superblock checksum range")
    return sb_checksum(block0, blksz) == rec_checksum


def read_raw_superblock(storage: Storage) -> SuperBlockRec:
    """The superblock record, or InvalidInputError naming the file when it is not an EROFS image.

    A file too short to hold a superblock, or without the magic, is not a damaged image but
    something else altogether: one message says so, and nothing further is looked at.
    """
    size = storage.primary_size
    if size < EROFS_SUPER_OFFSET + SUPERBLOCK.size:
        what = "empty file" if not size else f"{size} bytes, too short for a superblock"
        raise InvalidInputError(f"not an EROFS image ({what})", storage.name)
    rec = SUPERBLOCK.unpack(storage.read(EROFS_SUPER_OFFSET, SUPERBLOCK.size, area="superblock"))
    if rec.magic != EROFS_SUPER_MAGIC_V1:
        raise InvalidInputError(f"not an EROFS image (bad magic {rec.magic:#010x})", storage.name)
    return rec


def is_erofs(source: str | os.PathLike[str] | BinaryIO) -> bool:
    """Whether `source` (a path or a readable, seekable binary file) starts like an EROFS image.

    Like `tarfile.is_tarfile`: only the magic number is looked at (the image may still be
    damaged), a file object's position is restored, and a path that cannot be opened raises
    the OSError of open() (FileNotFoundError for a missing file, IsADirectoryError, ...).
    """
    if isinstance(source, str | os.PathLike):
        with open(source, "rb") as file:
            return is_erofs(file)
    pos = source.tell()
    try:
        source.seek(EROFS_SUPER_OFFSET)
        head = source.read(4)
    finally:
        source.seek(pos)
    return len(head) == 4 and int.from_bytes(head, "little") == EROFS_SUPER_MAGIC_V1


def _check_basics(rec: SuperBlockRec) -> None:
    if not EROFS_MIN_BLKSZBITS <= rec.blkszbits <= MAX_BLKSZBITS:
        raise CorruptImageError(f"blkszbits {rec.blkszbits} out of range", area="superblock")
    if rec.dirblkbits:
        raise CorruptImageError(f"dirblkbits {rec.dirblkbits} must be 0", area="superblock")
    if sb_size(rec.sb_extslots) > PAGE_SIZE - EROFS_SUPER_OFFSET:
        raise CorruptImageError(f"sb_extslots {rec.sb_extslots} too large", area="superblock")
    _check_features(rec.feature_incompat)


def read_superblock(storage: Storage, *, strict_checksum: bool = True) -> SuperblockInfo:
    """Decode the superblock and everything the mount path derives from it.

    Raises InvalidInputError for a file that is not an EROFS image (see read_raw_superblock),
    CorruptImageError for a bad block size/checksum (the checksum only when
    `strict_checksum`), UnsupportedFeatureError for incompat features this reader lacks, and
    InvalidInputError when the caller gave a different number of devices than the table holds.
    """
    rec = read_raw_superblock(storage)
    _check_basics(rec)
    blksz = 1 << rec.blkszbits
    compat, incompat = FeatureCompat(rec.feature_compat), FeatureIncompat(rec.feature_incompat)
    verified: bool | None = None
    if compat & FeatureCompat.SB_CHKSUM:
        verified = _verify_checksum(storage, rec.checksum, blksz)
        if not verified and strict_checksum:
            raise CorruptImageError("superblock checksum mismatch", offset=EROFS_SUPER_OFFSET + 4)
    configs: dict[CompressionAlgorithm, dict[str, Any]] = {}
    if incompat & FeatureIncompat.COMPR_CFGS:
        algs = rec.u1
        configs = _parse_compression_configs(storage, algs, EROFS_SUPER_OFFSET + sb_size(rec.sb_extslots))
        lz4_distance = configs.get(CompressionAlgorithm.LZ4, {}).get("max_distance", 0)
    else:
        algs, lz4_distance = 1 << CompressionAlgorithm.LZ4, rec.u1
    ndev = rec.extra_devices if incompat & FeatureIncompat.DEVICE_TABLE else 0
    if storage.given_devices and storage.given_devices != ndev:
        raise InvalidInputError(
            f"extra devices don't match: the image has {ndev}, {storage.given_devices} were given"
        )
    storage.blksz = blksz
    storage.slots = _parse_devices(storage, ndev, rec.devt_slotoff)
    prefixes: tuple[LongPrefix, ...] = ()
    if incompat & FeatureIncompat.XATTR_PREFIXES and rec.xattr_prefix_count:
        prefixes = _parse_long_prefixes(storage, rec.xattr_prefix_count, rec.xattr_prefix_start * 4)
    fields = rec._asdict()
    fields.update(
        feature_compat=compat,
        feature_incompat=incompat,
        uuid=uuid.UUID(bytes=rec.uuid),
        volume_name=volume_label(rec.volume_name),
    )
    return SuperblockInfo(
        **fields,
        checksum_verified=verified,
        volume_name_raw=rec.volume_name,
        available_compr_algs=algs,
        lz4_max_distance=lz4_distance,
        extslots=storage.read(EROFS_SUPER_OFFSET + SUPERBLOCK.size, 16 * rec.sb_extslots, area="superblock"),
        compression_configs=configs,
        devices=storage.slots,
        long_prefixes=prefixes,
    )
