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

_MAGICS = (
    (b"\x1f\x8b", "gzip"),
    (b"\x28\xb5\x2f\xfd", "zstd"),
    (b"\xfd7zXZ\x00", "xz"),
    (b"BZh", "bzip2"),
)
_PEEK = max(len(magic) for magic, _ in _MAGICS)


class _Readable(Protocol):
    def readinto(self, buffer: bytearray | memoryview, /) -> int | None: ...


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
        readinto = getattr(self._inner, "readinto", None)
        if readinto is not None:  # straight into the caller's buffer: no copy
            return int(readinto(buffer) or 0)
        data = self._inner.read(len(buffer))
        n = len(data)
        buffer[:n] = data
        return n


_ZSTD_MAGIC = 0xFD2FB528
_SKIPPABLE_MASK, _SKIPPABLE_MAGIC = 0xFFFFFFF0, 0x184D2A50
_DICT_ID_BYTES = (0, 1, 2, 4)
_CONTENT_SIZE_BYTES = (0, 2, 4, 8)


class _ZstdFrames:
    """Follows zstd's frame structure (RFC 8878) through the compressed bytes, decoding nothing.

    `zstandard`'s stream reader bounds its output but reports a stream cut inside a frame as a
    normal end; this tells whether the input stopped exactly between frames. It reads only
    frame and block headers and skips block contents, so it costs next to nothing.
    """

    def __init__(self) -> None:
        self.state = "magic"
        self.header = b""
        self.skip = 0
        self.checksum = False
        self.rest = 0  # header bytes after the descriptor

    def between_frames(self) -> bool:
        return self.state == "magic" and not self.header and not self.skip

    def feed(self, data: bytes) -> None:
        pos = 0
        while pos < len(data) or (not self.skip and self._want() == len(self.header)):
            if self.skip:
                n = min(self.skip, len(data) - pos)
                self.skip -= n
                pos += n
                continue
            want = self._want()
            take = min(want - len(self.header), len(data) - pos)
            self.header += data[pos : pos + take]
            pos += take
            if len(self.header) < want:
                return
            header, self.header = self.header, b""
            self._advance(header)

    def _want(self) -> int:
        return {"magic": 4, "descriptor": 1, "rest": self.rest, "block": 3, "checksum": 4, "size": 4}[
            self.state
        ]

    def _advance(self, header: bytes) -> None:
        state = self.state
        if state == "magic":
            magic = int.from_bytes(header, "little")
            if magic == _ZSTD_MAGIC:
                self.state = "descriptor"
            elif magic & _SKIPPABLE_MASK == _SKIPPABLE_MAGIC:
                self.state = "size"
            else:
                raise EOFError(f"no zstd frame where one should start (magic {magic:#010x})")
        elif state == "size":
            self.skip = int.from_bytes(header, "little")
            self.state = "magic"
        elif state == "descriptor":
            flags = header[0]
            single = bool(flags & 0x20)
            self.checksum = bool(flags & 0x04)
            content_size = _CONTENT_SIZE_BYTES[flags >> 6] or (1 if single else 0)
            self.rest = (0 if single else 1) + _DICT_ID_BYTES[flags & 3] + content_size
            self.state = "rest"
        elif state == "rest":
            self.state = "block"
        elif state == "block":
            value = int.from_bytes(header, "little")
            kind, size = value >> 1 & 3, value >> 3
            if kind == 3:
                raise EOFError("a zstd block of the reserved type")
            self.skip = 1 if kind == 1 else size
            if value & 1:  # the frame's last block
                self.state = "checksum" if self.checksum else "magic"
        else:  # checksum
            self.state = "magic"


class _ZstdInput(io.RawIOBase):
    """The compressed input, watched by `_ZstdFrames` on its way to the decompressor."""

    def __init__(self, inner: io.RawIOBase) -> None:
        super().__init__()
        self.inner = inner
        self.frames = _ZstdFrames()

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: bytearray | memoryview) -> int:  # type: ignore[override]
        data = self.inner.read(len(buffer)) or b""
        self.frames.feed(data)
        buffer[: len(data)] = data
        return len(data)


class _ZstdReader(io.RawIOBase):
    """Streaming zstd decompression (several frames allowed) that notices a truncated frame."""

    def __init__(self, inner: io.RawIOBase) -> None:
        super().__init__()
        self._input = _ZstdInput(inner)
        self._reader = zstandard.ZstdDecompressor().stream_reader(
            cast(BinaryIO, self._input), read_size=READ_SIZE, read_across_frames=True
        )

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: bytearray | memoryview) -> int:  # type: ignore[override]
        data = self._reader.read(len(buffer))
        if not data:
            while self._input.read(READ_SIZE):
                pass  # whatever the decompressor left unread still goes through the check
            if not self._input.frames.between_frames():
                raise EOFError("the zstd stream ends inside a frame")
            return 0
        buffer[: len(data)] = data
        return len(data)


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
            return self._inner.readinto(buffer) or 0
        except (EOFError, zlib.error, lzma.LZMAError, zstandard.ZstdError, gzip.BadGzipFile) as exc:
            raise ArchiveError(f"corrupt or truncated {self.compression} stream: {exc}", self.label) from None
        except OSError as exc:
            if self.compression != "plain" and exc.errno is None:  # bz2 reports corruption so
                raise ArchiveError(f"corrupt {self.compression} stream: {exc}", self.label) from None
            raise ArchiveError(f"cannot read: {exc.strerror or exc}", self.label) from None


def describe_source(source: object) -> str:
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
        self.label = describe_source(source)
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
