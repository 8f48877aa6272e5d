"""Extended attributes: the inline body (header, shared ids, entries) and the shared area.

Names are returned in full (prefix included). Entries whose prefix Linux does not know (index 0
padding, unknown short or long prefix ids) are skipped, as the kernel's listxattr skips them.
"""

from __future__ import annotations

from dataclasses import dataclass

from ..errors import CorruptImageError, UnsupportedFeatureError
from ..format.constants import EROFS_XATTR_LONG_PREFIX_MASK, XATTR_PREFIXES, XattrIndex
from ..format.xattr import (
    XATTR_ENTRY_HEADER,
    XATTR_IBODY_HEADER,
    XattrIbodyHeaderRec,
    is_long_prefix_index,
    xattr_entry_size,
)
from .inode import InodeInfo
from .names import escape_name
from .storage import Storage
from .superblock import SuperblockInfo, short_prefix

_SHARED_ID_SIZE = 4
# Defined by the format, but Linux has no handler for it: listxattr never shows these.
_HIDDEN_PREFIX = XATTR_PREFIXES[XattrIndex.LUSTRE]


@dataclass(frozen=True)
class XattrRecord:
    """One stored xattr entry, decoded."""

    name_index: int  # e_name_index as stored
    suffix: bytes  # e_name: the name after its prefix
    value: bytes
    offset: int  # absolute offset of the entry header
    shared: bool
    name: bytes | None  # full name, None if the prefix is unknown (the kernel hides it)


@dataclass(frozen=True)
class XattrBody:
    """The inline xattr body of an inode: header, shared ids and inline entries."""

    header: XattrIbodyHeaderRec
    shared_ids: tuple[int, ...]
    inline: tuple[XattrRecord, ...]


def full_name(sb: SuperblockInfo, name_index: int, suffix: bytes) -> bytes | None:
    """prefix + suffix for a stored entry, None when the prefix is unknown."""
    if is_long_prefix_index(name_index):
        k = name_index & EROFS_XATTR_LONG_PREFIX_MASK
        if k >= len(sb.long_prefixes):
            return None
        prefix = sb.long_prefixes[k].prefix
    else:
        prefix = short_prefix(name_index)
    return None if prefix is None else prefix + suffix


def _entry_at(
    sb: SuperblockInfo, buf: bytes, pos: int, base: int, nid: int, shared: bool
) -> tuple[XattrRecord, int]:
    """Decode the entry at `pos` of `buf` (buf starts at absolute offset `base`)."""
    head = XATTR_ENTRY_HEADER.unpack(buf, pos, area="xattr entry")
    size = xattr_entry_size(head.e_name_len, head.e_value_size)
    if pos + 4 + head.e_name_len + head.e_value_size > len(buf):
        raise CorruptImageError(
            f"xattr entry of {size} bytes overruns its area", nid=nid, offset=base + pos, area="xattr"
        )
    suffix = buf[pos + 4 : pos + 4 + head.e_name_len]
    if b"\0" in suffix:
        raise CorruptImageError(
            f"xattr name {escape_name(suffix)} contains NUL", nid=nid, offset=base + pos, area="xattr"
        )
    value = buf[pos + 4 + head.e_name_len : pos + 4 + head.e_name_len + head.e_value_size]
    name = full_name(sb, head.e_name_index, suffix)
    return XattrRecord(head.e_name_index, suffix, value, base + pos, shared, name), size


def read_body(storage: Storage, sb: SuperblockInfo, inode: InodeInfo) -> XattrBody | None:
    """The inline xattr body of `inode`, or None if it has none."""
    nid, size = inode.nid, inode.xattr_size
    if size == 0:
        return None
    if size == XATTR_IBODY_HEADER.size:
        raise UnsupportedFeatureError(f"nid {nid}: xattr body of only a header is not supported")
    buf = storage.read(inode.xattr_offset, size, area="xattr body", nid=nid)
    header = XATTR_IBODY_HEADER.unpack(buf, area="xattr body header")
    ids_end = XATTR_IBODY_HEADER.size + header.h_shared_count * _SHARED_ID_SIZE
    if ids_end > size:
        raise CorruptImageError(
            f"{header.h_shared_count} shared xattr ids overrun the {size}-byte body",
            nid=nid,
            offset=inode.xattr_offset,
            area="xattr body",
        )
    ids = tuple(
        int.from_bytes(buf[p : p + _SHARED_ID_SIZE], "little")
        for p in range(XATTR_IBODY_HEADER.size, ids_end, _SHARED_ID_SIZE)
    )
    entries = []
    pos = ids_end
    while pos < size:
        rec, step = _entry_at(sb, buf, pos, inode.xattr_offset, nid, shared=False)
        entries.append(rec)
        pos += step
    return XattrBody(header, ids, tuple(entries))


def read_shared(storage: Storage, sb: SuperblockInfo, xattr_id: int, nid: int) -> XattrRecord:
    """The shared xattr entry with this id (offset id * 4 from xattr_blkaddr)."""
    offset = sb.xattr_blkaddr * sb.block_size + xattr_id * _SHARED_ID_SIZE
    head = storage.read(offset, XATTR_ENTRY_HEADER.size, area="shared xattr", nid=nid)
    rec = XATTR_ENTRY_HEADER.unpack(head, area="shared xattr")
    buf = head + storage.read(
        offset + XATTR_ENTRY_HEADER.size, rec.e_name_len + rec.e_value_size, area="shared xattr", nid=nid
    )
    entry, _ = _entry_at(sb, buf, 0, offset, nid, shared=True)
    return entry


def records(storage: Storage, sb: SuperblockInfo, inode: InodeInfo) -> list[XattrRecord]:
    """Every stored entry of the inode: shared ones first (in id order), then inline ones."""
    body = read_body(storage, sb, inode)
    if body is None:
        return []
    shared = [read_shared(storage, sb, xid, inode.nid) for xid in body.shared_ids]
    return shared + list(body.inline)


def xattr_dict(storage: Storage, sb: SuperblockInfo, inode: InodeInfo) -> dict[bytes, bytes]:
    """Full name -> raw value as listxattr/getxattr on a mount show them (lustre.* is hidden;
    the first entry wins if a name repeats)."""
    result: dict[bytes, bytes] = {}
    for rec in records(storage, sb, inode):
        if rec.name is not None and not rec.name.startswith(_HIDDEN_PREFIX):
            result.setdefault(rec.name, rec.value)
    return result


def count_entries(storage: Storage, sb: SuperblockInfo, inode: InodeInfo) -> int:
    """Number of xattrs the inode references (shared ids plus inline entries with a known prefix)."""
    body = read_body(storage, sb, inode)
    if body is None:
        return 0
    return len(body.shared_ids) + sum(1 for rec in body.inline if rec.name is not None)
