"""A tar member's metadata beyond what `tarfile` decodes exactly: times, xattrs and ACLs.

`tarfile` keeps every PAX record in `TarInfo.pax_headers` as text (binary values survive as
surrogate escapes of UTF-8, which we undo), but turns `mtime` into a float, which loses
nanoseconds, and knows nothing of extended attributes. Here:

* ``mtime`` is parsed as the exact decimal it is;
* ``SCHILY.xattr.NAME`` holds NAME's raw value (GNU tar, star, Python code);
* ``LIBARCHIVE.xattr.NAME`` holds the base64 of the value, NAME percent-encoded (bsdtar);
* ``SCHILY.acl.access`` / ``SCHILY.acl.default`` hold ACLs as text (``user:alice:rw-:1001``
  entries, comma or newline separated) and become ``system.posix_acl_access`` /
  ``system.posix_acl_default`` in the kernel's binary form, unless the archive also carries
  that xattr (GNU tar writes both; the binary one is exact, so it wins).
"""

from __future__ import annotations

import base64
import binascii
import grp
import pwd
import struct
import tarfile
import urllib.parse
from collections.abc import Mapping
from fractions import Fraction

from ..limits import MAX_TIME_NS, MIN_TIME_NS

ACL_ACCESS = b"system.posix_acl_access"
ACL_DEFAULT = b"system.posix_acl_default"
_ACL_KEYS = {"SCHILY.acl.access": ACL_ACCESS, "SCHILY.acl.default": ACL_DEFAULT}
_SCHILY_XATTR = "SCHILY.xattr."
_LIBARCHIVE_XATTR = "LIBARCHIVE.xattr."

# posix_acl_xattr.h: a version word, then (tag, perm, id) entries ordered by tag, then id.
ACL_XATTR_VERSION = 2
ACL_UNDEFINED_ID = 0xFFFFFFFF
_USER_OBJ, _USER, _GROUP_OBJ, _GROUP, _MASK, _OTHER = 0x01, 0x02, 0x04, 0x08, 0x10, 0x20
_TAGS = {"user": _USER_OBJ, "u": _USER_OBJ, "group": _GROUP_OBJ, "g": _GROUP_OBJ, "mask": _MASK, "m": _MASK}
_TAGS |= {"other": _OTHER, "o": _OTHER}
_NAMED = {_USER_OBJ: _USER, _GROUP_OBJ: _GROUP}
_ENTRY = struct.Struct("<HHI")


class MetaError(ValueError):
    """A PAX record this module cannot turn into metadata (the caller adds the member's name)."""


def raw(text: str) -> bytes:
    """The bytes `tarfile` decoded into `text` (UTF-8, undecodable bytes as surrogates)."""
    return text.encode("utf-8", "surrogateescape")


def mtime_ns(info: tarfile.TarInfo) -> int:
    """The member's mtime in nanoseconds: exact from a PAX record, else the header's seconds."""
    text = info.pax_headers.get("mtime")
    if text is None:
        value = int(info.mtime) * 1_000_000_000
    else:
        try:
            value = int(Fraction(text.strip()) * 1_000_000_000 // 1)  # floor, as utimensat gets it
        except (ValueError, ZeroDivisionError):
            raise MetaError(f"invalid PAX mtime {text!r}") from None
    if not MIN_TIME_NS <= value <= MAX_TIME_NS:
        raise MetaError(f"mtime {value} ns is out of range")
    return value


def xattrs(pax: Mapping[str, str]) -> dict[bytes, bytes]:
    """Every xattr the PAX records carry, ACL text included, by full name."""
    found: dict[bytes, bytes] = {}
    acls: dict[bytes, bytes] = {}
    for key, value in pax.items():
        if key.startswith(_LIBARCHIVE_XATTR):
            name = urllib.parse.unquote_to_bytes(key[len(_LIBARCHIVE_XATTR) :])
            try:
                found[name] = base64.b64decode(value, validate=True)
            except (binascii.Error, ValueError):
                raise MetaError(f"{key}: the value is not base64") from None
        elif key.startswith(_SCHILY_XATTR):
            found[raw(key[len(_SCHILY_XATTR) :])] = raw(value)
        elif key in _ACL_KEYS:
            blob = acl_from_text(value)
            if blob is not None:
                acls[_ACL_KEYS[key]] = blob
    for name, blob in acls.items():
        found.setdefault(name, blob)
    return found


def acl_from_text(text: str) -> bytes | None:
    """The binary xattr of an ACL in star's text form; None for an empty or mode-only ACL.

    Names are resolved as extraction resolves them: an appended numeric id first (star's
    fourth field), then a numeric qualifier, then this system's passwd and group databases.
    """
    entries: set[tuple[int, int, int]] = set()
    for item in text.replace("\n", ",").split(","):
        item = item.split("#", 1)[0].strip()
        if not item:
            continue
        fields = item.split(":")
        if len(fields) not in (3, 4) or fields[0] not in _TAGS:
            raise MetaError(f"invalid ACL entry {item!r}")
        tag = _TAGS[fields[0]]
        ident = ACL_UNDEFINED_ID
        if fields[1]:
            if tag not in _NAMED:
                raise MetaError(f"invalid ACL entry {item!r}")
            tag = _NAMED[tag]
            ident = _acl_id(tag, fields[1], fields[3] if len(fields) == 4 else "")
        entries.add((tag, ident, _perm(fields[2], item)))
    if not entries:
        return None
    tags = {tag for tag, _, _ in entries}
    if not {_USER_OBJ, _GROUP_OBJ, _OTHER} <= tags:
        raise MetaError(f"ACL {text!r} lacks a user::, group:: or other:: entry")
    if tags == {_USER_OBJ, _GROUP_OBJ, _OTHER}:
        return None  # the mode bits say it all; extraction leaves no xattr
    body = b"".join(_ENTRY.pack(tag, perm, ident) for tag, ident, perm in sorted(entries))
    return struct.pack("<I", ACL_XATTR_VERSION) + body


def _perm(text: str, item: str) -> int:
    bits = 0
    for char in text:
        if char in "rwx":
            bits |= {"r": 4, "w": 2, "x": 1}[char]
        elif char != "-":
            raise MetaError(f"invalid ACL permissions in {item!r}")
    return bits


def _acl_id(tag: int, qualifier: str, numeric: str) -> int:
    for candidate in (numeric, qualifier):
        if candidate.isdigit():
            return int(candidate)
    try:
        if tag == _USER:
            return pwd.getpwnam(qualifier).pw_uid
        return grp.getgrnam(qualifier).gr_gid
    except KeyError:
        what = "user" if tag == _USER else "group"
        raise MetaError(f"ACL names the {what} {qualifier!r}, unknown here and given without an id") from None
