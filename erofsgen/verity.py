"""fs-verity file digests: SHA-256, 4 KiB blocks, no salt (what composefs and overlayfs use).

The digest is SHA-256 of a 256-byte descriptor holding the file size and the root of a Merkle
tree: leaves are the SHA-256 of each 4 KiB data block (the last one zero-padded), each upper
level hashes 4 KiB blocks of the level below's concatenated hashes (zero-padded), up to a
level of one hash. An empty file has an all-zero root.

`FsVerityHasher` streams: it keeps the partial data block and at most one 4 KiB block of
hashes per tree level, so memory stays bounded whatever the file size. Full data blocks are
hashed in batches (one list comprehension over a memoryview), which keeps the per-block Python
overhead small next to the hashing itself; hashlib releases the GIL on 4 KiB inputs.
"""

from __future__ import annotations

import os
import struct
import threading
from hashlib import sha256

BLOCK_SIZE = 4096
HASH_SIZE = 32
ALG_SHA256 = 1  # FS_VERITY_HASH_ALG_SHA256
LOG_BLOCK_SIZE = 12
READ_SIZE = 1 << 20  # bytes read per call when digesting a file
_ZERO_BLOCK = bytes(BLOCK_SIZE)
# version, hash_algorithm, log_blocksize, salt_size, reserved, data_size, root_hash[64], salt[32],
# reserved[144]
_DESCRIPTOR = struct.Struct("<BBBBIQ64s32s144x")


class FsVerityHasher:
    """Incremental fs-verity SHA-256 digest, used like a hashlib object (`update`, `digest`)."""

    __slots__ = ("_levels", "_partial", "_size")

    def __init__(self, data: bytes | bytearray | memoryview = b"") -> None:
        self._partial = bytearray()  # the data block being filled (< BLOCK_SIZE bytes)
        self._levels: list[bytearray] = []  # per tree level: hashes not yet hashed upwards
        self._size = 0
        if data:
            self.update(data)

    @property
    def size(self) -> int:
        """Bytes hashed so far."""
        return self._size

    def update(self, data: bytes | bytearray | memoryview) -> None:
        """Hash more data."""
        view = memoryview(data).cast("B")
        n = len(view)
        if not n:
            return
        self._size += n
        start = 0
        partial = self._partial
        if partial:
            start = min(BLOCK_SIZE - len(partial), n)
            partial += view[:start]
            if len(partial) < BLOCK_SIZE:
                return
            self._add(0, sha256(partial).digest())
            partial.clear()
        end = start + (n - start) // BLOCK_SIZE * BLOCK_SIZE
        if end > start:
            self._add(
                0,
                b"".join([sha256(view[i : i + BLOCK_SIZE]).digest() for i in range(start, end, BLOCK_SIZE)]),
            )
        if end < n:
            partial += view[end:]

    def _add(self, level: int, hashes: bytes) -> None:
        """Append hashes to a level; a full block there is hashed upwards only once more arrive,
        so the single block of the top level is never hashed as if it had a parent."""
        levels = self._levels
        if level == len(levels):
            levels.append(bytearray())
        buf = levels[level]
        pos = 0
        while pos < len(hashes):
            if len(buf) == BLOCK_SIZE:
                self._add(level + 1, sha256(buf).digest())
                buf.clear()
            take = min(BLOCK_SIZE - len(buf), len(hashes) - pos)
            buf += hashes[pos : pos + take]
            pos += take

    def root_hash(self) -> bytes:
        """The Merkle tree's root (all zeros for an empty input)."""
        if self._size == 0:
            return bytes(HASH_SIZE)
        levels = [bytearray(b) for b in self._levels]
        if self._partial:
            leaf = sha256(bytes(self._partial) + _ZERO_BLOCK[len(self._partial) :]).digest()
            _append(levels, 0, leaf)
        level = 0
        while True:
            buf = levels[level]
            if len(buf) == HASH_SIZE and level + 1 == len(levels):
                return bytes(buf)
            _append(levels, level + 1, sha256(buf + _ZERO_BLOCK[len(buf) :]).digest())
            level += 1

    def descriptor(self) -> bytes:
        """The 256-byte fs-verity descriptor whose SHA-256 is the digest."""
        return _DESCRIPTOR.pack(1, ALG_SHA256, LOG_BLOCK_SIZE, 0, 0, self._size, self.root_hash(), b"")

    def digest(self) -> bytes:
        """The 32-byte fs-verity digest of everything hashed so far (hashing may go on)."""
        return sha256(self.descriptor()).digest()

    def hexdigest(self) -> str:
        return self.digest().hex()


def _append(levels: list[bytearray], level: int, digest: bytes) -> None:
    """`FsVerityHasher._add` for the finishing pass over a copy of the levels."""
    if level == len(levels):
        levels.append(bytearray())
    buf = levels[level]
    if len(buf) == BLOCK_SIZE:
        _append(levels, level + 1, sha256(buf).digest())
        buf.clear()
    buf += digest


def fsverity_digest(data: bytes | bytearray | memoryview) -> bytes:
    """The fs-verity digest of a bytes-like object."""
    return FsVerityHasher(data).digest()


def fsverity_digest_fd(fd: int, offset: int = 0) -> bytes:
    """The fs-verity digest of an open file's contents from `offset` to its end (positional reads)."""
    hasher = FsVerityHasher()
    view = _read_buffer()
    while True:
        n = os.preadv(fd, [view], offset)
        if n <= 0:
            break
        hasher.update(view[:n])
        offset += n
    return hasher.digest()


_buffers = threading.local()


def _read_buffer() -> memoryview:
    """This thread's read buffer: a fresh 1 MiB per file would cost an mmap, page faults and
    an munmap each time, more than hashing a small file."""
    view: memoryview | None = getattr(_buffers, "view", None)
    if view is None:
        view = _buffers.view = memoryview(bytearray(READ_SIZE))
    return view


def fsverity_digest_path(path: str | os.PathLike[str] | bytes) -> bytes:
    """The fs-verity digest of a file's contents."""
    fd = os.open(path, os.O_RDONLY | getattr(os, "O_CLOEXEC", 0))
    try:
        return fsverity_digest_fd(fd)
    finally:
        os.close(fd)
