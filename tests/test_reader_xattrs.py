"""Xattr decoding on hand-built images: long prefixes, shared entries, hidden and unknown
prefixes, and the body checks (mkfs.erofs 1.5 cannot write long prefixes)."""

from __future__ import annotations

import io

import pytest

import erofsgen
from erofsgen.errors import CorruptImageError, UnsupportedFeatureError
from erofsgen.format.constants import DataLayout, FeatureIncompat, XattrIndex
from erofsgen.format.inode import xattr_icount
from erofsgen.format.superblock import SUPERBLOCK
from erofsgen.format.xattr import (
    XATTR_IBODY_HEADER,
    XattrIbodyHeaderRec,
    pack_long_prefix,
    pack_xattr_entry,
)
from tests.test_reader_zmap import BS, NID, inode_bytes, superblock_rec

PREFIX_TABLE = 1152
SHARED_BLOCK = 2
LONG = 0x80


def build(inline: list[bytes], shared: list[bytes], *, shared_count: int | None = None) -> bytes:
    """nid 48: an empty file whose xattr body holds `inline` entries and ids of `shared` ones."""
    img = bytearray(4 * BS)
    sb = superblock_rec(4, FeatureIncompat.XATTR_PREFIXES, 0)._replace(
        xattr_prefix_count=2, xattr_prefix_start=PREFIX_TABLE // 4, xattr_blkaddr=SHARED_BLOCK
    )
    img[1024:1152] = SUPERBLOCK.pack(sb)
    table = pack_long_prefix(XattrIndex.TRUSTED, b"overlay.") + pack_long_prefix(XattrIndex.USER, b"x.")
    img[PREFIX_TABLE : PREFIX_TABLE + len(table)] = table
    ids, pos = [], SHARED_BLOCK * BS
    for entry in shared:
        ids.append((pos - SHARED_BLOCK * BS) // 4)
        img[pos : pos + len(entry)] = entry
        pos += len(entry)
    count = len(ids) if shared_count is None else shared_count
    header = XATTR_IBODY_HEADER.pack(XattrIbodyHeaderRec(0, count, bytes(7)))
    body = header + b"".join(i.to_bytes(4, "little") for i in ids) + b"".join(inline)
    inode = bytearray(inode_bytes(DataLayout.FLAT_PLAIN, 0))
    inode[2:4] = xattr_icount(len(body)).to_bytes(2, "little")
    at = NID * 32
    img[at : at + 32] = inode
    img[at + 32 : at + 32 + len(body)] = body
    return bytes(img)


ENTRIES = [
    pack_xattr_entry(LONG | 0, b"opaque", b"y"),
    pack_xattr_entry(LONG | 1, b"", b"bare long prefix"),
    pack_xattr_entry(XattrIndex.USER, b"plain", b"value"),
    pack_xattr_entry(XattrIndex.POSIX_ACL_ACCESS, b"", b"\x02\x00\x00\x00"),
    pack_xattr_entry(XattrIndex.LUSTRE, b"hidden", b"l"),
    pack_xattr_entry(LONG | 5, b"no such prefix", b"?"),
    pack_xattr_entry(9, b"unknown index", b"?"),
]
SHARED = [pack_xattr_entry(XattrIndex.SECURITY, b"selinux", b"system_u:object_r:x:s0\0")]


def read(image: bytes) -> tuple[dict[bytes, bytes], int]:
    with erofsgen.open_image(io.BytesIO(image)) as img:
        return img.xattrs_nid(NID), img.stat_nid(NID).xattr_count


def test_names_resolve_like_listxattr() -> None:
    names, count = read(build(ENTRIES, SHARED))
    assert names == {
        b"security.selinux": b"system_u:object_r:x:s0\0",
        b"trusted.overlay.opaque": b"y",
        b"user.x.": b"bare long prefix",
        b"user.plain": b"value",
        b"system.posix_acl_access": b"\x02\x00\x00\x00",
    }
    assert count == 1 + 5  # the shared id, and inline entries with a prefix Linux knows


def test_records_keep_offsets_and_hidden_entries() -> None:
    with erofsgen.open_image(io.BytesIO(build(ENTRIES, SHARED))) as img:
        recs = img.xattr_records_nid(NID)
        assert img.superblock.long_prefixes[0].prefix == b"trusted.overlay."
    assert recs[0].shared and recs[0].offset == SHARED_BLOCK * BS
    assert [r.name for r in recs if r.name_index == XattrIndex.LUSTRE] == [b"lustre.hidden"]
    assert sum(1 for r in recs if r.name is None) == 2


def test_body_problems() -> None:
    with pytest.raises(CorruptImageError, match="overrun"):
        read(build(ENTRIES, SHARED, shared_count=200))
    truncated = [*ENTRIES[:2], pack_xattr_entry(XattrIndex.USER, b"v", b"x" * 40)[:12]]
    with pytest.raises(CorruptImageError):
        read(build(truncated, []))
    with pytest.raises(CorruptImageError, match="NUL"):
        read(build([pack_xattr_entry(XattrIndex.USER, b"a\0b", b"")], []))
    header_only = bytearray(build([], []))
    header_only[NID * 32 + 2 : NID * 32 + 4] = (1).to_bytes(2, "little")
    with pytest.raises(UnsupportedFeatureError):
        read(bytes(header_only))
