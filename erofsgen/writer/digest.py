"""The image's content digest, from which its UUID is derived, hashed on a second core.

Data blocks are written in increasing address order, so a worker thread can hash the data area
behind a watermark the emitter advances, while the emitter goes on copying. The metadata area
is hashed last, once it is final (with the UUID and checksum fields still zero).
hashlib and preadv release the GIL, so the two threads really run side by side.
"""

from __future__ import annotations

import hashlib
import os
import threading
import uuid

CHUNK = 1 << 20


def _hash_range(
    fd: int,
    digest: hashlib._Hash,
    start: int,
    end: int,
    buf: memoryview,
    abort: threading.Event | None = None,
) -> None:
    pos = start
    while pos < end:
        if abort is not None and abort.is_set():
            return
        n = os.preadv(fd, [buf[: min(len(buf), end - pos)]], pos)
        if n <= 0:
            raise OSError(f"short read while hashing the image at {pos:#x}")
        digest.update(buf[:n])
        pos += n


class ContentDigest:
    """Hashes [data_start, end) of the image as the emitter reports progress."""

    def __init__(self, fd: int, data_start: int) -> None:
        self.fd = fd
        self.data = hashlib.sha256()
        self.pos = data_start
        self.limit = data_start
        self.closed = False
        self.aborted = threading.Event()
        self.error: BaseException | None = None
        self.cond = threading.Condition()
        self.thread = threading.Thread(target=self._work, name="erofsgen-digest", daemon=True)
        self.thread.start()

    def advance(self, upto: int) -> None:
        """Everything below `upto` in the data area is final."""
        with self.cond:
            if upto > self.limit:
                self.limit = upto
                self.cond.notify()

    def _work(self) -> None:
        buf = memoryview(bytearray(CHUNK))
        try:
            while True:
                with self.cond:
                    while self.limit <= self.pos and not self.closed:
                        self.cond.wait()
                    limit, closed = self.limit, self.closed
                if self.aborted.is_set():
                    return
                if limit > self.pos:
                    _hash_range(self.fd, self.data, self.pos, limit, buf, self.aborted)
                    self.pos = limit
                elif closed:
                    return
        except BaseException as exc:  # handed to the emitter in finish()
            self.error = exc

    def __enter__(self) -> ContentDigest:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, *exc: object) -> None:
        if exc_type is not None:
            self.aborted.set()  # the image is being thrown away: stop hashing it
        self.close()

    def close(self) -> None:
        """Stop the worker (after it has hashed up to the last watermark, unless aborted)."""
        with self.cond:
            self.closed = True
            self.cond.notify()
        self.thread.join()

    def finish(self, end: int, metadata_end: int) -> uuid.UUID:
        """A version-8 UUID from SHA-256 over the metadata digest and the data digest."""
        self.advance(end)
        self.close()
        if self.error is not None:
            raise self.error
        meta = hashlib.sha256()
        _hash_range(self.fd, meta, 0, metadata_end, memoryview(bytearray(CHUNK)))
        raw = bytearray(hashlib.sha256(meta.digest() + self.data.digest()).digest()[:16])
        raw[6] = (raw[6] & 0x0F) | 0x80
        raw[8] = (raw[8] & 0x3F) | 0x80
        return uuid.UUID(bytes=bytes(raw))
