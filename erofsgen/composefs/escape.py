"""The escaping of composefs-dump(5) fields, as `composefs-info dump` writes and mkcomposefs reads.

Writers keep printable ASCII except space (`isgraph` in the C locale), spell backslash, newline,
carriage return and tab as `\\\\`, `\\n`, `\\r`, `\\t`, and every other byte as `\\xHH`. In xattr
names and values `=` is escaped too; an optional field whose value is a lone `-` is `\\x2d`.
"""

from __future__ import annotations

_SPECIAL = {0x5C: b"\\\\", 0x0A: b"\\n", 0x0D: b"\\r", 0x09: b"\\t"}
_UNSPECIAL = {ord("\\"): 0x5C, ord("n"): 0x0A, ord("r"): 0x0D, ord("t"): 0x09}
_HEX = b"0123456789abcdefABCDEF"


def _table(escape_equal: bool) -> list[bytes]:
    table = []
    for c in range(256):
        if c in _SPECIAL:
            table.append(_SPECIAL[c])
        elif 0x21 <= c <= 0x7E and not (escape_equal and c == 0x3D):
            table.append(bytes([c]))
        else:
            table.append(b"\\x%02x" % c)
    return table


_PLAIN = _table(False)
_EQUAL = _table(True)


def escape(value: bytes, *, equal: bool = False, lone_dash: bool = False) -> bytes:
    """The field's spelling: `equal` escapes `=` (xattrs), `lone_dash` a value of exactly `-`."""
    if lone_dash and value == b"-":
        return b"\\x2d"
    table = _EQUAL if equal else _PLAIN
    if value.isascii() and value.isalnum():
        return value
    return b"".join([table[c] for c in value])


def escape_optional(value: bytes | None) -> bytes:
    """An optional field (PAYLOAD, CONTENT): `-` for none."""
    return b"-" if value is None else escape(value, lone_dash=True)


class EscapeError(ValueError):
    """A malformed escape sequence."""


def unescape(text: bytes) -> bytes:
    """The bytes a field spells (raises EscapeError for a bad escape, as mkcomposefs does)."""
    if b"\\" not in text:
        return text
    out = bytearray()
    i, n = 0, len(text)
    while i < n:
        c = text[i]
        i += 1
        if c != 0x5C:
            out.append(c)
            continue
        if i >= n:
            raise EscapeError("no character after escape")
        c = text[i]
        i += 1
        if c in _UNSPECIAL:
            out.append(_UNSPECIAL[c])
        elif c == ord("x"):
            if i + 2 > n:
                raise EscapeError("no hex characters after hex escape")
            pair = text[i : i + 2]
            if pair[0] not in _HEX or pair[1] not in _HEX:
                raise EscapeError("invalid hex characters after hex escape")
            out.append(int(pair, 16))
            i += 2
        else:
            raise EscapeError(f"unsupported escape type {chr(c)!r}")
    return bytes(out)


def unescape_optional(text: bytes) -> bytes | None:
    """An optional field: a lone `-` is none."""
    return None if text == b"-" else unescape(text)
