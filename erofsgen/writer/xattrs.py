"""Xattr placement: which (name, value) pairs go to the shared area, inline bodies, long prefixes."""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from ..errors import InvalidInputError
from ..format.constants import EROFS_XATTR_LONG_PREFIX, XATTR_NAME_MAX, XATTR_PREFIXES, XattrIndex
from ..format.xattr import (
    XATTR_IBODY_HEADER,
    XattrIbodyHeaderRec,
    pack_long_prefix,
    pack_xattr_entry,
    split_xattr_name,
    xattr_name_filter,
)

MAX_SHARED_PER_INODE = 255  # h_shared_count is one byte
MAX_XATTR_BODY = 12 + 4 * (0xFFFF - 1)  # i_xattr_icount is 16 bits

XattrPair = tuple[bytes, bytes]  # (full name, value)


@dataclass(frozen=True, slots=True)
class EncodedName:
    """A name as stored: e_name_index, suffix, and the (short index, suffix) the filter hashes."""

    name_index: int
    suffix: bytes
    filter_index: int
    filter_suffix: bytes


@dataclass(frozen=True, slots=True)
class LongPrefix:
    base_index: XattrIndex
    infix: bytes

    @property
    def full(self) -> bytes:
        return XATTR_PREFIXES[self.base_index] + self.infix


class NameEncoder:
    """Splits full xattr names into prefix ids and suffixes, preferring the longest long prefix."""

    def __init__(self, prefixes: Sequence[bytes]) -> None:
        self.long_prefixes: list[LongPrefix] = []
        for prefix in prefixes:
            split = split_xattr_name(prefix)
            if split is None or split[0] in (XattrIndex.POSIX_ACL_ACCESS, XattrIndex.POSIX_ACL_DEFAULT):
                raise InvalidInputError(
                    f"long xattr prefix {prefix!r} must start with user., trusted. or security."
                )
            if not split[1]:
                raise InvalidInputError(f"long xattr prefix {prefix!r} adds nothing to its short prefix")
            if len(prefix) > XATTR_NAME_MAX:
                raise InvalidInputError(f"long xattr prefix {prefix!r} is longer than any xattr name")
            self.long_prefixes.append(LongPrefix(split[0], split[1]))
        # Longest first, so the most specific prefix wins.
        self._order = sorted(range(len(self.long_prefixes)), key=lambda k: -len(self.long_prefixes[k].full))
        self.used: set[int] = set()

    def encode(self, name: bytes) -> EncodedName:
        """The stored form of a name that validation accepted."""
        for k in self._order:
            prefix = self.long_prefixes[k]
            if name.startswith(prefix.full):
                self.used.add(k)
                return EncodedName(
                    EROFS_XATTR_LONG_PREFIX | k,
                    name[len(prefix.full) :],
                    prefix.base_index,
                    name[len(XATTR_PREFIXES[prefix.base_index]) :],
                )
        split = split_xattr_name(name)
        if split is None:
            raise AssertionError(f"unvalidated xattr name {name!r}")
        index, suffix = split
        return EncodedName(index, suffix, index, suffix)

    def prefix_table(self) -> bytes:
        """The long-prefix records, in id order (ids are positions in the option list)."""
        if not self.used:
            return b""
        return b"".join(pack_long_prefix(p.base_index, p.infix) for p in self.long_prefixes)


def entry_bytes(encoded: EncodedName, value: bytes) -> bytes:
    return pack_xattr_entry(encoded.name_index, encoded.suffix, value)


def choose_shared(per_inode: Iterable[dict[bytes, bytes]], threshold: int) -> list[XattrPair]:
    """Pairs found on more than `threshold` inodes, in a stable (sorted) order."""
    counts: Counter[XattrPair] = Counter()
    for xattrs in per_inode:
        if xattrs:
            counts.update(xattrs.items())
    return sorted(pair for pair, n in counts.items() if n > threshold)


def choose_long_prefixes(
    per_inode: Iterable[dict[bytes, bytes]], shared: Sequence[XattrPair], taken: Sequence[bytes], limit: int
) -> list[bytes]:
    """Long prefixes that make the image smaller, best first, at most `limit`.

    Candidates are the stems of names past their short prefix that end in a dot and leave
    something after them ("trusted.overlay." of "trusted.overlay.opaque"). A candidate of
    infix length L takes at least 4 * (L // 4) bytes off every stored entry it covers (entries
    are padded to 4) and costs one table record; it is chosen when the first beats the second.
    Candidates nested in one already chosen (or given) are skipped, so every one is used.
    """
    shared_set = set(shared)
    stored: Counter[bytes] = Counter(name for name, _ in shared)  # shared entries: stored once
    for xattrs in per_inode:
        stored.update(name for name, value in xattrs.items() if (name, value) not in shared_set)
    savings: Counter[tuple[XattrIndex, bytes]] = Counter()  # (short prefix, infix) -> bytes saved
    for name, count in stored.items():
        split = split_xattr_name(name)
        if split is None or split[0] not in (XattrIndex.USER, XattrIndex.TRUSTED, XattrIndex.SECURITY):
            continue
        index, suffix = split
        for end in range(1, len(suffix)):
            if suffix[end - 1] == ord("."):
                savings[index, suffix[:end]] += count * (end // 4 * 4)
    chosen: list[bytes] = []
    for (index, infix), saved in sorted(savings.items(), key=lambda item: (-item[1], item[0])):
        if len(chosen) >= limit:
            break
        if saved <= len(pack_long_prefix(index, infix)):
            continue
        prefix = XATTR_PREFIXES[index] + infix
        if any(prefix.startswith(p) or p.startswith(prefix) for p in (*taken, *chosen)):
            continue
        chosen.append(prefix)
    return chosen


@dataclass(slots=True)
class SharedArea:
    """The shared xattr entries, laid out back to back; ids are offsets / 4 from xattr_blkaddr."""

    data: bytes
    offsets: dict[XattrPair, int]  # pair -> byte offset inside `data`


def build_shared_area(pairs: Sequence[XattrPair], encoder: NameEncoder) -> SharedArea:
    chunks = []
    offsets: dict[XattrPair, int] = {}
    pos = 0
    for name, value in pairs:
        raw = entry_bytes(encoder.encode(name), value)
        offsets[(name, value)] = pos
        chunks.append(raw)
        pos += len(raw)
    return SharedArea(b"".join(chunks), offsets)


def inode_xattr_body(
    xattrs: dict[bytes, bytes],
    shared_ids: dict[XattrPair, int],
    encoder: NameEncoder,
    where: str,
) -> bytes:
    """The inline xattr body (header, shared ids, inline entries) of one inode, or b"" for none."""
    if not xattrs:
        return b""
    ids: list[int] = []
    inline: list[tuple[EncodedName, bytes]] = []
    hashed: list[tuple[int, bytes]] = []  # what the bloom filter sees of each name
    for name in sorted(xattrs):
        value = xattrs[name]
        encoded = encoder.encode(name)
        hashed.append((encoded.filter_index, encoded.filter_suffix))
        shared = shared_ids.get((name, value))
        if shared is not None and len(ids) < MAX_SHARED_PER_INODE:
            ids.append(shared)
        else:
            inline.append((encoded, value))
    header = XATTR_IBODY_HEADER.pack(XattrIbodyHeaderRec(xattr_name_filter(hashed), len(ids), bytes(7)))
    body = header + b"".join(i.to_bytes(4, "little") for i in sorted(ids))
    body += b"".join(entry_bytes(e, v) for e, v in inline)
    if len(body) > MAX_XATTR_BODY:
        raise InvalidInputError(f"xattrs take {len(body)} bytes inline, over {MAX_XATTR_BODY}", where)
    return body
