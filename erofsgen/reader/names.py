"""Names and paths as text for people: the one escaping every reader message and listing uses.

The convention is GNU `ls -b` in a UTF-8 locale: printable characters (valid UTF-8 included) as
they are; `\\\\`, `\\ ` (space) and the C escapes `\\a \\b \\t \\n \\v \\f \\r`; every other byte
(controls, DEL, bytes that are not UTF-8, unprintable characters) as a three-digit octal escape
`\\ooo`. The result is one line, unambiguous, and never a Python bytes repr.
"""

from __future__ import annotations

import os

_ESCAPES = {
    "\a": "\\a",
    "\b": "\\b",
    "\t": "\\t",
    "\n": "\\n",
    "\v": "\\v",
    "\f": "\\f",
    "\r": "\\r",
    " ": "\\ ",
    "\\": "\\\\",
}


def _octal(data: bytes) -> str:
    return "".join(f"\\{byte:03o}" for byte in data)


def escape_name(raw: bytes | str | os.PathLike[str] | os.PathLike[bytes], *, spaces: bool = True) -> str:
    """`raw` (a name or path; str is taken as os.fsencode would encode it) escaped as `ls -b`.

    `spaces=False` leaves spaces alone, for labels and tags that are text rather than paths.
    """
    value = os.fspath(raw)
    text = value.decode("utf-8", "surrogateescape") if isinstance(value, bytes) else value
    if text.isprintable() and (" " not in text or not spaces) and "\\" not in text:
        return text  # the common case: nothing to escape
    out: list[str] = []
    for ch in text:
        code = ord(ch)
        if 0xDC80 <= code <= 0xDCFF:  # a byte that is not UTF-8, surrogate-escaped
            out.append(f"\\{code - 0xDC00:03o}")
        elif ch == " " and not spaces:
            out.append(ch)
        elif ch in _ESCAPES:
            out.append(_ESCAPES[ch])
        elif ch.isprintable():
            out.append(ch)
        else:
            out.append(_octal(ch.encode("utf-8", "surrogatepass")))
    return "".join(out)


__all__ = ["escape_name"]
