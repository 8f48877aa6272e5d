"""Open a tar archive's byte stream: a path, a file object or ``-``, decompressed by content.

The compression is recognised by the first bytes (gzip, zstd, xz, bzip2; anything else is taken
as a plain tar stream) and never by the file name. Nothing here seeks: the first bytes are
peeked and handed back in front of the rest, so standard input and pipes work. Decompression is
streamed with bounded output per read, so memory does not grow with the archive, and a
compressed stream that stops before its end marker is an `ArchiveError`, not a short archive.
"""

from __future__ import annotations

import bz2
import gzip
import io
import lzma
import os
import sys
import zlib
from typing import BinaryIO, Protocol, cast

import zstandard

from ..errors import InvalidInputError

READ_SIZE = 1 << 20
# Output wanted from one zstd call; its input is sized from the last call's ratio, since
# zstd has no output limit and one RLE block of a few bytes expands to 128 KiB.
_ZSTD_OUTPUT = 1 << 20

_MAGICS = (
    (b"\x1f\x8b", "gzip"),
    (b"\x28\xb5\x2f\xfd", "zstd"),
    (b"\xfd7zXZ\x00", "xz"),
    (b"BZh", "bzip2"),
)
_PEEK = max(len(magic) for magic, _ in _MAGICS)


class _Readable(Protocol):
    def read(self, size: int = -1, /) -> bytes | None: ...


class ArchiveError(InvalidInputError):
    """The archive is unreadable, truncated or corrupt; the message names where."""


def compression_of(head: bytes) -> str | None:
    """The compression whose magic bytes start `head`, or None for a plain stream."""
    for magic, name in _MAGICS:
        if head.startswith(magic):
            return name
    return None


class _Prefixed(io.RawIOBase):
    """`head` followed by the rest of `inner`: a peek that needs no seek."""

    def __init__(self, head: bytes, inner: BinaryIO) -> None:
        super().__init__()
        self._head = head
        self._inner = inner

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: bytearray | memoryview) -> int:  # type: ignore[override]
        if self._head:
            n = min(len(buffer), len(self._head))
            buffer[:n] = self._head[:n]
            self._head = self._head[n:]
            return n
        data = self._inner.read(len(buffer))
        n = len(data)
        buffer[:n] = data
        return n


class _ZstdReader(io.RawIOBase):
    """Streaming zstd decompression (several frames allowed) that notices a truncated frame."""

    def __init__(self, inner: io.RawIOBase) -> None:
        super().__init__()
        self._inner = inner
        self._dctx = zstandard.ZstdDecompressor()
        self._obj = self._dctx.decompressobj()
        self._pending = b""  # compressed input not yet fed
        self._out = b""
        self._feed = 1 << 16
        self._ended = False

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: bytearray | memoryview) -> int:  # type: ignore[override]
        while not self._out and not self._ended:
            self._step()
        n = min(len(buffer), len(self._out))
        buffer[:n] = self._out[:n]
        self._out = self._out[n:]
        return n

    def _step(self) -> None:
        if not self._pending:
            self._pending = self._inner.read(READ_SIZE) or b""
            if not self._pending:
                if not self._obj.eof:
                    raise EOFError("the zstd stream ends inside a frame")
                self._ended = True
                return
        if self._obj.eof:  # the next frame
            self._obj = self._dctx.decompressobj()
        piece, self._pending = self._pending[: self._feed], self._pending[self._feed :]
        out = self._obj.decompress(piece)
        if self._obj.eof and self._obj.unused_data:
            self._pending = self._obj.unused_data + self._pending
        ratio = max(1, len(out) // max(1, len(piece)))
        self._feed = max(64, min(READ_SIZE, _ZSTD_OUTPUT // ratio))
        self._out = out


class _Checked(io.RawIOBase):
    """Turns a decompressor's failures into an `ArchiveError` naming the stream."""

    def __init__(self, inner: _Readable, label: str, compression: str) -> None:
        super().__init__()
        self._inner = inner
        self.label = label
        self.compression = compression

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: bytearray | memoryview) -> int:  # type: ignore[override]
        try:
            data = self._inner.read(len(buffer))
        except (EOFError, zlib.error, lzma.LZMAError, zstandard.ZstdError, gzip.BadGzipFile) as exc:
            raise ArchiveError(f"corrupt or truncated {self.compression} stream: {exc}", self.label) from None
        except OSError as exc:
            if self.compression != "plain" and exc.errno is None:  # bz2 reports corruption so
                raise ArchiveError(f"corrupt {self.compression} stream: {exc}", self.label) from None
            raise ArchiveError(f"cannot read: {exc.strerror or exc}", self.label) from None
        n = len(data or b"")
        buffer[:n] = data or b""
        return n


def _describe(source: object) -> str:
    if source == "-":
        return "<stdin>"
    if isinstance(source, str | bytes | os.PathLike):
        return os.fsdecode(os.fspath(source))
    return str(getattr(source, "name", "<file object>"))


class ArchiveStream:
    """The decompressed bytes of one archive, read once, front to back; a context manager.

    `source` is a path, ``-`` (standard input) or a binary file object (which stays open).
    """

    def __init__(self, source: str | bytes | os.PathLike[str] | os.PathLike[bytes] | BinaryIO) -> None:
        self.label = _describe(source)
        self._owned: BinaryIO | None = None
        if source == "-":
            raw: BinaryIO = sys.stdin.buffer
        elif isinstance(source, str | bytes | os.PathLike):
            try:
                raw = self._owned = open(source, "rb")  # noqa: SIM115 (closed by close())
            except OSError as exc:
                raise ArchiveError(f"cannot open: {exc.strerror or exc}", self.label) from None
        elif hasattr(source, "read"):
            raw = source
        else:
            raise InvalidInputError(
                f"a tar source must be a path, '-' or a binary file object, not {type(source).__name__}"
            )
        head = self._peek(raw)
        self.compression = compression_of(head) or "plain"
        prefixed = _Prefixed(head, raw)
        compressed = cast(BinaryIO, prefixed)
        inner: _Readable
        # The decompressing readers are closed with the stream they read (they own nothing).
        if self.compression == "gzip":
            inner = gzip.GzipFile(fileobj=compressed, mode="rb")
        elif self.compression == "xz":
            inner = lzma.LZMAFile(compressed)  # noqa: SIM115
        elif self.compression == "bzip2":
            inner = bz2.BZ2File(compressed)
        elif self.compression == "zstd":
            inner = _ZstdReader(prefixed)
        else:
            inner = prefixed
        self.stream = _Checked(inner, self.label, self.compression)

    def _peek(self, raw: BinaryIO) -> bytes:
        head = b""
        try:
            while len(head) < _PEEK:
                part = raw.read(_PEEK - len(head))
                if not part:
                    break
                head += part
        except OSError as exc:
            raise ArchiveError(f"cannot read: {exc.strerror or exc}", self.label) from None
        except (AttributeError, TypeError, ValueError) as exc:
            raise InvalidInputError(f"cannot read the tar source: {exc}", self.label) from None
        if not isinstance(head, bytes):
            raise InvalidInputError("the tar source must be opened in binary mode", self.label)
        return head

    def read(self, size: int) -> bytes:
        """Up to `size` decompressed bytes; b"" only at the end."""
        return self.stream.read(size) or b""

    def drain(self) -> int:
        """Read to the end (checking the compression's own end marker); the bytes skipped."""
        skipped = 0
        while True:
            part = self.stream.read(READ_SIZE)
            if not part:
                return skipped
            skipped += len(part)

    def close(self) -> None:
        if self._owned is not None:
            self._owned.close()
            self._owned = None

    def __enter__(self) -> ArchiveStream:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
