"""A content-addressed blob store directory (specs/blob-store.md "Store layout").

`BlobStore.open` checks (or creates) the layout; `locate` answers "is this chunk stored, and
where" from every index segment, loaded once; `new_blob` + `PendingBlob.publish` add a blob
the crash-safe way (temp file, fsync, rename, fsync the directory; then its segment the same
way). `pack_lock`/`exclusive_lock` are the flock(2) protocol between packs and gc.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import hashlib
import os
import threading
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from types import TracebackType
from typing import TYPE_CHECKING

from .cache import FileCache
from .errors import StoreError
from .files import FILE_MODE, fsync_dir, temp_file, write_durably
from .segment import decode_segment, encode_segment, is_block_size, is_digest_name

if TYPE_CHECKING:
    from .maintenance import GcReport, UsageReport, VerifyReport

OCI_LAYOUT = "oci-layout"
OCI_LAYOUT_CONTENT = b'{"imageLayoutVersion": "1.0.0"}\n'
BLOBS_DIR = os.path.join("blobs", "sha256")
INDEX_DIR = "index"
TMP_DIR = "tmp"
CACHE_DIR = "cache"
LOCK_FILE = "lock"


@dataclass(frozen=True, slots=True)
class ChunkLocation:
    """Where a stored chunk lies: blob digest (hex), byte offset and length."""

    blob: str
    offset: int
    length: int


# The largest block size a chunk copy is judged for (EROFS block sizes stop at 64 KiB).
MAX_BLOCK_SIZE = 1 << 16
# A lookup entry: the largest block size the copy can serve, blob, offset, length. The
# ChunkLocation is made on a hit: a store may hold far more chunks than one pack looks up.
_Entry = tuple[int, str, int, int]


def usable_block_size(offset: int, length: int, blob_size: int) -> int:
    """The largest power of two P (up to MAX_BLOCK_SIZE) such that an image of block size P can
    reference this chunk copy: `offset % P == 0` and its P-blocks lie inside the blob.

    A copy usable with P is usable with every smaller power of two, so keeping the copy with the
    largest P answers every block size as well as all copies together would.
    """
    size = min(offset & -offset, MAX_BLOCK_SIZE) if offset else MAX_BLOCK_SIZE
    room = blob_size - offset
    while size > 1 and -(-length // size) * size > room:
        size >>= 1
    return size


class BlobStore:
    """One store directory. Thread-safe; several processes may use one store at once."""

    def __init__(self, path: str, *, writable: bool) -> None:
        self.path = path
        self.writable = writable
        self._blobs = os.path.join(path, BLOBS_DIR)
        self._index = os.path.join(path, INDEX_DIR)
        self._tmp = os.path.join(path, TMP_DIR)
        self._lock_path = os.path.join(path, LOCK_FILE)
        self._chunks: dict[bytes, _Entry] | None = None
        self._load_lock = threading.Lock()

    # -- opening --------------------------------------------------------------------------

    @classmethod
    def open(cls, path: str | os.PathLike[str], *, writable: bool = False, create: bool = False) -> BlobStore:
        """Open the store at `path`; `create` (with `writable`) makes its layout if missing."""
        text = os.fspath(path)
        if create and not writable:
            raise StoreError("a store can only be created writable", text)
        marker, blobs = os.path.join(text, OCI_LAYOUT), os.path.join(text, BLOBS_DIR)
        if create and not (os.path.isfile(marker) and os.path.isdir(blobs)):
            _create_layout(text)  # an existing store is only checked below: it may be read-only
        if not os.path.isdir(text):
            raise StoreError("no such store directory", text)
        if not os.path.isfile(marker) or not os.path.isdir(blobs):
            raise StoreError("not a blob store (no oci-layout file and blobs/sha256 directory)", text)
        store = cls(text, writable=writable)
        if writable:
            store._ensure_writable()
        return store

    def _ensure_writable(self) -> None:
        """Create the parts a reader-made store may lack, then prove that we can write."""
        try:
            for sub in (INDEX_DIR, TMP_DIR, CACHE_DIR):
                os.makedirs(os.path.join(self.path, sub), exist_ok=True)
            if not os.path.exists(self._lock_path):
                os.close(os.open(self._lock_path, os.O_WRONLY | os.O_CREAT | os.O_CLOEXEC, FILE_MODE))
            for directory in (self._blobs, self._index, self._tmp, os.path.join(self.path, CACHE_DIR)):
                if not os.access(directory, os.W_OK | os.X_OK):
                    raise PermissionError(errno.EACCES, os.strerror(errno.EACCES), directory)
            fd, probe = temp_file(self._tmp, "probe")  # mode bits are not the whole truth (root, ro mounts)
            os.close(fd)
            os.unlink(probe)
        except OSError as exc:
            raise StoreError(f"store is not writable: {exc.strerror or exc}", self.path) from exc

    # -- names ----------------------------------------------------------------------------

    def blob_path(self, digest: str) -> str:
        """STORE/blobs/sha256/<digest>."""
        if not is_digest_name(digest):
            raise StoreError(f"{digest!r} is not a SHA-256 digest in 64 lowercase hex characters", self.path)
        return os.path.join(self._blobs, digest)

    def segment_path(self, digest: str) -> str:
        """STORE/index/<digest>."""
        self.blob_path(digest)  # validates
        return os.path.join(self._index, digest)

    @property
    def tmp_dir(self) -> str:
        return self._tmp

    def contains(self, digest: str) -> bool:
        """Whether blob `digest` is in the store."""
        return os.path.isfile(self.blob_path(digest))

    def blob_names(self) -> list[str]:
        """Every name in blobs/sha256, sorted (maintenance judges the ones that are not digests)."""
        return sorted(os.listdir(self._blobs))

    def segment_names(self) -> list[str]:
        """Every name in index/, sorted; none if the store has no index yet."""
        try:
            return sorted(os.listdir(self._index))
        except FileNotFoundError:
            return []

    def temp_names(self) -> list[str]:
        """Every name in tmp/, sorted."""
        try:
            return sorted(os.listdir(self._tmp))
        except FileNotFoundError:
            return []

    # -- lookup ---------------------------------------------------------------------------

    def locate(self, chunk: bytes, block_size: int) -> ChunkLocation | None:
        """Where chunk digest `chunk` is stored at an offset usable with `block_size`, or None.

        Usable: the offset is a multiple of `block_size` (a power of two) and the chunk's blocks
        of that size lie inside the blob. The first call loads every segment whose blob exists
        (a damaged one raises StoreError). For each chunk the copy usable with the largest block
        size is kept (ties: the first segment by name), so if it cannot serve `block_size`, no
        copy can: the answer depends only on the store's content.
        """
        chunks = self._chunks
        if chunks is None:
            chunks = self._load()
        entry = chunks.get(chunk)
        if entry is None or entry[0] < block_size:
            return None
        return ChunkLocation(entry[1], entry[2], entry[3])

    def _load(self) -> dict[bytes, _Entry]:
        with self._load_lock:
            if self._chunks is not None:
                return self._chunks
            chunks: dict[bytes, _Entry] = {}
            try:
                blobs = {name for name in os.listdir(self._blobs) if is_digest_name(name)}
                segments = self.segment_names()
            except OSError as exc:
                raise StoreError(f"cannot list: {exc.strerror or exc}", exc.filename) from exc
            for name in segments:
                if not is_digest_name(name) or name not in blobs:
                    continue  # a stray file, or a blob gc removed: nothing to locate there
                path = os.path.join(self._index, name)
                try:
                    with open(path, "rb") as file:
                        data = file.read()
                except FileNotFoundError:
                    continue  # removed by gc since the listing
                except OSError as exc:
                    raise StoreError(f"cannot read index segment: {exc.strerror or exc}", path) from exc
                try:
                    segment = decode_segment(data, path)
                except StoreError as exc:
                    raise self._damaged(path, str(exc).removeprefix(f"{path}: ")) from None
                try:
                    size = os.stat(os.path.join(self._blobs, name)).st_size
                except FileNotFoundError:
                    continue
                if size != segment.blob_size:
                    reason = f"index segment says {segment.blob_size} bytes, blob has {size}"
                    raise self._damaged(path, reason)
                _merge(chunks, name, size, segment.records)
            self._chunks = chunks
            return chunks

    def _damaged(self, path: str, reason: str) -> StoreError:
        return StoreError(f"{reason} (`erofsgen store verify --repair {self.path}` removes it)", path)

    def _published(self, blob: str, size: int, records: Sequence[tuple[bytes, int, int]]) -> None:
        """Make a blob this object just published visible to locate()."""
        with self._load_lock:
            if self._chunks is not None:
                _merge(self._chunks, blob, size, records)

    # -- locking --------------------------------------------------------------------------

    def pack_lock(self) -> contextlib.AbstractContextManager[None]:
        """Shared flock on STORE/lock, held by a pack from loading the index until its image is
        in place (no lock on a read-only store without a lock file: nothing can change it)."""
        return self._flock(fcntl.LOCK_SH)

    def exclusive_lock(self) -> contextlib.AbstractContextManager[None]:
        """Exclusive flock on STORE/lock, for gc and repair. Never nest a pack_lock in it."""
        return self._flock(fcntl.LOCK_EX)

    @contextlib.contextmanager
    def _flock(self, operation: int) -> Iterator[None]:
        flags = (os.O_RDWR | os.O_CREAT if self.writable else os.O_RDONLY) | os.O_CLOEXEC
        try:
            fd = os.open(self._lock_path, flags, FILE_MODE)
        except FileNotFoundError:
            if operation == fcntl.LOCK_EX:
                raise StoreError("no lock file: the store is read-only", self.path) from None
            yield
            return
        except OSError as exc:
            raise StoreError(f"cannot open the lock file: {exc.strerror or exc}", self._lock_path) from exc
        try:
            fcntl.flock(fd, operation)
            yield
        finally:
            os.close(fd)  # closing the last descriptor releases the lock

    # -- writing --------------------------------------------------------------------------

    def new_blob(self) -> PendingBlob:
        """A new, empty temporary blob file under STORE/tmp/ for the caller to fill."""
        if not self.writable:
            raise StoreError("store is opened read-only", self.path)
        try:
            fd, path = temp_file(self._tmp, "blob")
        except OSError as exc:
            raise StoreError(f"cannot create a blob: {exc.strerror or exc}", self._tmp) from exc
        return PendingBlob(self, fd, path)

    def put(self, data: bytes, block_size: int = 4096) -> ChunkLocation:
        """Store `data` as one chunk (in a blob of its own, zero-padded to `block_size`);
        if a chunk with its digest is already stored, return that location instead."""
        if not is_block_size(block_size):
            raise StoreError(f"block size {block_size} is not a power of two from 512 to 65536", self.path)
        if not data:
            raise StoreError("an empty chunk cannot be stored", self.path)
        chunk = hashlib.sha256(data).digest()
        with self.pack_lock():
            found = self.locate(chunk, block_size)
            if found is not None:
                return found
            padded = data + bytes(-len(data) % block_size)
            with self.new_blob() as pending:
                os.pwrite(pending.fd, padded, 0)
                blob = hashlib.sha256(padded).hexdigest()
                pending.publish(blob, block_size, [(chunk, 0, len(data))])
        return ChunkLocation(blob, 0, len(data))

    def file_cache(self, start_ns: int) -> FileCache:
        """The stat cache of this store, for a pack that began at `start_ns` (time.time_ns())."""
        return FileCache(
            os.path.join(self.path, CACHE_DIR, "files"),
            start_ns,
            tmp_dir=self._tmp if self.writable else None,
        )

    # -- maintenance (maintenance.py) -----------------------------------------------------

    def verify(self, *, repair: bool = False, stale_minutes: float = 60.0) -> VerifyReport:
        """Check every blob, segment and temp file; see maintenance.verify_store."""
        from .maintenance import verify_store

        return verify_store(self, repair=repair, stale_minutes=stale_minutes)

    def gc(self, keep: Sequence[str | os.PathLike[str]], *, dry_run: bool = True) -> GcReport:
        """Remove what no image in `keep` references; see maintenance.collect_garbage."""
        from .maintenance import collect_garbage

        return collect_garbage(self, keep, dry_run=dry_run)

    def du(self, images: Sequence[str | os.PathLike[str]] = ()) -> UsageReport:
        """Space used, and shared by `images`; see maintenance.disk_usage."""
        from .maintenance import disk_usage

        return disk_usage(self, images)


def _merge(
    chunks: dict[bytes, _Entry], blob: str, blob_size: int, records: Sequence[tuple[bytes, int, int]]
) -> None:
    """Add a segment's records, keeping for each chunk the copy usable with the largest block size."""
    get = chunks.get
    top = MAX_BLOCK_SIZE
    for chunk, offset, length in records:
        # usable_block_size, inlined for its common case (the copy's top-size blocks fit).
        usable = min(offset & -offset, top) if offset else top
        if offset + -(-length // usable) * usable > blob_size:
            usable = usable_block_size(offset, length, blob_size)
        known = get(chunk)
        if known is None or usable > known[0]:
            chunks[chunk] = (usable, blob, offset, length)


def _create_layout(path: str) -> None:
    try:
        if not os.path.isdir(path):
            os.mkdir(path)  # the store itself, not missing parents: a mistyped path is an error
        os.makedirs(os.path.join(path, BLOBS_DIR), exist_ok=True)
        for sub in (INDEX_DIR, TMP_DIR, CACHE_DIR):
            os.makedirs(os.path.join(path, sub), exist_ok=True)
        marker = os.path.join(path, OCI_LAYOUT)
        if not os.path.exists(marker):
            write_durably(OCI_LAYOUT_CONTENT, os.path.join(path, TMP_DIR), marker, "layout")
        os.close(os.open(os.path.join(path, LOCK_FILE), os.O_WRONLY | os.O_CREAT | os.O_CLOEXEC, FILE_MODE))
        fsync_dir(path)
    except OSError as exc:
        raise StoreError(f"cannot create the store: {exc.strerror or exc}", path) from exc


class PendingBlob:
    """A blob being written to a temp file; the caller writes at offsets of `fd` and computes
    the digest, then `publish`es it. As a context manager, exiting without publishing discards."""

    def __init__(self, store: BlobStore, fd: int, path: str) -> None:
        self.store = store
        self.fd = fd
        self.path = path
        self._done = False

    def publish(self, digest: str, block_size: int, records: Sequence[tuple[bytes, int, int]]) -> str:
        """Make the blob durable under its digest, then its index segment; returns its path.

        `records` are (chunk digest, offset, length). The digest is trusted (the caller hashed
        what it wrote): verify checks it later. Publishing an existing blob keeps the existing
        file (the same bytes, by their digest) and still makes sure its segment exists.
        """
        if self._done:
            raise StoreError("blob already published or discarded", self.path)
        store = self.store
        final = store.blob_path(digest)
        segment_path = store.segment_path(digest)
        try:
            size = os.fstat(self.fd).st_size
            segment = encode_segment(digest, block_size, size, records)
            os.fsync(self.fd)
            if os.path.exists(final):
                self.discard()
            else:
                os.rename(self.path, final)
                self._close()
            fsync_dir(os.path.dirname(final))
            if not os.path.exists(segment_path):
                write_durably(segment, store.tmp_dir, segment_path, "segment")
        except OSError as exc:
            raise StoreError(f"cannot publish blob {digest}: {exc.strerror or exc}", store.path) from exc
        store._published(digest, size, records)
        return final

    def _close(self) -> None:
        if not self._done:
            self._done = True
            os.close(self.fd)

    def discard(self) -> None:
        """Close and remove the temp file (again: nothing)."""
        if self._done:
            return
        self._close()
        with contextlib.suppress(FileNotFoundError):
            os.unlink(self.path)

    def __enter__(self) -> PendingBlob:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.discard()


__all__ = ["BlobStore", "ChunkLocation", "FileCache", "PendingBlob", "StoreError"]
