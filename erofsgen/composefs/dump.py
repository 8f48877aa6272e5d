"""composefs-dump(5): parse dump files the way mkcomposefs 1.0.8 does, and write them.

One line per inode: PATH SIZE MODE NLINK UID GID RDEV MTIME PAYLOAD CONTENT DIGEST, then
`KEY=VALUE` xattrs, all separated by single spaces (see escape.py for the spelling of bytes).
A MODE starting with `@` makes the line a hard link to the path in PAYLOAD; its other fields
are ignored. Parents come before their children; the first line is the root `/`.

Everything mkcomposefs rejects is rejected here with the line number. Where mkcomposefs would
silently mangle its input (a NUL byte inside a path, payload or xattr name, which C strings
cut short; an id, count or time wider than the field it keeps it in; a malformed digest on a
regular file, of which it keeps uninitialised bytes; a hard link to a directory) this parser
rejects the line instead, so no dump it accepts means something other than what it says. A
MODE wider than 16 bits is kept as mkcomposefs keeps it (the image stores its low 16 bits).
"""

from __future__ import annotations

import re
import stat
from collections.abc import Iterable, Iterator
from dataclasses import dataclass

from ..errors import InvalidInputError
from .escape import EscapeError, escape, escape_optional, unescape, unescape_optional
from .tree import (
    INLINE_CONTENT_MAX,
    MAX_NAME,
    PATH_MAX,
    VALID_TYPES,
    CfsNode,
    split_path,
)

FIXED_FIELDS = 11
MAX_XATTR_TEXT = 0xFFFF  # bytes of a line after the fixed fields
XATTR_NAME_MAX = 255
XATTR_VALUE_MAX = 0xFFFF
EXTERNAL_XATTR_MAX = 0xFFFF // 2  # LCFS_INODE_EXTERNAL_XATTR_MAX: room left for composefs's own
_XATTR_ENTRY_OVERHEAD = 2 * 4 - 1  # libcomposefs's worst-case accounting per entry
_XATTR_HEADER = 12
_NUMBER = re.compile(rb"\+?[0-9]+")
_U32 = 2**32 - 1
_U64 = 2**64 - 1
_DIGEST = re.compile(rb"[0-9a-fA-F]{64}")


class DumpError(InvalidInputError):
    """A dump file mkcomposefs would refuse (or would mangle); names the line."""

    def __init__(self, message: str, line: int | None = None, source: str = "dump") -> None:
        self.line = line
        where = f"{source}:{line}" if line is not None else source
        super().__init__(message, where)


@dataclass(frozen=True, slots=True)
class DumpEntry:
    """One line of a dump file, its fields unescaped."""

    path: bytes
    size: int
    mode: int
    nlink: int = 1
    uid: int = 0
    gid: int = 0
    rdev: int = 0
    mtime_sec: int = 0
    mtime_nsec: int = 0
    payload: bytes | None = None
    content: bytes | None = None
    digest: bytes | None = None
    xattrs: tuple[tuple[bytes, bytes], ...] = ()
    hardlink: bool = False


class _LineError(Exception):
    """A problem with the current line; the caller adds the line number."""


def _number(text: bytes, what: str, limit: int, base: int = 10) -> int:
    if not _NUMBER.fullmatch(text) or (base == 8 and re.search(rb"[89]", text)):
        raise _LineError(f"invalid {what} {text.decode(errors='replace')!r}")
    value = int(text, base)
    if value > limit:
        raise _LineError(f"{what} {value} is out of range (at most {limit})")
    return value


def _field(text: bytes, what: str) -> bytes:
    try:
        return unescape(text)
    except EscapeError as exc:
        raise _LineError(f"{what}: {exc}") from None


def _optional(text: bytes, what: str) -> bytes | None:
    try:
        return unescape_optional(text)
    except EscapeError as exc:
        raise _LineError(f"{what}: {exc}") from None


def _no_nul(value: bytes | None, what: str) -> None:
    if value is not None and b"\0" in value:
        raise _LineError(f"{what} contains a NUL byte")


def _xattrs(text: bytes) -> tuple[tuple[bytes, bytes], ...]:
    """`KEY=VALUE` words; a repeated key replaces the earlier value (libcomposefs's accounting)."""
    if len(text) > MAX_XATTR_TEXT:
        raise _LineError("too many xattrs (more than 65535 bytes of them)")
    xattrs: dict[bytes, bytes] = {}
    used = 0
    for word in text.split(b" ") if text else ():
        key_text, eq, value_text = word.partition(b"=")
        if not eq:
            raise _LineError(f"missing = in xattr {word[:40].decode(errors='replace')!r}")
        key = _field(key_text, "xattr name")
        value = _field(value_text, "xattr value")
        _no_nul(key, "xattr name")
        if not 0 < len(key) <= XATTR_NAME_MAX:
            raise _LineError(f"xattr name of {len(key)} bytes (1 to {XATTR_NAME_MAX} allowed)")
        if len(value) > XATTR_VALUE_MAX:
            raise _LineError(f"xattr value of {len(value)} bytes (at most {XATTR_VALUE_MAX})")
        if key in xattrs:
            old = xattrs.pop(key)
            used = used - (_XATTR_ENTRY_OVERHEAD + len(key) + len(old)) if xattrs else 0
        used += _XATTR_ENTRY_OVERHEAD + len(key) + len(value) + (0 if xattrs else _XATTR_HEADER)
        if used > EXTERNAL_XATTR_MAX:
            raise _LineError(f"xattrs take more than {EXTERNAL_XATTR_MAX} bytes")
        xattrs[key] = value
    return tuple(xattrs.items())


def parse_line(line: bytes, *, strict: bool = False) -> DumpEntry:
    """One line's fields (checks that need other lines are `DumpTreeBuilder`'s)."""
    nul = line.find(b"\0")
    if nul >= 0:
        raise _LineError(f"invalid embedded NUL character at position {nul}")
    parts = line.split(b" ", FIXED_FIELDS)
    fields = parts[:FIXED_FIELDS] + [b""] * (FIXED_FIELDS - len(parts))
    rest = parts[FIXED_FIELDS] if len(parts) > FIXED_FIELDS else b""
    path = _field(fields[0], "path")
    if not path:
        raise _LineError("invalid empty path")
    _no_nul(path, "path")
    mode_text = fields[2]
    hardlink = mode_text.startswith(b"@")
    mode = _number(mode_text[1:] if hardlink else mode_text, "mode", _U32, 8)
    if stat.S_IFMT(mode) not in VALID_TYPES:
        raise _LineError(f"invalid mode {mode:o} (no valid file type)")
    if hardlink:
        if stat.S_ISDIR(mode):
            raise _LineError("directories can't be hardlinked")
        target = _optional(fields[8], "hard link target")
        if target is None:
            raise _LineError("no target path for the hardlink")
        _no_nul(target, "hard link target")
        return DumpEntry(path, 0, mode, payload=target, hardlink=True)
    size = _number(fields[1], "size", _U64)
    nlink = _number(fields[3], "nlink", _U32)
    uid = _number(fields[4], "uid", _U32)
    gid = _number(fields[5], "gid", _U32)
    rdev = _number(fields[6], "rdev", _U64)
    sec_text, dot, nsec_text = fields[7].partition(b".")
    sec = _number(sec_text, "mtime seconds", 2**63 - 1)
    nsec = _number(nsec_text if dot else b"", "mtime nanoseconds", _U32)
    payload = _optional(fields[8], "payload")
    content = _optional(fields[9], "content")
    digest_text = _optional(fields[10], "digest")
    if content is not None and len(content) != size:
        raise _LineError(f"invalid content size {len(content)}, must match size {size}")
    ftype = stat.S_IFMT(mode)
    if ftype not in (stat.S_IFCHR, stat.S_IFBLK):
        if strict and rdev:
            raise _LineError("non-zero devnum on non-device")
        rdev = 0
    elif rdev > _U32:
        raise _LineError(f"rdev {rdev} does not fit the image's 32 bits")
    _no_nul(payload, "payload")
    if payload is not None and len(payload) >= PATH_MAX:
        raise _LineError(f"payload of {len(payload)} bytes (the limit is {PATH_MAX - 1})")
    if ftype == stat.S_IFLNK:
        if not payload:
            raise _LineError("invalid symlink: empty target")
        if strict and size != len(payload):
            raise _LineError(f"invalid symlink size {len(payload)}, must match size {size}")
        if strict and content:
            raise _LineError("symlink cannot have content")
        size, content = len(payload), None
    elif content is not None:
        if len(content) > INLINE_CONTENT_MAX:
            raise _LineError(f"inline content size {len(content)} exceeds maximum {INLINE_CONTENT_MAX}")
        if not content:
            content = None  # libcomposefs keeps no content for an empty file
    digest = None
    if digest_text == b"" and ftype != stat.S_IFREG:
        digest_text = None  # an empty (or missing) field: mkcomposefs keeps garbage it never uses
    if digest_text is not None:
        if not _DIGEST.fullmatch(digest_text):
            raise _LineError("digest must be 64 hex characters or -")
        digest = bytes.fromhex(digest_text.decode())
    return DumpEntry(
        path, size, mode, nlink, uid, gid, rdev, sec, nsec, payload, content, digest, _xattrs(rest)
    )


def _lines(data: bytes, strict: bool) -> Iterator[tuple[int, bytes]]:
    lines = data.split(b"\n")
    last = lines.pop()  # b"" when the data ends with a newline
    if last:
        if strict:
            raise DumpError("missing trailing newline", len(lines) + 1)
        lines.append(last)
    yield from enumerate(lines, 1)


class DumpTreeBuilder:
    """Adds dump entries to a tree with mkcomposefs's checks; hard links resolve at `finish`."""

    def __init__(self, source: str = "dump") -> None:
        self.source = source
        self.root: CfsNode | None = None
        self.links: list[tuple[int, CfsNode, bytes]] = []

    def add(self, entry: DumpEntry, line: int) -> CfsNode:
        try:
            return self._add(entry, line)
        except _LineError as exc:
            raise DumpError(str(exc), line, self.source) from None

    def _add(self, entry: DumpEntry, line: int) -> CfsNode:
        node = CfsNode(
            entry.mode,
            entry.uid,
            entry.gid,
            entry.nlink,
            entry.rdev,
            entry.mtime_sec,
            entry.mtime_nsec,
            entry.size,
            entry.payload,
            entry.content,
            entry.digest,
            dict(entry.xattrs),
            {} if stat.S_ISDIR(entry.mode) else None,
        )
        if entry.path == b"/":
            if not node.is_dir:
                raise _LineError("root must be a directory")
            if self.root is not None:
                raise _LineError("can't have multiple roots")
            self.root = node
            return node
        if self.root is None:
            raise _LineError("root node not present")
        *parents, name = entry.path.lstrip(b"/").split(b"/")
        parent = self.root
        for part in parents:
            if not part:
                continue
            child = parent.children.get(part) if parent.children is not None else None
            if child is None:
                raise _LineError(f"parent directory missing for {entry.path.decode(errors='replace')}")
            parent = child
        if parent.children is None:
            raise _LineError(f"parent must be a directory for {entry.path.decode(errors='replace')}")
        if name in (b".", b".."):
            raise _LineError(f"invalid . or .. in path: {entry.path.decode(errors='replace')}")
        if not name:
            raise _LineError("empty file name")
        if len(name) > MAX_NAME:
            raise _LineError(f"file name of {len(name)} bytes (at most {MAX_NAME})")
        if name in parent.children:
            raise _LineError(f"path {entry.path.decode(errors='replace')} already exists")
        parent.children[name] = node
        if entry.hardlink:
            assert entry.payload is not None
            self.links.append((line, node, entry.payload))
        return node

    def finish(self) -> CfsNode:
        """The root, once every hard link points at its target."""
        if self.root is None:
            raise DumpError("no root directory (the first line must be /)", None, self.source)
        for line, node, target_path in reversed(self.links):
            target: CfsNode | None = self.root
            for part in split_path(target_path):
                children = target.children if target is not None else None
                target = children.get(part) if children is not None else None
            shown = target_path.decode(errors="replace")
            if target is None:
                raise DumpError(f"no target at {shown} for hardlink", line, self.source)
            if target is node:
                raise DumpError(f"self-referential hardlink {shown}", line, self.source)
            node.link_to = target
        for line, node, target_path in self.links:
            seen = {id(node)}
            hop = node.link_to
            while hop is not None and hop.link_to is not None:
                if id(hop) in seen:
                    raise DumpError("hard links form a cycle", line, self.source)
                seen.add(id(hop))
                hop = hop.link_to
            if hop is not None and hop.is_dir:
                shown = target_path.decode(errors="replace")
                raise DumpError(f"hard link to the directory {shown}", line, self.source)
        return self.root


def parse_dump(data: bytes, *, strict: bool = False, source: str = "dump") -> list[DumpEntry]:
    """Every line's entry, after checking the whole file as mkcomposefs would."""
    return read_dump(data, strict=strict, source=source)[0]


def read_dump(data: bytes, *, strict: bool = False, source: str = "dump") -> tuple[list[DumpEntry], CfsNode]:
    """The entries of a dump file and the tree they describe (`strict` is CFS_PARSE_STRICT)."""
    builder = DumpTreeBuilder(source)
    entries = []
    for number, line in _lines(data, strict):
        try:
            entry = parse_line(line, strict=strict)
        except _LineError as exc:
            raise DumpError(str(exc), number, source) from None
        builder.add(entry, number)
        entries.append(entry)
    builder.finish()
    assert builder.root is not None
    return entries, builder.root


def format_entry(entry: DumpEntry) -> bytes:
    """One dump line (without the newline), spelled as `composefs-info dump` spells it."""
    head = b"%d %s%o %d %d %d %d %d.%d " % (
        entry.size,
        b"@" if entry.hardlink else b"",
        entry.mode,
        entry.nlink,
        entry.uid,
        entry.gid,
        entry.rdev,
        entry.mtime_sec,
        entry.mtime_nsec,
    )
    words = [
        escape(entry.path) + b" " + head + escape_optional(entry.payload),
        escape_optional(entry.content),
        entry.digest.hex().encode() if entry.digest is not None else b"-",
    ]
    words += [escape(k, equal=True) + b"=" + escape(v, equal=True) for k, v in entry.xattrs]
    return b" ".join(words)


def format_dump(entries: Iterable[DumpEntry]) -> bytes:
    """A whole dump file."""
    return b"".join(format_entry(e) + b"\n" for e in entries)
