"""The stat cache `cache/files`: the chunk digests of source files packed before.

A re-pack of a mostly unchanged tree can skip reading a file whose path, device, inode, size,
mtime, ctime and chunk size all match its entry (as git's index does). The caller uses an entry
only when every non-hole digest is still located in a given store (locate()); the cache itself
never decides that. Entries of files changed less than `RACY_NS` before the pack began are not
recorded: a change in the same timestamp tick would otherwise go unseen.

File format (little-endian), declared by `CacheFile`: a 24-byte header (magic `EROFSGFC`,
version 1, 4 reserved zero bytes, entry count), the entries (a 56-byte head, the path bytes,
then 32 bytes per chunk digest, all-zero for a hole), then the SHA-256 of every byte before it.
A file that fails any check is ignored as a whole (the cache is only an optimisation).

Which entries `save` keeps: those put or matched (`get`) in this run first, then the previous
file's other entries in their previous order, up to `MAX_ENTRIES`. So several trees packed
into one store keep their entries, and the least recently used ones go first.
"""

from __future__ import annotations

import hashlib
import os
import struct
import threading
from collections.abc import Sequence
from typing import NamedTuple

import construct as cs

from ..format.codec import FixedCodec
from .errors import StoreError
from .files import write_durably

CACHE_MAGIC = b"EROFSGFC"
CACHE_VERSION = 1
RACY_NS = 2 * 10**9
MAX_ENTRIES = 500_000
_DIGEST = 32
_HOLE = bytes(_DIGEST)  # how a hole chunk is written (no SHA-256 is all zeros in practice)


def _sha256(data: bytes) -> bytes:
    return hashlib.sha256(data).digest()


CacheHeader = cs.Struct(
    "magic" / cs.Const(CACHE_MAGIC),
    "version" / cs.Int32ul,
    "reserved" / cs.Int32ul,
    "entry_count" / cs.Int64ul,
)

CacheEntryHead = cs.Struct(
    "path_length" / cs.Int32ul,
    "digest_count" / cs.Int32ul,
    "chunk_size" / cs.Int64ul,
    "dev" / cs.Int64ul,
    "ino" / cs.Int64ul,
    "size" / cs.Int64ul,
    "mtime_ns" / cs.Int64sl,
    "ctime_ns" / cs.Int64sl,
)

CacheFile = cs.Struct(
    "body"
    / cs.RawCopy(
        cs.Struct(
            *CacheHeader.subcons,
            "entries"
            / cs.Array(
                cs.this.entry_count,
                cs.Struct(
                    *CacheEntryHead.subcons,
                    "path" / cs.Bytes(cs.this.path_length),
                    "digests" / cs.Array(cs.this.digest_count, cs.Bytes(_DIGEST)),
                ),
            ),
        )
    ),
    "checksum" / cs.Checksum(cs.Bytes(_DIGEST), _sha256, cs.this.body.data),
    cs.Terminated,
)


class CacheHeaderRec(NamedTuple):
    magic: bytes
    version: int
    reserved: int
    entry_count: int


class CacheEntryHeadRec(NamedTuple):
    path_length: int
    digest_count: int
    chunk_size: int
    dev: int
    ino: int
    size: int
    mtime_ns: int
    ctime_ns: int


CACHE_HEADER = FixedCodec(CacheHeader, CacheHeaderRec)
CACHE_ENTRY_HEAD = FixedCodec(CacheEntryHead, CacheEntryHeadRec)

# (dev, ino, size, mtime_ns, ctime_ns, chunk_size): what must match for an entry to be used.
Key = tuple[int, int, int, int, int, int]
Entry = tuple[Key, tuple[bytes, ...]]


def _key(st: os.stat_result, chunk_size: int) -> Key:
    return (st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns, chunk_size)


def encode_cache(entries: Sequence[tuple[bytes, Entry]]) -> bytes:
    """The cache file holding `entries` (path, (key, digests)), in order."""
    parts = [CACHE_HEADER.pack(CacheHeaderRec(CACHE_MAGIC, CACHE_VERSION, 0, len(entries)))]
    for path, ((dev, ino, size, mtime_ns, ctime_ns, chunk_size), digests) in entries:
        head = CacheEntryHeadRec(len(path), len(digests), chunk_size, dev, ino, size, mtime_ns, ctime_ns)
        parts.append(CACHE_ENTRY_HEAD.pack(head))
        parts.append(path)
        parts.extend(digest or _HOLE for digest in digests)
    body = b"".join(parts)
    return body + hashlib.sha256(body).digest()


def decode_cache(data: bytes) -> dict[bytes, Entry] | None:
    """The entries of a cache file by path, or None if it is damaged in any way."""
    if len(data) < CACHE_HEADER.size + _DIGEST:
        return None
    body = memoryview(data)[:-_DIGEST]
    if hashlib.sha256(body).digest() != data[-_DIGEST:]:
        return None
    header = CACHE_HEADER.unpack(data)
    if header.magic != CACHE_MAGIC or header.version != CACHE_VERSION:
        return None
    entries: dict[bytes, Entry] = {}
    pos = CACHE_HEADER.size
    head_size = CACHE_ENTRY_HEAD.size
    unpack = CACHE_ENTRY_HEAD.struct.unpack_from
    try:
        for _ in range(header.entry_count):
            length, count, chunk_size, dev, ino, size, mtime_ns, ctime_ns = unpack(body, pos)
            pos += head_size
            path = bytes(body[pos : pos + length])
            pos += length
            end = pos + count * _DIGEST
            if len(path) != length or end > len(body):
                return None
            raw = bytes(body[pos:end])
            pos = end
            digests = tuple(
                b"" if d == _HOLE else d for d in (raw[i : i + _DIGEST] for i in range(0, len(raw), _DIGEST))
            )
            entries[path] = ((dev, ino, size, mtime_ns, ctime_ns, chunk_size), digests)
    except struct.error:
        return None
    return entries if pos == len(body) else None


class FileCache:
    """The stat cache of one store for one pack. Thread-safe."""

    def __init__(self, path: str, start_ns: int, *, tmp_dir: str | None) -> None:
        """`tmp_dir`: where `save` writes its temp file; None for a read-only store (no saving)."""
        self.path = path
        self.start_ns = start_ns
        self._tmp_dir = tmp_dir
        self._lock = threading.Lock()
        self._old: dict[bytes, Entry] | None = None
        self._new: dict[bytes, Entry] = {}  # put or matched in this run

    def _previous(self) -> dict[bytes, Entry]:
        if self._old is None:
            try:
                with open(self.path, "rb") as file:
                    data = file.read()
            except OSError:
                data = b""  # missing or unreadable: start empty
            self._old = decode_cache(data) or {}
        return self._old

    def get(self, path: bytes, st: os.stat_result, chunk_size: int) -> list[bytes] | None:
        """The chunk digests recorded for `path` in exactly this state (b"" for a hole), or None."""
        key = _key(st, chunk_size)
        with self._lock:
            entry = self._new.get(path) or self._previous().get(path)
            if entry is None or entry[0] != key:
                return None
            self._new[path] = entry
            return list(entry[1])

    def put(self, path: bytes, st: os.stat_result, chunk_size: int, digests: Sequence[bytes]) -> None:
        """Record `path`'s chunk digests (b"" for a hole), unless it changed too recently."""
        for digest in digests:
            if len(digest) not in (0, _DIGEST):
                raise ValueError(f"chunk digest of {len(digest)} bytes")
        if len(path) >= 1 << 32 or len(digests) >= 1 << 32:
            return
        racy = self.start_ns - RACY_NS
        with self._lock:
            if st.st_mtime_ns >= racy or st.st_ctime_ns >= racy:
                self._new.pop(path, None)
                self._previous().pop(path, None)
                return
            self._new[path] = (_key(st, chunk_size), tuple(digests))

    def save(self) -> None:
        """Replace the cache file atomically (a read-only store: nothing); StoreError if it
        cannot be written (the pack may go on: the cache is only an optimisation)."""
        if self._tmp_dir is None:
            return
        with self._lock:
            entries = list(self._new.items())
            for path, entry in self._previous().items():
                if len(entries) >= MAX_ENTRIES:
                    break
                if path not in self._new:
                    entries.append((path, entry))
            del entries[MAX_ENTRIES:]
            data = encode_cache(entries)
        try:
            # Not synced: a cache lost or damaged in a crash is ignored and rebuilt (checksummed).
            write_durably(data, self._tmp_dir, self.path, "cache", sync=False)
        except OSError as exc:
            raise StoreError(f"cannot write the stat cache: {exc.strerror or exc}", self.path) from exc


__all__ = ["CacheFile", "FileCache", "decode_cache", "encode_cache"]
