"""Finding an image's extra (blob) devices: given one by one, or by their tags in blob stores.

Every slot of the device table names its blob by `tag`, the SHA-256 of the blob's content in 64
lowercase hex characters (specs/blob-store.md); a store keeps that blob at
`STORE/blobs/sha256/<hex>`. `find_devices` resolves the slots in table order and checks what can
be checked before anything reads from them: the blob exists, is not shorter than the slot says,
and (with `verify`) hashes to its tag, so a damaged store is reported by name rather than read as
wrong data.
"""

from __future__ import annotations

import enum
import hashlib
import os
import re
import stat
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

from ..errors import CorruptImageError, InvalidInputError
from ..format.constants import DataLayout
from ..reader import Image, open_image
from ..reader.datamap import iter_segments
from ..reader.names import escape_name

PathLike = str | os.PathLike[str]

_DIGEST = re.compile(rb"[0-9a-f]{64}")
_HASH_PIECE = 1 << 20


class ProblemKind(enum.Enum):
    """Why a device cannot be used."""

    NO_TAG = "no tag"  # the slot has no digest to look up, and no --device was given
    MISSING = "missing"  # not in any store, or the given file does not exist
    UNREADABLE = "unreadable"  # exists but is not a readable regular file or block device
    TRUNCATED = "truncated"  # shorter than the slot's block count says
    MISMATCH = "mismatch"  # content does not hash to the tag (only with verify)

    @property
    def corrupt(self) -> bool:
        """A damaged blob rather than a missing or unusable input."""
        return self in (ProblemKind.TRUNCATED, ProblemKind.MISMATCH)


@dataclass(frozen=True)
class DeviceProblem:
    kind: ProblemKind
    message: str  # one line, naming the device, its tag or path


@dataclass(frozen=True)
class DeviceLocation:
    """Where device slot `index` (chunk-index device id `index + 1`) was found, if anywhere."""

    index: int
    tag: str  # the hex digest, or the raw tag escaped for display
    blocks: int
    block_size: int
    path: Path | None  # None: not found
    problems: tuple[DeviceProblem, ...] = ()
    verified: bool = False  # the content was hashed and matched the tag

    @property
    def device_id(self) -> int:
        """The 1-based number that chunk indexes and `device=` order use."""
        return self.index + 1

    @property
    def size(self) -> int:
        """The size in bytes the device table gives (0 when the writer left `blocks` at 0)."""
        return self.blocks * self.block_size

    @property
    def usable(self) -> bool:
        return self.path is not None and not self.problems


def blob_path(store: PathLike, digest: str) -> Path:
    """Where a store keeps the blob whose SHA-256 is `digest` (64 lowercase hex characters)."""
    return Path(store, "blobs", "sha256", digest)


def tag_digest(tag: bytes) -> str | None:
    """The hex digest a 64-byte tag field names, or None when it holds anything else.

    The field is exactly the 64 hex characters (no NUL); a shorter NUL-terminated digest-like
    string is not a digest.
    """
    return tag.decode("ascii") if _DIGEST.fullmatch(tag) else None


def file_sha256(path: PathLike) -> str:
    """The SHA-256 of a whole file, in lowercase hex."""
    with open(path, "rb") as file:
        return hashlib.file_digest(file, "sha256").hexdigest()


def find_devices(
    image: PathLike,
    stores: Sequence[PathLike] = (),
    devices: Sequence[PathLike] = (),
    *,
    verify: bool = False,
    strict: bool = True,
) -> list[DeviceLocation]:
    """Locate the extra devices of `image`, in device-table order.

    `devices` gives them one by one (their number must equal the table's); otherwise each slot
    is looked up by its tag in `stores`, the first store holding it winning. Each device must
    exist and be at least `blocks × block size` bytes; with `verify`, a device whose slot has a
    digest tag must also hash to it (each file is hashed once).

    With `strict` (the default) any problem raises: InvalidInputError for a missing or
    unusable device, CorruptImageError for a truncated or mismatching blob; the message lists
    every problem. With `strict=False` the problems are left in each DeviceLocation.
    Opening the image itself raises as `open_image` does; giving both `devices` and `stores`,
    or the wrong number of `devices`, raises InvalidInputError.
    """
    if devices and stores:
        raise InvalidInputError(
            "give the extra devices either one by one (--device) or by blob store (--blob-store), not both"
        )
    with open_image(image, strict_checksum=False) as img:
        slots = img.superblock.devices
        block_size = img.superblock.block_size
    if devices and len(devices) != len(slots):
        raise InvalidInputError(
            f"the image has {len(slots)} extra device(s), {len(devices)} given with --device",
            escape_name(os.fspath(image)),
        )
    hashes: dict[str, str] = {}
    found = []
    for slot in slots:
        digest = tag_digest(slot.tag)
        shown = digest if digest is not None else slot.tag_shown
        if devices:
            path, problems = _given(slot.index, devices[slot.index])
        else:
            path, problems = _in_stores(slot.index, digest, shown, stores)
        verified = False
        if path is not None and not problems:
            problems = _check_file(slot.index, path, slot.blocks * block_size)
        if path is not None and not problems and verify and digest is not None:
            problems = _check_digest(slot.index, path, digest, hashes)
            verified = not problems
        found.append(DeviceLocation(slot.index, shown, slot.blocks, block_size, path, problems, verified))
    if strict:
        raise_problems(found)
    return found


def devices_inside(image: PathLike) -> bool:
    """Whether every extra device of `image` lies inside the image file itself (flat mode).

    The kernel reads device data at `uniaddr + blkaddr` of the image when no `device=` is
    given. A slot with `uniaddr` 0 (erofs-utils 1.5 writes no unified addresses) or reaching past
    the end of the file would then read the wrong blocks or fail; True for no devices at all.
    """
    with open_image(image, strict_checksum=False) as img:
        size = img.storage.primary_size
        block_size = img.superblock.block_size
        slots = img.superblock.devices
    return all(s.uniaddr and (s.uniaddr + s.blocks) * block_size <= size for s in slots)


def data_devices(image: Image, nid: int) -> set[int] | None:
    """The extra devices (1-based, as given to `open_image`) holding data of inode `nid`.

    None when that cannot be told without decompressing (a compressed inode's pclusters may be
    redirected anywhere): then every device counts as used.
    """
    info = image.inode(nid)
    if info.layout not in (DataLayout.FLAT_PLAIN, DataLayout.FLAT_INLINE, DataLayout.CHUNK_BASED):
        return None
    storage = image.storage
    return {seg.device for seg in iter_segments(storage, image.superblock, info) if seg.device}


def subtree_devices(image: Image, top: int) -> set[int] | None:
    """`data_devices` of every inode at or below `top` (a directory or not); None as there."""
    used: set[int] = set()
    pending, seen = [top], {top}
    while pending:
        nid = pending.pop()
        if image.inode(nid).is_dir:
            fresh = {e.nid for e in image.scandir_nid(nid) if e.nid not in seen}
            seen |= fresh  # a directory reached twice is extract's error to report, not ours
            pending.extend(sorted(fresh))
            continue
        found = data_devices(image, nid)
        if found is None:
            return None
        used |= found
    return used


def verify_devices(image: Image, devices: Sequence[PathLike], which: Iterable[int] | None = None) -> None:
    """Hash the given extra devices of an open image (1-based numbers in `which`, default all)
    and raise CorruptImageError naming the first whose content does not match its digest tag.
    Devices whose slot holds no digest cannot be verified and are passed over."""
    hashes: dict[str, str] = {}
    slots = image.superblock.devices
    for number in sorted(range(1, len(slots) + 1) if which is None else set(which)):
        digest = tag_digest(slots[number - 1].tag)
        if digest is not None:
            _raise(_check_digest(number - 1, Path(devices[number - 1]), digest, hashes))


def raise_problems(locations: Sequence[DeviceLocation]) -> None:
    """Raise one error listing every problem of `locations`, if there is any.

    CorruptImageError when every problem is a damaged blob, InvalidInputError otherwise.
    """
    _raise([p for loc in locations for p in loc.problems])


def _raise(problems: Sequence[DeviceProblem]) -> None:
    if not problems:
        return
    text = "; ".join(p.message for p in problems)
    if all(p.kind.corrupt for p in problems):
        raise CorruptImageError(text)
    raise InvalidInputError(text)


def _given(index: int, path: PathLike) -> tuple[Path | None, tuple[DeviceProblem, ...]]:
    given = Path(path)
    if not os.path.lexists(given):
        shown = escape_name(os.fspath(given))
        return None, (DeviceProblem(ProblemKind.MISSING, f"device {index + 1}: {shown} does not exist"),)
    return given, ()


def _in_stores(
    index: int, digest: str | None, shown: str, stores: Sequence[PathLike]
) -> tuple[Path | None, tuple[DeviceProblem, ...]]:
    if digest is None:
        if shown:
            message = f"device {index + 1}: tag '{shown}' is not a SHA-256 digest; give it with --device"
        else:
            message = f"device {index + 1} has no tag; give it with --device"
        return None, (DeviceProblem(ProblemKind.NO_TAG, message),)
    for store in stores:
        candidate = blob_path(store, digest)
        if os.path.lexists(candidate):
            return candidate, ()
    searched = ", ".join(_store_shown(s) for s in stores) or "no --blob-store given"
    message = f"device {index + 1}: blob {digest} not found (searched: {searched})"
    return None, (DeviceProblem(ProblemKind.MISSING, message),)


def _store_shown(store: PathLike) -> str:
    """A store's path for a message, flagged when it is no directory at all (a typo, mostly)."""
    shown = escape_name(os.fspath(store))
    return shown if os.path.isdir(store) else f"{shown} (not a directory)"


def _check_file(index: int, path: Path, size: int) -> tuple[DeviceProblem, ...]:
    """The device is a readable regular file (or block device) of at least `size` bytes."""
    shown = escape_name(os.fspath(path))
    try:
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC | os.O_NONBLOCK)
    except OSError as exc:
        return (DeviceProblem(ProblemKind.UNREADABLE, f"device {index + 1}: {shown}: {exc.strerror}"),)
    try:
        mode = os.fstat(fd).st_mode
        if not (stat.S_ISREG(mode) or stat.S_ISBLK(mode)):
            message = f"device {index + 1}: {shown}: not a regular file or a block device"
            return (DeviceProblem(ProblemKind.UNREADABLE, message),)
        actual = os.lseek(fd, 0, os.SEEK_END)
    finally:
        os.close(fd)
    if actual < size:
        message = f"device {index + 1}: {shown} is truncated: {actual} bytes, the image needs {size}"
        return (DeviceProblem(ProblemKind.TRUNCATED, message),)
    return ()


def _check_digest(index: int, path: Path, digest: str, hashes: dict[str, str]) -> tuple[DeviceProblem, ...]:
    key = os.path.realpath(path)
    try:
        if key not in hashes:
            hashes[key] = file_sha256(path)
    except OSError as exc:
        shown = escape_name(os.fspath(path))
        return (DeviceProblem(ProblemKind.UNREADABLE, f"device {index + 1}: {shown}: {exc.strerror}"),)
    if hashes[key] != digest:
        message = (
            f"device {index + 1}: {escape_name(os.fspath(path))}: content does not match its digest {digest}"
        )
        return (DeviceProblem(ProblemKind.MISMATCH, message),)
    return ()


__all__ = [
    "DeviceLocation",
    "DeviceProblem",
    "ProblemKind",
    "blob_path",
    "data_devices",
    "devices_inside",
    "file_sha256",
    "find_devices",
    "raise_problems",
    "tag_digest",
    "verify_devices",
]
