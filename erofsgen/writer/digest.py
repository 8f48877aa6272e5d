"""The image's content digest, from which its UUID is derived, hashed on a second core.

The data area is written in increasing address order in two parts: the early files by the
copier (while the tree is planned), then the rest by the emitter. A worker thread hashes it
behind two watermarks, the copier's and the emitter's; the emitter's counts only once the
copier has finished its part, so the hash covers the bytes in address order whatever the
timing. The metadata (block 0 before the data, and the area after it) is hashed last, once it
is final (with the UUID and checksum fields still zero). hashlib and preadv release the GIL,
so the threads really run side by side.
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
    """Hashes the data area from `data_start` as the copier and then the emitter report progress.

    `early_end` is where the copier's part ends and the emitter's begins; None while the front
    part still grows (streamed files), until `end_early` says where it ends.
    """

    def __init__(self, fd: int, data_start: int, early_end: int | None) -> None:
        self.fd = fd
        self.data = hashlib.sha256()
        self.start = data_start
        self.pos = data_start
        self.limit = data_start
        self.early_limit = data_start
        self.early_end = early_end
        self.late_limit = data_start if early_end is None else early_end
        self.closed = False
        self.aborted = threading.Event()
        self.error: BaseException | None = None
        self.cond = threading.Condition()
        self.thread = threading.Thread(target=self._work, name="erofsgen-digest", daemon=True)
        self.thread.start()

    def advance_early(self, upto: int) -> None:
        """The copier's part is final below `upto`."""
        with self.cond:
            self.early_limit = max(self.early_limit, upto)
            self._update()

    def advance(self, upto: int) -> None:
        """The emitter's part (from `early_end`) is final below `upto`."""
        with self.cond:
            self.late_limit = max(self.late_limit, upto)
            self._update()

    def end_early(self, early_end: int) -> None:
        """The front part (advance_early's) ends at `early_end`."""
        with self.cond:
            self.early_end = early_end
            self.late_limit = max(self.late_limit, early_end)
            self._update()

    def _update(self) -> None:
        limit = self.early_limit
        if self.early_end is not None and limit >= self.early_end:
            limit = max(limit, self.late_limit)
        if limit > self.limit:
            self.limit = limit
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

    def finish(self, data_end: int, image_end: int) -> uuid.UUID:
        """A version-8 UUID from SHA-256 over the metadata digest and the data digest.

        The data area is [data_start, data_end); the metadata is what lies around it.
        """
        assert self.early_end is not None
        self.advance_early(self.early_end)
        self.advance(data_end)
        self.close()
        if self.error is not None:
            raise self.error
        if self.pos != data_end:
            raise AssertionError(f"the data area was hashed up to {self.pos:#x}, not {data_end:#x}")
        meta = hashlib.sha256()
        buf = memoryview(bytearray(CHUNK))
        _hash_range(self.fd, meta, 0, self.start, buf)
        _hash_range(self.fd, meta, data_end, image_end, buf)
        raw = bytearray(hashlib.sha256(meta.digest() + self.data.digest()).digest()[:16])
        raw[6] = (raw[6] & 0x0F) | 0x80
        raw[8] = (raw[8] & 0x3F) | 0x80
        return uuid.UUID(bytes=bytes(raw))
