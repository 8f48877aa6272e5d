"""Extended attributes: the inline body header, entries, shared ids, long prefixes, bloom filter."""

from __future__ import annotations

from typing import NamedTuple

import construct as cs

from .codec import FixedCodec
from .constants import (
    EROFS_XATTR_FILTER_SEED,
    EROFS_XATTR_LONG_PREFIX,
    XATTR_PREFIXES,
    XattrIndex,
)

# struct erofs_xattr_ibody_header; h_shared_count u32 shared ids follow it.
XattrIbodyHeader = cs.Struct(
    "h_name_filter" / cs.Int32ul,  # bloom filter: bit set = name definitely absent
    "h_shared_count" / cs.Int8ul,
    "h_reserved2" / cs.Bytes(7),
)

# struct erofs_xattr_entry without its variable tail.
XattrEntryHeader = cs.Struct(
    "e_name_len" / cs.Int8ul,  # length of the name after its prefix
    "e_name_index" / cs.Int8ul,  # short prefix id, or 0x80 | long prefix id
    "e_value_size" / cs.Int16ul,
)

# The whole entry as stored, padded to 4 bytes.
XattrEntry = cs.Struct(
    "e_name_len" / cs.Int8ul,
    "e_name_index" / cs.Int8ul,
    "e_value_size" / cs.Int16ul,
    "e_name" / cs.Bytes(cs.this.e_name_len),
    "e_value" / cs.Bytes(cs.this.e_value_size),
    cs.Padding(lambda c: -(4 + c.e_name_len + c.e_value_size) % 4),
)

SharedXattrId = cs.Int32ul  # id = (offset of the entry from xattr_blkaddr) / 4

# A long-prefix record: u16 length of what follows, then erofs_xattr_long_prefix, padded to 4.
XattrLongPrefix = cs.Struct(
    "size" / cs.Int16ul,  # 1 + len(infix)
    "base_index" / cs.Int8ul,
    "infix" / cs.Bytes(cs.this.size - 1),
    cs.Padding(lambda c: -(2 + c.size) % 4),
)


class XattrIbodyHeaderRec(NamedTuple):
    h_name_filter: int
    h_shared_count: int
    h_reserved2: bytes


class XattrEntryHeaderRec(NamedTuple):
    e_name_len: int
    e_name_index: int
    e_value_size: int


XATTR_IBODY_HEADER = FixedCodec(XattrIbodyHeader, XattrIbodyHeaderRec)
XATTR_ENTRY_HEADER = FixedCodec(XattrEntryHeader, XattrEntryHeaderRec)


def xattr_entry_size(name_len: int, value_len: int) -> int:
    """Stored size of an entry: 4-byte header, name suffix, value, padding to 4."""
    return (4 + name_len + value_len + 3) & ~3


def pack_xattr_entry(name_index: int, suffix: bytes, value: bytes) -> bytes:
    head = XATTR_ENTRY_HEADER.pack(XattrEntryHeaderRec(len(suffix), name_index, len(value)))
    raw = head + suffix + value
    return raw + bytes(-len(raw) % 4)


def pack_long_prefix(base_index: int, infix: bytes) -> bytes:
    body = bytes((base_index,)) + infix
    raw = len(body).to_bytes(2, "little") + body
    return raw + bytes(-len(raw) % 4)


def split_xattr_name(name: bytes) -> tuple[XattrIndex, bytes] | None:
    """The short prefix index and suffix of a full name, or None if no prefix fits.

    ACL names must match exactly (their suffix is empty); other prefixes take the longest match.
    """
    for index in (XattrIndex.POSIX_ACL_ACCESS, XattrIndex.POSIX_ACL_DEFAULT):
        if name == XATTR_PREFIXES[index]:
            return index, b""
    for index in (XattrIndex.USER, XattrIndex.TRUSTED, XattrIndex.SECURITY):
        prefix = XATTR_PREFIXES[index]
        if name.startswith(prefix):
            return index, name[len(prefix) :]
    return None


def is_long_prefix_index(name_index: int) -> bool:
    return bool(name_index & EROFS_XATTR_LONG_PREFIX)


# xxHash32, enough of it for the bloom filter (names are short; speed is not a concern).
_P1, _P2, _P3, _P4, _P5 = 2654435761, 2246822519, 3266489917, 668265263, 374761393
_M32 = 0xFFFFFFFF


def _rotl(x: int, r: int) -> int:
    return ((x << r) | (x >> (32 - r))) & _M32


def xxh32(data: bytes, seed: int = 0) -> int:
    n = len(data)
    i = 0
    if n >= 16:
        v = [(seed + _P1 + _P2) & _M32, (seed + _P2) & _M32, seed & _M32, (seed - _P1) & _M32]
        while i + 16 <= n:
            for k in range(4):
                lane = int.from_bytes(data[i : i + 4], "little")
                v[k] = (_rotl((v[k] + lane * _P2) & _M32, 13) * _P1) & _M32
                i += 4
        h = (_rotl(v[0], 1) + _rotl(v[1], 7) + _rotl(v[2], 12) + _rotl(v[3], 18)) & _M32
    else:
        h = (seed + _P5) & _M32
    h = (h + n) & _M32
    while i + 4 <= n:
        h = (_rotl((h + int.from_bytes(data[i : i + 4], "little") * _P3) & _M32, 17) * _P4) & _M32
        i += 4
    while i < n:
        h = (_rotl((h + data[i] * _P5) & _M32, 11) * _P1) & _M32
        i += 1
    h ^= h >> 15
    h = (h * _P2) & _M32
    h ^= h >> 13
    h = (h * _P3) & _M32
    h ^= h >> 16
    return h


def xattr_filter_bit(short_index: int, suffix: bytes) -> int:
    """The bloom-filter bit of a name: `suffix` is the name after its *short* prefix."""
    return xxh32(suffix, EROFS_XATTR_FILTER_SEED + short_index) & 31


def xattr_name_filter(names: list[tuple[int, bytes]]) -> int:
    """h_name_filter for (short index, suffix) pairs: all ones except the bits of present names."""
    present = 0
    for index, suffix in names:
        present |= 1 << xattr_filter_bit(index, suffix)
    return 0xFFFFFFFF & ~present
