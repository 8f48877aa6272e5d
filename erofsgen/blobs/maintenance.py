"""Store maintenance: verify (and repair), gc, du (specs/blob-store.md "Maintenance").

Removal order keeps the publishing invariant: a segment goes (durably) before its blob, so no
index entry ever points at missing data. gc --delete and repair hold the store's exclusive lock;
verify and a gc dry run hold the shared one, like packs, and tolerate what packs add meanwhile.
"""

from __future__ import annotations

import contextlib
import hashlib
import mmap
import os
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from ..format.constants import EROFS_NULL_ADDR, DataLayout, FeatureIncompat, FileType
from ..format.device import device_id_mask
from .errors import StoreError
from .files import fsync_dir, temp_pid
from .segment import SegmentData, decode_segment, is_digest_name
from .store import BLOBS_DIR, INDEX_DIR, TMP_DIR, BlobStore

if TYPE_CHECKING:
    from ..reader.image import Image

DEFAULT_STALE_MINUTES = 60.0
_HASH_PIECE = 1 << 20


@dataclass(frozen=True)
class Finding:
    """One verify finding about a file of the store (`name` relative to the store)."""

    name: str
    message: str
    problem: bool  # False: a warning (orphan blob, temp file, stray file): harmless
    removed: bool = False  # --repair removed the file

    def __str__(self) -> str:
        from ..reader.names import escape_name

        text = f"{escape_name(self.name)}: {self.message}"
        if self.removed:
            text += " (removed)"
        return text if self.problem else f"warning: {text}"


@dataclass
class VerifyReport:
    """What verify found: findings in store order, and how much it looked at."""

    findings: list[Finding] = field(default_factory=list)
    blobs: int = 0
    segments: int = 0
    chunks: int = 0

    @property
    def problems(self) -> list[Finding]:
        return [f for f in self.findings if f.problem]

    @property
    def warnings(self) -> list[Finding]:
        return [f for f in self.findings if not f.problem]

    @property
    def clean(self) -> bool:
        """No problems (warnings allowed)."""
        return not self.problems


@dataclass(frozen=True)
class Removal:
    """A file gc removes (or would remove): name relative to the store, size, why."""

    name: str
    size: int
    reason: str


@dataclass
class GcReport:
    removals: list[Removal] = field(default_factory=list)
    kept_blobs: int = 0
    dry_run: bool = True
    missing_blobs: list[str] = field(default_factory=list)  # kept images name them; not here

    @property
    def bytes(self) -> int:
        return sum(r.size for r in self.removals)


@dataclass(frozen=True)
class ImageUsage:
    image: str
    logical_bytes: int  # chunk bytes of the image's files that lie in this store's blobs
    digests: frozenset[str]  # the store blobs the image's device table names

    @property
    def blobs(self) -> int:
        return len(self.digests)


@dataclass
class UsageReport:
    blobs: int = 0
    stored_bytes: int = 0  # sum of blob sizes
    segments: int = 0
    indexed_bytes: int = 0  # sum of chunk lengths in the readable segments
    damaged_segments: int = 0
    images: list[ImageUsage] = field(default_factory=list)
    referenced_stored_bytes: int = 0  # sizes of the distinct store blobs the images name

    @property
    def logical_bytes(self) -> int:
        return sum(image.logical_bytes for image in self.images)


# -- helpers ------------------------------------------------------------------------------


def _blob_rel(name: str) -> str:
    return f"{BLOBS_DIR}/{name}"


def _segment_rel(name: str) -> str:
    return f"{INDEX_DIR}/{name}"


def _size(path: str) -> int | None:
    try:
        return os.stat(path).st_size
    except FileNotFoundError:
        return None


def _hash_file(path: str) -> str | None:
    """SHA-256 hex of a file's content; None if it vanished."""
    try:
        with open(path, "rb") as file:
            return hashlib.file_digest(file, "sha256").hexdigest()
    except FileNotFoundError:
        return None


def _read_segment(path: str) -> SegmentData:
    with open(path, "rb") as file:
        return decode_segment(file.read(), path)


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # exists, owned by someone else
    return True


def temp_state(path: str, stale_minutes: float, now: float | None = None) -> tuple[bool, str] | None:
    """(stale, description) of a temp file: stale when its writer's pid is dead or it is older
    than `stale_minutes`; None if it vanished."""
    try:
        mtime = os.lstat(path).st_mtime
    except FileNotFoundError:
        return None
    age = max(0.0, (time.time() if now is None else now) - mtime)
    pid = temp_pid(os.path.basename(path))
    alive = pid is not None and _pid_alive(pid)
    old = age >= stale_minutes * 60
    writer = "no writer pid" if pid is None else f"writer pid {pid} {'alive' if alive else 'gone'}"
    return (not alive or old), f"temporary file, {writer}, {age / 60:.0f} minutes old"


def _remove_all(paths: Iterable[str]) -> None:
    """Unlink every path, then fsync each directory once."""
    dirs = set()
    for path in paths:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(path)
        dirs.add(os.path.dirname(path))
    for directory in sorted(dirs):
        fsync_dir(directory)


# -- verify -------------------------------------------------------------------------------


def verify_store(
    store: BlobStore, *, repair: bool = False, stale_minutes: float = DEFAULT_STALE_MINUTES
) -> VerifyReport:
    """Re-hash every blob, check every segment against its blob, report orphans and temp files.

    Problems: a blob whose content does not hash to its name, a damaged or unreadable segment,
    a segment whose blob is missing or of another size, a record whose bytes do not hash to its
    chunk digest. Warnings: orphan blobs (no segment; gc removes them), temp files, stray names.
    `repair` (exclusive lock): removes damaged segments, corrupt blobs with their segments and
    stale temp files; orphans are left to gc.

    Without `repair` the shared lock is held: packs may publish meanwhile, gc may not remove.
    Segments are listed before blobs, so a segment's blob (renamed into place before it) is
    never missed; a blob published after the listing is simply not checked.
    """
    if not repair:
        with store.pack_lock():
            return _verify(store, repair=False, stale_minutes=stale_minutes)
    if not store.writable:
        raise StoreError("--repair needs a writable store", store.path)
    with store.exclusive_lock():
        return _verify(store, repair=True, stale_minutes=stale_minutes)


def _verify(store: BlobStore, *, repair: bool, stale_minutes: float) -> VerifyReport:
    report = VerifyReport()
    add = report.findings.append
    blob_ok: dict[str, bool] = {}
    segment_names = store.segment_names()  # first: see verify_store
    for name in store.blob_names():
        if not is_digest_name(name):
            add(Finding(_blob_rel(name), "not a blob name (not a SHA-256 digest)", problem=False))
            continue
        actual = _hash_file(store.blob_path(name))
        if actual is None:
            continue  # removed since the listing
        report.blobs += 1
        blob_ok[name] = actual == name
        if actual != name:
            message = f"corrupt blob: content hashes to {actual}"
            add(Finding(_blob_rel(name), message, problem=True, removed=repair))
    indexed: set[str] = set()
    bad_segments: list[str] = []
    listed = set(segment_names)
    for name in segment_names:
        if not is_digest_name(name):
            add(Finding(_segment_rel(name), "not an index segment name", problem=False))
            continue
        fault = _check_segment(store, name, blob_ok, report)
        if fault is None:
            indexed.add(name)
        elif fault:
            add(Finding(_segment_rel(name), fault, problem=True, removed=repair))
            bad_segments.append(name)
    corrupt = [name for name, ok in blob_ok.items() if not ok]
    for name, ok in blob_ok.items():
        published_since = name not in listed and os.path.exists(store.segment_path(name))
        if ok and name not in indexed and name not in bad_segments and not published_since:
            add(Finding(_blob_rel(name), "orphan blob: no index segment (gc removes it)", problem=False))
    stale_temps = []
    for name in store.temp_names():
        path = os.path.join(store.tmp_dir, name)
        state = temp_state(path, stale_minutes)
        if state is None:
            continue
        stale, description = state
        remove = repair and stale
        add(Finding(f"{TMP_DIR}/{name}", description, problem=False, removed=remove))
        if remove:
            stale_temps.append(path)
    if repair:
        segments = [store.segment_path(name) for name in [*bad_segments, *corrupt]]
        _remove_all(segments)  # the segments first: no index entry may outlive its data
        _remove_all(store.blob_path(name) for name in corrupt)
        _remove_all(stale_temps)
    return report


def _check_segment(store: BlobStore, name: str, blob_ok: dict[str, bool], report: VerifyReport) -> str | None:
    """None if segment `name` is sound, "" if it vanished or belongs to a corrupt blob (reported
    there), else what is wrong with it."""
    path = store.segment_path(name)
    try:
        segment = _read_segment(path)
    except FileNotFoundError:
        return ""
    except OSError as exc:
        return f"unreadable index segment: {exc.strerror or exc}"
    except StoreError as exc:
        return str(exc).removeprefix(f"{path}: ")
    report.segments += 1
    if name not in blob_ok:
        return "index segment of a missing blob"
    if not blob_ok[name]:
        return ""
    blob_path = store.blob_path(name)
    try:
        with open(blob_path, "rb") as file:
            size = os.fstat(file.fileno()).st_size
            if size != segment.blob_size:
                return f"index segment says the blob has {segment.blob_size} bytes, it has {size}"
            if size == 0:
                return None
            with mmap.mmap(file.fileno(), 0, access=mmap.ACCESS_READ) as data:
                for index, (chunk, offset, length) in enumerate(segment.records):
                    report.chunks += 1
                    if hashlib.sha256(data[offset : offset + length]).digest() != chunk:
                        return f"record {index}: {length} bytes at offset {offset} do not match its digest"
    except FileNotFoundError:
        return ""
    return None


# -- gc -----------------------------------------------------------------------------------


def referenced_blobs(image: str | os.PathLike[str]) -> set[str]:
    """The blob digests an image's device table names (tags that are 64 lowercase hex)."""
    from ..reader import open_image

    with open_image(image) as img:
        digests = {_tag_digest(slot.tag) for slot in img.superblock.devices}
    return {digest for digest in digests if digest is not None}


def _tag_digest(tag: bytes) -> str | None:
    """The blob digest a device tag names, None for another kind of tag (a path, a label)."""
    text = tag.split(b"\0", 1)[0].decode("ascii", "replace")
    return text if is_digest_name(text) else None


def collect_garbage(
    store: BlobStore,
    keep: Sequence[str | os.PathLike[str]],
    *,
    dry_run: bool = True,
    stale_minutes: float = DEFAULT_STALE_MINUTES,
    referenced: Callable[[str | os.PathLike[str]], set[str]] = referenced_blobs,
) -> GcReport:
    """Remove blobs (with their segments) no image in `keep` references, segments without a
    blob, and stale temp files. Every image is read before anything is removed: one that cannot
    be read raises and nothing is removed. `dry_run` only reports."""
    if not dry_run and not store.writable:
        raise StoreError("gc --delete needs a writable store", store.path)
    lock = store.exclusive_lock() if not dry_run else store.pack_lock()
    with lock:
        wanted: set[str] = set()
        for image in keep:
            wanted |= referenced(image)
        report = GcReport(dry_run=dry_run)
        # Segments first: one published meanwhile (a dry run lets packs run) has its blob listed.
        segments = {name for name in store.segment_names() if is_digest_name(name)}
        blobs = [name for name in store.blob_names() if is_digest_name(name)]
        present = set(blobs)
        report.missing_blobs = sorted(wanted - present)
        doomed_segments: list[str] = []
        doomed_blobs: list[str] = []
        for name in blobs:
            if name in wanted:
                report.kept_blobs += 1
                continue
            if name in segments:
                doomed_segments.append(store.segment_path(name))
                size = _size(store.segment_path(name)) or 0
                report.removals.append(Removal(_segment_rel(name), size, "segment of an unused blob"))
            doomed_blobs.append(store.blob_path(name))
            reason = "unused blob" if name in segments else "orphan blob (no index segment)"
            report.removals.append(Removal(_blob_rel(name), _size(store.blob_path(name)) or 0, reason))
        for name in sorted(segments - present):
            doomed_segments.append(store.segment_path(name))
            report.removals.append(
                Removal(_segment_rel(name), _size(store.segment_path(name)) or 0, "segment of a missing blob")
            )
        doomed_temps = []
        for name in store.temp_names():
            path = os.path.join(store.tmp_dir, name)
            state = temp_state(path, stale_minutes)
            if state is not None and state[0]:
                doomed_temps.append(path)
                report.removals.append(Removal(f"{TMP_DIR}/{name}", _size(path) or 0, "stale temporary file"))
        if not dry_run:
            _remove_all(doomed_segments)
            _remove_all(doomed_blobs)
            _remove_all(doomed_temps)
    return report


# -- du -----------------------------------------------------------------------------------


def image_store_bytes(image: str | os.PathLike[str], blobs: set[str]) -> ImageUsage:
    """The chunk bytes of an image's chunk-based regular files whose chunks lie in `blobs`
    (each inode once, hard links included; holes count nothing)."""
    from ..reader import open_image
    from ..reader.datamap import iter_chunk_entries

    with open_image(image) as img:
        sb = img.superblock
        digests = [_tag_digest(slot.tag) for slot in sb.devices]
        slot_in_store = [digest in blobs for digest in digests]
        named = {digest for digest in digests if digest in blobs}
        mask = device_id_mask(sb.extra_devices if sb.has(FeatureIncompat.DEVICE_TABLE) else 0)
        total = 0
        for nid in _regular_files(img):
            inode = img.inode(nid)
            if inode.layout != DataLayout.CHUNK_BASED or inode.chunkbits is None:
                continue
            chunk = 1 << inode.chunkbits
            for index, _offset, device_id, blkaddr in iter_chunk_entries(img.storage, inode):
                device = device_id & mask
                if blkaddr == EROFS_NULL_ADDR or not 1 <= device <= len(slot_in_store):
                    continue
                if not slot_in_store[device - 1]:
                    continue
                start = index * chunk
                total += max(0, min(start + chunk, inode.size) - start)
    return ImageUsage(os.fspath(image), total, frozenset(named))


def _regular_files(img: Image) -> Iterator[int]:
    """NIDs of every regular file of an image, each once."""
    seen: set[int] = set()
    pending = [img.root_nid]
    visited = {img.root_nid}
    while pending:
        nid = pending.pop()
        for entry in img.scandir_nid(nid):
            if entry.file_type == FileType.DIR:
                if entry.nid not in visited:
                    visited.add(entry.nid)
                    pending.append(entry.nid)
            elif entry.file_type == FileType.REG_FILE and entry.nid not in seen:
                seen.add(entry.nid)
                yield entry.nid


def disk_usage(store: BlobStore, images: Sequence[str | os.PathLike[str]] = ()) -> UsageReport:
    """Blob count and bytes, indexed chunk bytes, and what `images` reference in the store."""
    report = UsageReport()
    sizes: dict[str, int] = {}
    for name in store.blob_names():
        if is_digest_name(name):
            size = _size(store.blob_path(name))
            if size is not None:
                sizes[name] = size
    report.blobs = len(sizes)
    report.stored_bytes = sum(sizes.values())
    for name in store.segment_names():
        if not is_digest_name(name):
            continue
        try:
            segment = _read_segment(store.segment_path(name))
        except FileNotFoundError:
            continue
        except (OSError, StoreError):
            report.damaged_segments += 1
            continue
        report.segments += 1
        report.indexed_bytes += sum(length for _chunk, _offset, length in segment.records)
    present = set(sizes)
    named: set[str] = set()
    for image in images:
        usage = image_store_bytes(image, present)
        report.images.append(usage)
        named |= usage.digests
    report.referenced_stored_bytes = sum(sizes[name] for name in named)
    return report


__all__ = [
    "DEFAULT_STALE_MINUTES",
    "Finding",
    "GcReport",
    "ImageUsage",
    "Removal",
    "UsageReport",
    "VerifyReport",
    "collect_garbage",
    "disk_usage",
    "image_store_bytes",
    "referenced_blobs",
    "temp_state",
    "verify_store",
]
