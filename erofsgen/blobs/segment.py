"""The index segment file format (`index/<hex>`, specs/blob-store.md "Index segment").

`SegmentFile` (construct) is the one declaration of the layout; `encode_segment` and
`decode_segment` are the fast paths, derived from its header and record schemas (codec.py), and
tested byte-identical to it. Decoding validates everything a reader relies on: magic, version,
size, trailing SHA-256, the digest field against the file name, and every record's range.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Sequence
from typing import NamedTuple

import construct as cs

from ..format.codec import FixedCodec
from .errors import StoreError

SEGMENT_MAGIC = b"EROFSGIX"
SEGMENT_VERSION = 1
DIGEST_SIZE = 32
_HEX = frozenset("0123456789abcdef")

SegmentHeader = cs.Struct(
    "magic" / cs.Const(SEGMENT_MAGIC),
    "version" / cs.Int32ul,
    "block_size" / cs.Int32ul,  # the block size the blob was written with
    "blob" / cs.Bytes(DIGEST_SIZE),  # SHA-256 of the whole blob: must equal the file name
    "blob_size" / cs.Int64ul,
    "record_count" / cs.Int64ul,
)

SegmentRecord = cs.Struct(
    "chunk" / cs.Bytes(DIGEST_SIZE),  # SHA-256 of the chunk's bytes
    "offset" / cs.Int64ul,  # byte offset in the blob, a multiple of block_size
    "length" / cs.Int64ul,  # chunk length in bytes (the padding to the block end excluded)
)


def _sha256(data: bytes) -> bytes:
    return hashlib.sha256(data).digest()


# The whole file: header and records, then the SHA-256 of every byte before it.
SegmentFile = cs.Struct(
    "body"
    / cs.RawCopy(
        cs.Struct(
            *SegmentHeader.subcons,
            "records" / cs.Array(cs.this.record_count, SegmentRecord),
        )
    ),
    "checksum" / cs.Checksum(cs.Bytes(DIGEST_SIZE), _sha256, cs.this.body.data),
    cs.Terminated,
)


class SegmentHeaderRec(NamedTuple):
    magic: bytes
    version: int
    block_size: int
    blob: bytes
    blob_size: int
    record_count: int


class SegmentRecordRec(NamedTuple):
    chunk: bytes
    offset: int
    length: int


SEGMENT_HEADER = FixedCodec(SegmentHeader, SegmentHeaderRec)
SEGMENT_RECORD = FixedCodec(SegmentRecord, SegmentRecordRec)
_RECORD = SEGMENT_RECORD.struct  # records are decoded in bulk with iter_unpack


class SegmentData(NamedTuple):
    """A decoded segment: the blob it describes and its chunk records."""

    block_size: int
    blob: str  # 64 lowercase hex
    blob_size: int
    records: list[tuple[bytes, int, int]]  # (chunk digest, offset, length)


def is_digest_name(name: str) -> bool:
    """Whether `name` is a SHA-256 digest in 64 lowercase hex characters."""
    return len(name) == 64 and _HEX.issuperset(name)


def is_block_size(value: int) -> bool:
    """Block sizes a blob may be written with: a power of two from 512 bytes to 64 KiB."""
    return 512 <= value <= 65536 and value & (value - 1) == 0


def check_records(
    records: Sequence[tuple[bytes, int, int]], block_size: int, blob_size: int, where: str
) -> None:
    """Every record's digest size, alignment and range inside the blob, or StoreError naming `where`."""
    for index, (chunk, offset, length) in enumerate(records):
        if len(chunk) != DIGEST_SIZE:
            raise StoreError(f"record {index}: chunk digest of {len(chunk)} bytes, not 32", where)
        if offset % block_size or length <= 0 or offset + length > blob_size:
            raise StoreError(
                f"record {index}: chunk of {length} bytes at offset {offset} is not a block-aligned "
                f"range of the {blob_size}-byte blob (block size {block_size})",
                where,
            )


def encode_segment(
    blob: str, block_size: int, blob_size: int, records: Sequence[tuple[bytes, int, int]]
) -> bytes:
    """The segment file of blob `blob` (hex), after checking what decoding would check."""
    where = f"segment of blob {blob}"
    if not is_digest_name(blob):
        raise StoreError("blob digest is not 64 lowercase hex characters", where)
    if not is_block_size(block_size):
        raise StoreError(f"block size {block_size} is not a power of two from 512 to 65536", where)
    if blob_size % block_size:
        raise StoreError(f"blob size {blob_size} is not a multiple of the block size {block_size}", where)
    check_records(records, block_size, blob_size, where)
    digest = bytes.fromhex(blob)
    header = SEGMENT_HEADER.pack(
        SegmentHeaderRec(SEGMENT_MAGIC, SEGMENT_VERSION, block_size, digest, blob_size, len(records))
    )
    body = b"".join([header, *(_RECORD.pack(*record) for record in records)])
    return body + _sha256(body)


def decode_segment(data: bytes, path: str | os.PathLike[str]) -> SegmentData:
    """Decode and validate the segment read from `path` (its name must be the blob digest)."""
    where = os.fspath(path)
    name = os.path.basename(where)
    head = SEGMENT_HEADER.size
    if len(data) < head + DIGEST_SIZE:
        raise StoreError(f"damaged index segment: {len(data)} bytes is too short", where)
    header = SEGMENT_HEADER.unpack(data)
    if header.magic != SEGMENT_MAGIC:
        raise StoreError(f"damaged index segment: bad magic {header.magic!r}", where)
    if header.version != SEGMENT_VERSION:
        raise StoreError(f"index segment version {header.version} is not {SEGMENT_VERSION}", where)
    expected = head + header.record_count * _RECORD.size + DIGEST_SIZE
    if len(data) != expected:
        raise StoreError(
            f"damaged index segment: {len(data)} bytes, {header.record_count} records need {expected}",
            where,
        )
    body = memoryview(data)[: expected - DIGEST_SIZE]
    if hashlib.sha256(body).digest() != data[-DIGEST_SIZE:]:
        raise StoreError("damaged index segment: checksum mismatch", where)
    blob = header.blob.hex()
    if blob != name:
        raise StoreError(f"index segment describes blob {blob}, not its name", where)
    if not is_block_size(header.block_size) or header.blob_size % header.block_size:
        raise StoreError(
            f"damaged index segment: block size {header.block_size}, blob size {header.blob_size}", where
        )
    records = list(_RECORD.iter_unpack(body[head:]))
    check_records(records, header.block_size, header.blob_size, where)
    return SegmentData(header.block_size, blob, header.blob_size, records)


__all__ = [
    "SEGMENT_HEADER",
    "SEGMENT_MAGIC",
    "SEGMENT_RECORD",
    "SEGMENT_VERSION",
    "SegmentData",
    "SegmentFile",
    "SegmentHeader",
    "SegmentRecord",
    "decode_segment",
    "encode_segment",
    "is_block_size",
    "is_digest_name",
]
