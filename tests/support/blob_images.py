"""Images whose device slots name their blobs by digest, made from mkfs.erofs `--blobdev` output.

erofs-utils 1.5 leaves the slot's tag empty and its block count 0; `tag_device` writes what
specs/blob-store.md asks for (the blob's SHA-256 in 64 hex characters, its size in blocks) and
fixes the superblock checksum, and `store_blob` files the blob into a store as
`STORE/blobs/sha256/<hex>`.
"""

from __future__ import annotations

import hashlib
import shutil
from pathlib import Path

from erofsgen.format.constants import EROFS_DEVT_SLOT_SIZE, EROFS_SUPER_OFFSET
from erofsgen.format.superblock import CHECKSUM_OFFSET, SUPERBLOCK, checksum_length, sb_checksum
from tests.support.erofs_utils import ErofsUtils

_SB_CHKSUM = 0x1  # feature_compat bit


def mkfs_with_blob(utils: ErofsUtils, src: Path, out: Path) -> tuple[Path, Path]:
    """(image, blob) of `src` with 4 KiB chunks in one --blobdev blob (tag left empty)."""
    image, blob = out / "image.erofs", out / "image.blob"
    utils.mkfs(image, src, "--quiet", "--chunksize=4096", f"--blobdev={blob}")
    return image, blob


def sha256_hex(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def tag_device(image: Path, slot: int, tag: bytes, blocks: int, uniaddr: int = 0) -> None:
    """Write `tag` (at most 64 bytes, NUL-padded), `blocks` and `uniaddr` into slot `slot`."""
    data = bytearray(image.read_bytes())
    sb = SUPERBLOCK.unpack(bytes(data[EROFS_SUPER_OFFSET : EROFS_SUPER_OFFSET + SUPERBLOCK.size]))
    assert slot < sb.extra_devices, f"the image has {sb.extra_devices} device slots"
    at = sb.devt_slotoff * EROFS_DEVT_SLOT_SIZE + slot * EROFS_DEVT_SLOT_SIZE
    data[at : at + 64] = tag.ljust(64, b"\0")
    data[at + 64 : at + 68] = blocks.to_bytes(4, "little")
    data[at + 68 : at + 72] = uniaddr.to_bytes(4, "little")
    _fix_checksum(data, sb.feature_compat, 1 << sb.blkszbits)
    image.write_bytes(bytes(data))


def tag_with_digest(image: Path, blob: Path, block_size: int = 4096) -> str:
    """Tag slot 0 with the blob's digest and size; returns the digest."""
    digest = sha256_hex(blob)
    tag_device(image, 0, digest.encode(), blob.stat().st_size // block_size)
    return digest


def flatten(image: Path, blob: Path, out: Path) -> None:
    """Write image ‖ blob to `out` with slot 0 addressing the blob there (the kernel's flat
    mode: no `device=` needed). `image` must be tagged already, its size a whole block."""
    data = image.read_bytes()
    assert len(data) % 4096 == 0
    out.write_bytes(data + blob.read_bytes())
    tag_device(out, 0, sha256_hex(blob).encode(), blob.stat().st_size // 4096, len(data) // 4096)


def store_blob(store: Path, blob: Path) -> Path:
    """Copy `blob` into `store` under its digest; returns its path there."""
    target = store / "blobs" / "sha256" / sha256_hex(blob)
    target.parent.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(blob, target)
    return target


def replace_device_table(image: Path, slots: list[tuple[bytes, int]]) -> None:
    """Give `image` a new device table of `slots` (tag, blocks), appended in new blocks at its end.

    mkfs.erofs 1.5 puts its one slot right before the inodes, so a longer table cannot grow in
    place; `devt_slotoff` may point anywhere in the primary device. Chunk indexes are left as
    they are: device id 1 must stay the blob they were written for.
    """
    data = bytearray(image.read_bytes())
    sb = SUPERBLOCK.unpack(bytes(data[EROFS_SUPER_OFFSET : EROFS_SUPER_OFFSET + SUPERBLOCK.size]))
    blksz = 1 << sb.blkszbits
    start = len(data) + (-len(data) % blksz)
    table = b"".join(
        tag.ljust(64, b"\0") + blocks.to_bytes(4, "little") + bytes(EROFS_DEVT_SLOT_SIZE - 68)
        for tag, blocks in slots
    )
    data[len(data) :] = bytes(start - len(data)) + table + bytes(-len(table) % blksz)
    new = sb._replace(
        extra_devices=len(slots), devt_slotoff=start // EROFS_DEVT_SLOT_SIZE, blocks=len(data) // blksz
    )
    data[EROFS_SUPER_OFFSET : EROFS_SUPER_OFFSET + SUPERBLOCK.size] = SUPERBLOCK.pack(new)
    _fix_checksum(data, new.feature_compat, blksz)
    image.write_bytes(bytes(data))


def _fix_checksum(data: bytearray, feature_compat: int, blksz: int) -> None:
    if feature_compat & _SB_CHKSUM:
        end = EROFS_SUPER_OFFSET + checksum_length(blksz)
        crc = sb_checksum(bytes(data[:end]), blksz)
        data[CHECKSUM_OFFSET : CHECKSUM_OFFSET + 4] = crc.to_bytes(4, "little")
