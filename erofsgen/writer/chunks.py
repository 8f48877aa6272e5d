"""Chunked file data: hashed by the data stage, placed once it settles, copied at emit.

A chunked file is cut at multiples of the chunk size. The data stage reads each file once and
records one digest per chunk (HOLE for all-zero chunks, which are never read back nor stored);
`ChunkSession.resolve` then gives every chunk a place, in inode order so the result does not
depend on thread timing: a hole, a chunk already placed in this run, a chunk some blob store
already holds, or the next blocks of the new area (the image's chunk area, the `--blobdev`
file, or a store's new blob). The copier thread fills the new area by reading each new chunk
again and checking it still has its digest, so a file that changed under the pack can never
put a chunk under a wrong name. See specs/blob-store.md.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import os
import threading
import time
from typing import TYPE_CHECKING, Protocol

from ..errors import ImageWriteError, InvalidInputError
from ..format.chunk import CHUNK_BLOCK_MAP_ENTRY, CHUNK_INDEX, chunk_format
from ..format.constants import EROFS_NULL_ADDR, DataLayout
from ..format.device import DEVICE_SLOT, DeviceSlotRec
from ..model import BytesData, DataSource, EntryData, PathData
from .filecopy import FileReader
from .stored import Stored
from .validate import show

if TYPE_CHECKING:
    from ..blobs.store import BlobStore, FileCache, PendingBlob
    from .options import WriteOptions
    from .plan import PlannedInode

HOLE = b""  # the digest slot of an all-zero chunk
READ_PIECE = 1 << 20  # bytes per read: chunks may be far larger than memory should hold
TAG_SIZE = 64
NEW = -1  # device key of the new area until it has an id
_PATH_FLAGS = os.O_RDONLY | os.O_CLOEXEC | os.O_NOFOLLOW | os.O_NONBLOCK
_BLOCK_MAP_PACK = CHUNK_BLOCK_MAP_ENTRY.struct.pack
_INDEX_PACK = CHUNK_INDEX.struct.pack
# Files changed this recently are not cached: a change in the same timestamp tick could hide.
RACY_NS = 2 * 10**9
_TARGET_SIDE = {errno.ENOSPC, errno.EDQUOT, errno.EFBIG, errno.EIO}  # not a reason to copy otherwise


class ChunkReader(Protocol):
    """Positional reads of one chunked file's data (a path, the spool, memory, a stream)."""

    def pread(self, length: int, offset: int) -> bytes: ...
    def close(self) -> None: ...


class ChunkedData(Stored):
    """A CHUNK_BASED regular file: no blocks of its own, a chunk index after its record."""

    __slots__ = ("_size", "cached", "digests", "locs", "plan", "session", "source", "spool", "stat")
    file_data = True

    def __init__(self, source: DataSource, plan: PlannedInode, session: ChunkSession) -> None:
        self.source = source
        self._size = source.size
        self.plan = plan
        self.session = session
        self.spool: tuple[int, int] | None = None  # (descriptor, offset) of a spooled stream
        self.digests: list[bytes] = []  # one per chunk, by the data stage
        self.locs: list[int] = []  # one per chunk, by resolve: device << 32 | block, or -1
        self.stat: os.stat_result | None = None  # a path's stat when read, for the cache
        self.cached = False  # its digests came from the stat cache

    @property
    def size(self) -> int:
        return self._size

    @property
    def chunk_count(self) -> int:
        return -(-self._size // self.session.chunk_size)

    def shape(self, plan: PlannedInode, block_size: int, may_inline: bool) -> None:
        plan.layout = DataLayout.CHUNK_BASED
        plan.nblocks = 0
        plan.tail_size = 0
        unit = self.session.entry_size
        # The index starts at the record's end rounded up to its entry size (records are
        # 32-byte aligned, so relative alignment is absolute alignment).
        pad = -(plan.core_size + len(plan.xattr_body)) % unit
        plan.extra = pad + unit * self.chunk_count

    def i_u(self, plan: PlannedInode) -> int:
        return self.session.i_format

    def write(
        self, fd: int, plan: PlannedInode, block_size: int, stop: threading.Event | None = None
    ) -> bytes:
        """Nothing goes to the image's blocks here: return the padding and the chunk index."""
        session = self.session
        pad = plan.extra - session.entry_size * len(self.locs)
        if session.indexes:
            entries = [
                _INDEX_PACK(0, 0, EROFS_NULL_ADDR) if loc < 0 else _INDEX_PACK(0, loc >> 32, loc & 0xFFFFFFFF)
                for loc in self.locs
            ]
        else:
            base = session.base
            entries = [_BLOCK_MAP_PACK(EROFS_NULL_ADDR if loc < 0 else base + loc) for loc in self.locs]
        return bytes(pad) + b"".join(entries)

    def reader(self) -> ChunkReader:
        """A reader of this file's data, for hashing or copying."""
        if self.spool is not None:
            return _FdReader(self.spool[0], self.spool[1], owned=False)
        source = self.source
        if type(source) is BytesData:
            return _MemoryReader(source.data)
        if type(source) is EntryData or type(source) is PathData:
            try:
                return _FdReader(os.open(source.path, _PATH_FLAGS), 0, owned=True)
            except OSError as exc:
                raise self.error(f"cannot read {source.describe()}: {exc.strerror}") from None
        return _StreamReader(FileReader(source, self.plan.path, self._size))

    def error(self, message: str) -> InvalidInputError:
        return InvalidInputError(message, show(self.plan.path))


class _FdReader:
    __slots__ = ("base", "fd", "owned")

    def __init__(self, fd: int, base: int, *, owned: bool) -> None:
        self.fd = fd
        self.base = base
        self.owned = owned

    def pread(self, length: int, offset: int) -> bytes:
        return os.pread(self.fd, length, self.base + offset)

    def close(self) -> None:
        if self.owned:
            os.close(self.fd)


class _MemoryReader:
    __slots__ = ("data",)

    def __init__(self, data: bytes) -> None:
        self.data = data

    def pread(self, length: int, offset: int) -> bytes:
        return self.data[offset : offset + length]

    def close(self) -> None:
        pass


class _StreamReader:
    """Forward-only positional reads over a re-readable source (what is skipped is read)."""

    __slots__ = ("reader",)

    def __init__(self, reader: FileReader) -> None:
        self.reader = reader

    def pread(self, length: int, offset: int) -> bytes:
        reader = self.reader
        while reader.pos < offset:
            reader.read(min(READ_PIECE, offset - reader.pos))
        return reader.read(length)

    def close(self) -> None:
        self.reader.__exit__()


def hash_chunks(form: ChunkedData, abort: threading.Event) -> None:
    """The data stage's job for one chunked file: one digest per chunk, read exactly once."""
    session = form.session
    source = form.source
    path_backed = form.spool is None and (type(source) is EntryData or type(source) is PathData)
    if path_backed and session.cache is not None:
        cached = _from_cache(form, session)
        if cached is not None:
            form.digests = cached
            form.cached = True
            return
    reader = form.reader()
    try:
        if isinstance(reader, _FdReader) and reader.owned:
            before = os.fstat(reader.fd)
            if before.st_size != form.size:
                raise form.error(f"{source.describe()} changed size while packing")
            form.digests = _digests(form, reader, abort, sparse=True)
            after = os.fstat(reader.fd)
            if (after.st_size, after.st_mtime_ns, after.st_ctime_ns) != (
                before.st_size,
                before.st_mtime_ns,
                before.st_ctime_ns,
            ):
                raise form.error(f"{source.describe()} changed while packing")
            form.stat = after
        else:
            form.digests = _digests(form, reader, abort, sparse=False)
    except OSError as exc:
        raise form.error(f"cannot read {source.describe()}: {exc.strerror or exc}") from None
    finally:
        reader.close()


def _from_cache(form: ChunkedData, session: ChunkSession) -> list[bytes] | None:
    """The digests the stat cache has for this path in its current state.

    A cached chunk that no store holds any more is simply new again: the copier reads it from
    the file, and the file, unchanged since the entry was made, still has that digest (the
    copier checks).
    """
    assert session.cache is not None
    source = form.source
    assert isinstance(source, EntryData | PathData)
    try:
        st = os.stat(source.path, follow_symlinks=False)
    except OSError:
        return None  # the read reports it
    if st.st_size != form.size:
        return None
    digests = session.cache.get(os.fsencode(source.path), st, session.chunk_size)
    if digests is None or len(digests) != form.chunk_count:
        return None
    form.stat = st
    return digests


def _digests(form: ChunkedData, reader: ChunkReader, abort: threading.Event, *, sparse: bool) -> list[bytes]:
    size = form.size
    chunk = form.session.chunk_size
    digests: list[bytes] = []
    zero_piece = bytes(min(chunk, READ_PIECE))
    fd = reader.fd if sparse and isinstance(reader, _FdReader) and size > chunk else -1
    data_at = 0  # with SEEK_DATA: the first data byte at or after the current chunk
    for start in range(0, size, chunk):
        if abort.is_set():
            return digests
        length = min(chunk, size - start)
        if fd >= 0 and data_at < start:
            try:
                data_at = os.lseek(fd, start, os.SEEK_DATA)
            except OSError:
                data_at = size  # ENXIO: only a hole follows
        if data_at >= start + length:
            digests.append(HOLE)
            continue
        hasher = hashlib.sha256()
        zero = True
        done = 0
        while done < length:
            step = min(READ_PIECE, length - done)
            piece = reader.pread(step, start + done)
            if len(piece) != step:
                raise form.error(f"{form.source.describe()} shrank while packing")
            hasher.update(piece)
            if zero:
                zero = piece == (zero_piece if step == len(zero_piece) else bytes(step))
            done += step
        digests.append(HOLE if zero else hasher.digest())
    return digests


class ChunkSession:
    """One build's chunking: its target, its stores, every chunked file and where chunks go.

    Use it as a context manager around the whole build: it holds the stores' shared locks until
    the image is in place, and throws away an unpublished blob on failure.
    """

    # Regular files of at least this many bytes are chunked; the data stage hashes their chunks.
    min_file_size: int
    hashing = True

    def __init__(self, options: WriteOptions) -> None:
        self.block_size = bs = options.block_size
        self.min_file_size = bs
        self.chunk_size = options.chunk_size or bs  # tar index mode chooses one per file
        self.blob_device = options.blob_device
        self.indexes = options.blob_device is not None or bool(options.blob_stores)
        self.entry_size = CHUNK_INDEX.size if self.indexes else CHUNK_BLOCK_MAP_ENTRY.size
        self.i_format = chunk_format(
            self.chunk_size.bit_length() - 1, bs.bit_length() - 1, indexes=self.indexes
        )
        self.store_paths = options.blob_stores
        self.stores: list[BlobStore] = []
        self.cache: FileCache | None = None
        self.forms: list[ChunkedData] = []  # in the order the data stage met them
        self.devices: list[_Device] = []  # the device table, in order
        self.new_device = 0  # the new area's device id (0: the image itself)
        self.new_chunks: list[tuple[ChunkedData, int, bytes]] = []  # (file, chunk, digest), in area order
        self.new_blocks = 0
        self.base = 0  # the image's chunk area, in blocks (no blob device)
        self.start_ns = time.time_ns()
        self.pending: PendingBlob | None = None
        self._locks: list[object] = []
        self.copier: ChunkCopier | None = None
        self._blob_sizes: dict[str, int] = {}

    def __enter__(self) -> ChunkSession:
        try:
            if self.store_paths:
                from ..blobs.store import BlobStore  # only builds with stores need it
            for i, path in enumerate(self.store_paths):
                store = BlobStore.open(path, writable=i == 0, create=i == 0)
                lock = store.pack_lock()
                lock.__enter__()
                self._locks.append(lock)
                self.stores.append(store)
                store.locate(bytes(32), self.block_size)  # load the index here, not in two workers
            if self.stores:
                self.cache = self.stores[0].file_cache(self.start_ns)
        except BaseException:
            self.__exit__(None)
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop_copy()
        if self.pending is not None:
            self.pending.discard()
            self.pending = None
        while self._locks:
            self._locks.pop().__exit__(None, None, None)  # type: ignore[attr-defined]

    def form(self, source: DataSource, plan: PlannedInode) -> ChunkedData:
        form = ChunkedData(source, plan, self)
        self.forms.append(form)
        return form

    def resolve(self) -> None:
        """Give every chunk its place, in inode order (the data stage has settled)."""
        bs = self.block_size
        chunk = self.chunk_size
        placed: dict[bytes, int] = {}
        ids: dict[str | int, int] = {}
        if self.blob_device is not None:
            ids[NEW] = self.new_device = 1
            self.devices.append(_Device("", 0))
        for form in sorted(self.forms, key=_ino):
            locs: list[int] = []
            append = locs.append
            size = form.size
            for k, digest in enumerate(form.digests):
                if not digest:
                    append(-1)
                    continue
                loc = placed.get(digest)
                if loc is None:
                    found = self._locate(digest)
                    if found is not None:
                        blob, offset, blob_size = found
                        dev = ids.get(blob)
                        if dev is None:
                            dev = ids[blob] = len(self.devices) + 1
                            self.devices.append(_Device(blob, -(-blob_size // bs)))
                        loc = dev << 32 | offset // bs
                    else:
                        dev = ids.get(NEW, -1)
                        if dev < 0 and self.stores:
                            dev = ids[NEW] = self.new_device = len(self.devices) + 1
                            self.devices.append(_Device("", 0))
                        loc = max(dev, 0) << 32 | self.new_blocks
                        self.new_chunks.append((form, k, digest))
                        self.new_blocks += -(-min(chunk, size - k * chunk) // bs)
                    placed[digest] = loc
                append(loc)
            form.locs = locs
            if form.stat is not None and self.cache is not None and not form.cached:
                source = form.source
                assert isinstance(source, EntryData | PathData)
                self.cache.put(os.fsencode(source.path), form.stat, chunk, form.digests)
        if self.new_device and self.devices[self.new_device - 1].tag == "":
            self.devices[self.new_device - 1].blocks = self.new_blocks
        if len(self.devices) > 0xFFFF:
            raise InvalidInputError(f"the image would need {len(self.devices)} blob devices, over 65535")

    def _locate(self, digest: bytes) -> tuple[str, int, int] | None:
        bs = self.block_size
        for store in self.stores:
            found = store.locate(digest, bs)
            if found is not None:
                size = self._blob_sizes.get(found.blob)
                if size is None:
                    size = self._blob_sizes[found.blob] = os.stat(store.blob_path(found.blob)).st_size
                return found.blob, found.offset, size
        return None

    @property
    def in_image(self) -> bool:
        """New chunks go to the image's own chunk area (no blob device, no store)."""
        return not self.indexes

    def start_copy(self, fd: int, path: str) -> None:
        """Start writing the new chunks: at the image's chunk area, or into `fd` from offset 0.

        For a store, `fd` is ignored: the new chunks go into a new pending blob of the first store.
        """
        offset = self.base * self.block_size if self.in_image else 0
        what = "the image" if self.in_image else "the blob device"
        if self.stores:
            if not self.new_chunks:
                # Every chunk is in a store already: nothing to write. (A copier here would be
                # handed the image's own descriptor, and truncate it while the emitter writes.)
                return
            self.pending = self.stores[0].new_blob()
            fd, path, what = self.pending.fd, self.stores[0].path, "a new blob"
        hashing = not self.in_image
        self.copier = ChunkCopier(self, fd, offset, (path, what), hashing)
        self.copier.start()

    def stop_copy(self) -> None:
        """Stop the copier (the build failed) before the descriptors it writes are closed."""
        if self.copier is not None:
            self.copier.stop.set()
            self.copier.join()
            self.copier = None

    def finish_copy(self) -> None:
        """Wait for the copier; name the new blob in its device slot and publish it to its store."""
        copier = self.copier
        if copier is None:
            return
        copier.join()
        self.copier = None
        if copier.error is not None:
            raise copier.error
        if not self.new_device:
            return
        device = self.devices[self.new_device - 1]
        device.tag = copier.digest
        if self.pending is not None:
            records = [(digest, (loc & 0xFFFFFFFF) * self.block_size, _chunk_length(form, k))
                       for form, k, digest in self.new_chunks
                       for loc in (form.locs[k],)]  # fmt: skip
            self.pending.publish(copier.digest, self.block_size, records)
            self.pending = None

    def device_table(self, primary_blocks: int) -> bytes:
        """The device slots: tags, sizes and flat-mode addresses after the primary device."""
        slots = []
        uniaddr = primary_blocks
        for device in self.devices:
            tag = device.tag.encode()
            slots.append(
                DEVICE_SLOT.pack(
                    DeviceSlotRec(tag.ljust(TAG_SIZE, b"\0"), device.blocks, uniaddr, 0, 0, bytes(52))
                )
            )
            uniaddr += device.blocks
        if uniaddr > 0xFFFFFFFF:
            raise InvalidInputError("the image and its blob devices exceed the 32-bit flat address space")
        return b"".join(slots)

    def save_cache(self) -> None:
        if self.cache is not None:
            self.cache.save()


def chunk_session(options: WriteOptions) -> contextlib.AbstractContextManager[ChunkSession | None]:
    """The build's chunk session, or None when these options chunk nothing."""
    if options.tar_index is not None:
        from .tarindex import TarIndexSession

        return TarIndexSession(options)
    return ChunkSession(options) if options.chunk_size is not None else contextlib.nullcontext()


class _Device:
    __slots__ = ("blocks", "tag")

    def __init__(self, tag: str, blocks: int) -> None:
        self.tag = tag
        self.blocks = blocks


def _ino(form: ChunkedData) -> int:
    return form.plan.ino


def _chunk_length(form: ChunkedData, k: int) -> int:
    chunk = form.session.chunk_size
    return min(chunk, form.size - k * chunk)


class ChunkCopier(threading.Thread):
    """Writes the new chunks, in order, re-reading and re-checking each; hashes a blob whole."""

    def __init__(
        self, session: ChunkSession, fd: int, offset: int, target: tuple[str, str], hashing: bool
    ) -> None:
        super().__init__(name="erofsgen-chunks", daemon=True)
        self.session = session
        self.fd = fd
        self.offset = offset
        self.target = target  # (path, what) for errors: the image, the blob device, a store
        self.blob = hashlib.sha256() if hashing else None
        self.stop = threading.Event()
        self.error: BaseException | None = None
        self.digest = ""

    def run(self) -> None:
        try:
            self._copy()
        except OSError as exc:  # reads are InvalidInputErrors by now: this is the target's
            path, what = self.target
            if isinstance(exc, ImageWriteError):
                self.error = exc
            else:
                self.error = ImageWriteError(f"cannot write {what}: {exc.strerror or exc}", path, exc.errno)
        except BaseException as exc:  # raised on the main thread by finish_copy
            self.error = exc

    def _copy(self) -> None:
        session = self.session
        bs = session.block_size
        blob = self.blob
        at = self.offset
        current: ChunkedData | None = None
        reader: ChunkReader | None = None
        trusted = False
        try:
            for form, k, digest in session.new_chunks:
                if self.stop.is_set():
                    return
                if form is not current:
                    if reader is not None:
                        reader.close()
                    reader = None
                    current = form
                    reader = form.reader()
                    trusted = _unchanged(form, reader)
                assert reader is not None
                length = _chunk_length(form, k)
                start = k * session.chunk_size
                if not (trusted and self._copy_in_kernel(form, reader, start, at, length)):
                    self._copy_checked(form, reader, digest, start, at, length)
                padded = -(-length // bs) * bs
                if blob is not None and padded > length:
                    blob.update(bytes(padded - length))
                at += padded
        finally:
            if reader is not None:
                reader.close()
        if blob is not None:
            os.ftruncate(self.fd, at)  # the blob ends on a block boundary, its padding zeros
            self.digest = blob.hexdigest()

    def _copy_checked(
        self, form: ChunkedData, reader: ChunkReader, digest: bytes, start: int, at: int, length: int
    ) -> None:
        """Through a buffer, hashing the chunk again: it must still have the digest it was placed by."""
        check = hashlib.sha256()
        blob = self.blob
        done = 0
        while done < length:
            step = min(READ_PIECE, length - done)
            try:
                piece = reader.pread(step, start + done)
            except OSError as exc:
                raise form.error(f"cannot read {form.source.describe()}: {exc.strerror}") from None
            if len(piece) != step:
                raise form.error(f"{form.source.describe()} shrank while packing")
            check.update(piece)
            if blob is not None:
                blob.update(piece)
            _write_all(self.fd, piece, at + done)
            done += step
        if check.digest() != digest:
            raise form.error(f"{form.source.describe()} changed while packing")

    def _copy_in_kernel(
        self, form: ChunkedData, reader: ChunkReader, start: int, at: int, length: int
    ) -> bool:
        """Copy a chunk of an unchanged file in the kernel (then hash it from the target for a
        blob's digest); False when the kernel cannot, before anything is written."""
        assert isinstance(reader, _FdReader)
        done = 0
        while done < length:
            try:
                n = os.copy_file_range(reader.fd, self.fd, length - done, start + done, at + done)
            except OSError as exc:
                if exc.errno in _TARGET_SIDE:
                    raise
                n = 0
            if n == 0:
                if done:
                    raise form.error(f"{form.source.describe()} shrank while packing")
                return False
            done += n
        if self.blob is not None:
            done = 0
            while done < length:
                piece = os.pread(self.fd, min(READ_PIECE, length - done), at + done)
                if not piece:
                    raise OSError(errno.EIO, "the blob ended early")
                self.blob.update(piece)
                done += len(piece)
        return True


def _unchanged(form: ChunkedData, reader: ChunkReader) -> bool:
    """Whether a path-backed file is provably the one the data stage hashed: same inode, size and
    times as then, and not changed so recently that a same-tick change could hide."""
    before = form.stat
    if before is None or form.cached or not (isinstance(reader, _FdReader) and reader.owned):
        return False  # digests from the cache are checked against the file, never trusted blind
    now = os.fstat(reader.fd)
    settled = form.session.start_ns - RACY_NS
    return (
        (now.st_dev, now.st_ino, now.st_size, now.st_mtime_ns, now.st_ctime_ns)
        == (before.st_dev, before.st_ino, before.st_size, before.st_mtime_ns, before.st_ctime_ns)
        and now.st_mtime_ns < settled
        and now.st_ctime_ns < settled
    )


def _write_all(fd: int, data: bytes, offset: int) -> None:
    view = memoryview(data)
    while view:
        n = os.pwrite(fd, view, offset)
        view = view[n:]
        offset += n
