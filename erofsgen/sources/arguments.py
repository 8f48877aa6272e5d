"""Checks of `ImageBuilder`'s arguments, each turning a caller's value into the model's.

Every check raises `InvalidInputError` naming the image path the call was for. Nothing is
coerced: a value of the wrong type is refused, never converted (`True` is not a uid, ``"5"``
is not a time, ``5`` is not five zero bytes), so a mistake surfaces at the call that made it.
"""

from __future__ import annotations

import io
import math
import os
import re
import stat
from collections.abc import ItemsView, Iterable, Mapping
from dataclasses import dataclass
from fractions import Fraction
from typing import Protocol

from ..errors import InvalidInputError
from ..format.constants import EROFS_NAME_LEN
from ..limits import MAX_ID, MAX_TIME_NS, MIN_TIME_NS
from ..model import BytesData, Directory, File, FileObjectData, Node, PathData, iter_tree
from ..writer.validate import check_xattr_targets, check_xattrs

Name = str | bytes | os.PathLike[str] | os.PathLike[bytes]
BytesLike = bytes | bytearray | memoryview


class Xattrs(Protocol):
    """A mapping of xattr names (str or bytes) to bytes-like values, e.g. a dict.

    A protocol rather than `Mapping[str | bytes, ...]`, whose invariant key type would refuse a
    `dict[str, bytes]`; at run time the value must be a `collections.abc.Mapping`.
    """

    def items(self) -> ItemsView[str | bytes, BytesLike]:
        """(name, value) pairs."""
        ...


@dataclass(frozen=True, slots=True)
class EntryMeta:
    """The metadata keywords of one builder call; None means "not given"."""

    mode: int | None = None
    uid: int | None = None
    gid: int | None = None
    mtime: float | None = None
    mtime_ns: int | None = None
    xattrs: Xattrs | None = None


def _kind(value: object) -> str:
    return type(value).__name__


def check_int(value: object, what: str, where: str | None) -> int:
    """`value` if it is an int; bool is refused although Python counts it as one."""
    if isinstance(value, bool) or not isinstance(value, int):
        raise InvalidInputError(f"{what} must be an int, not {_kind(value)}", where)
    return value


def check_bool(value: object, what: str, where: str | None) -> bool:
    if not isinstance(value, bool):
        raise InvalidInputError(f"{what} must be True or False, not {_kind(value)}", where)
    return value


def fs_path(value: object, what: str, where: str | None) -> str | bytes:
    """A path as os functions take it: str, bytes or os.PathLike; never an int (a descriptor)."""
    raw = _fspath(value, what, where)
    if (isinstance(raw, str) and "\0" in raw) or (isinstance(raw, bytes) and b"\0" in raw):
        raise InvalidInputError(f"{what} contains NUL", where)
    return raw


def fs_bytes(value: str | bytes, what: str, where: str | None) -> bytes:
    """os.fsencode, with a str it cannot encode (a lone surrogate) refused by name."""
    try:
        return os.fsencode(value)
    except UnicodeEncodeError:
        raise InvalidInputError(f"{what} {value!r} cannot be encoded as a file name", where) from None


def _fspath(value: object, what: str, where: str | None) -> str | bytes:
    if isinstance(value, str | bytes):
        return value
    if isinstance(value, os.PathLike):
        try:
            raw: str | bytes = os.fspath(value)
            return raw
        except TypeError as exc:
            raise InvalidInputError(f"{what}: {exc}", where) from None
    raise InvalidInputError(f"{what} must be a str, bytes or os.PathLike path, not {_kind(value)}", where)


def split_name(name: object) -> tuple[str, list[bytes]]:
    """The display path ("/a/b") and validated components of a path inside the image."""
    raw = fs_bytes(_fspath(name, "entry name", None), "entry name", None).lstrip(b"/")
    where = "/" + os.fsdecode(raw)
    if not raw:
        return where, []
    parts = raw.split(b"/")
    for part in parts:
        if not part or part in (b".", b".."):
            raise InvalidInputError(f"invalid path component {part!r}", where)
        if b"\0" in part:
            raise InvalidInputError("path contains NUL", where)
        if len(part) > EROFS_NAME_LEN:
            raise InvalidInputError(f"name is {len(part)} bytes, longer than {EROFS_NAME_LEN}", where)
    return where, parts


def apply_entry(node: Node, entry: EntryMeta, where: str) -> None:
    """Check every value `entry` gives first, then set them, so a bad one changes nothing."""
    meta = node.meta
    mode = meta.mode if entry.mode is None else check_mode(entry.mode, node.file_type, where)
    uid = meta.uid if entry.uid is None else check_id(entry.uid, "uid", where)
    gid = meta.gid if entry.gid is None else check_id(entry.gid, "gid", where)
    mtime_ns = check_times(entry.mtime, entry.mtime_ns, meta.mtime_ns, where)
    added = {} if entry.xattrs is None else xattr_map(entry.xattrs, where)
    if added:
        check_xattrs({**meta.xattrs, **added}, where)  # the writer's rules, applied now
        check_xattr_targets(node, added, where)
    meta.mode, meta.uid, meta.gid, meta.mtime_ns = mode, uid, gid, mtime_ns
    meta.xattrs.update(added)


def check_mode(mode: object, file_type: int, where: str) -> int:
    """Permission bits; an st_mode is accepted too when its type bits are the entry's."""
    value = check_int(mode, "mode", where)
    if value < 0 or (value & ~0o7777 and value & ~0o7777 != file_type):
        raise InvalidInputError(f"mode {value:#o} is not permission bits of this entry", where)
    return value & 0o7777


def check_id(value: object, what: str, where: str) -> int:
    """A uid or gid: 0..MAX_ID, as the writer and the transforms take it."""
    number = check_int(value, what, where)
    if not 0 <= number <= MAX_ID:
        raise InvalidInputError(f"{what} {number} is outside 0..{MAX_ID}", where)
    return number


def check_times(mtime: object, mtime_ns: object, default: int, where: str) -> int:
    """Nanoseconds from `mtime` (int or finite float seconds) or `mtime_ns` (int), else `default`."""
    if mtime is not None and mtime_ns is not None:
        raise InvalidInputError("give mtime or mtime_ns, not both", where)
    if mtime_ns is not None:
        value = check_int(mtime_ns, "mtime_ns", where)
    elif mtime is not None:
        if isinstance(mtime, bool) or not isinstance(mtime, int | float):
            raise InvalidInputError(f"mtime must be int or float seconds, not {_kind(mtime)}", where)
        if not math.isfinite(mtime):
            raise InvalidInputError(f"mtime {mtime} is not a finite number of seconds", where)
        value = round(Fraction(mtime) * 1_000_000_000)  # exact for the float given
    else:
        return default
    if not MIN_TIME_NS <= value <= MAX_TIME_NS:
        raise InvalidInputError(f"mtime {value} ns is out of range", where)
    return value


def xattr_map(xattrs: object, where: str) -> dict[bytes, bytes]:
    """Names (str via os.fsencode, or bytes) to values (bytes-like only)."""
    if not isinstance(xattrs, Mapping):
        raise InvalidInputError(f"xattrs must be a mapping of names to values, not {_kind(xattrs)}", where)
    return {xattr_name(key, where): xattr_value(key, value, where) for key, value in xattrs.items()}


def xattr_name(key: object, where: str) -> bytes:
    if isinstance(key, bytes):
        return key
    if isinstance(key, str):
        return fs_bytes(key, "xattr name", where)
    raise InvalidInputError(f"xattr name must be str or bytes, not {_kind(key)}", where)


def xattr_value(key: object, value: object, where: str) -> bytes:
    if isinstance(value, bytes):
        return value
    if not isinstance(value, str):
        try:
            return memoryview(value).tobytes()  # type: ignore[arg-type]
        except TypeError:
            pass
    raise InvalidInputError(f"xattr {key!r} value must be bytes, not {_kind(value)}", where)


def bytes_source(data: object, where: str) -> BytesData:
    """File data given as a bytes-like object (bytes, bytearray, memoryview, ...)."""
    if isinstance(data, bytes):
        return BytesData(data)
    if isinstance(data, str):
        raise InvalidInputError("data must be bytes, not str: encode it, or give path= for a file", where)
    if hasattr(data, "read"):
        raise InvalidInputError("data is a file object: give it as fileobj=", where)
    try:
        return BytesData(memoryview(data).tobytes())  # type: ignore[arg-type]
    except TypeError:
        raise InvalidInputError(f"data must be bytes-like, not {_kind(data)}", where) from None


def path_source(path: object, where: str) -> tuple[PathData, int]:
    """The data of the file at `path` (symlinks followed) and its permission bits."""
    raw = fs_path(path, "path", where)
    try:
        st = os.stat(raw)
    except OSError as exc:
        raise InvalidInputError(f"cannot stat {os.fsdecode(raw)}: {exc.strerror}", where) from None
    if not stat.S_ISREG(st.st_mode):
        raise InvalidInputError(f"{os.fsdecode(raw)} is not a regular file", where)
    # The writer opens without following symlinks, so hand it the file the link leads to.
    return PathData(os.path.realpath(raw), st.st_size), st.st_mode & 0o7777


def fileobj_label(fileobj: object) -> str:
    """How messages name a file object: its name when it has a path, else a placeholder."""
    name = getattr(fileobj, "name", None)
    return (
        name if isinstance(name, str) else os.fsdecode(name) if isinstance(name, bytes) else "<file object>"
    )


def fileobj_source(fileobj: object, size: object, where: str) -> FileObjectData:
    """A window of an open, readable, seekable binary file from its current position."""
    if isinstance(fileobj, str | bytes | bytearray | memoryview | os.PathLike):
        raise InvalidInputError(
            f"fileobj must be a binary file object, not {_kind(fileobj)} (see data= and path=)", where
        )
    label = fileobj_label(fileobj)
    if isinstance(fileobj, io.TextIOBase):
        raise InvalidInputError(f"fileobj {label} is open in text mode; open it in binary mode", where)
    if _is_closed(fileobj):
        raise InvalidInputError(f"fileobj {label} is closed", where)
    try:
        offset = fileobj.tell()  # type: ignore[attr-defined]
        end = fileobj.seek(0, os.SEEK_END)  # type: ignore[attr-defined]
        fileobj.seek(offset)  # type: ignore[attr-defined]
        probe = fileobj.read(0)  # type: ignore[attr-defined]
    except (OSError, ValueError, AttributeError, TypeError) as exc:
        raise InvalidInputError(
            f"fileobj {label} must be a readable, seekable binary file object: {exc}", where
        ) from None
    if not isinstance(probe, bytes) or not isinstance(offset, int) or not isinstance(end, int):
        raise InvalidInputError(f"fileobj {label} does not read bytes", where)
    available = end - offset
    length = available if size is None else check_int(size, "size", where)
    if length < 0:
        raise InvalidInputError(f"size {length} is negative", where)
    if length > available:
        raise InvalidInputError(
            f"size {length} is beyond the {available} bytes left in fileobj {label}", where
        )
    return FileObjectData(fileobj, offset, length, label)  # type: ignore[arg-type]


def _is_closed(fileobj: object) -> bool:
    try:
        return bool(getattr(fileobj, "closed", False))
    except ValueError:  # a buffered file whose raw stream was detached
        return True


def check_fileobjs_open(root: Directory) -> None:
    """Raise, naming the entry, if a file object given as data was closed before writing."""
    for path, node in iter_tree(root):
        data = node.data if isinstance(node, File) else None
        if isinstance(data, FileObjectData) and _is_closed(data.fileobj):
            raise InvalidInputError(
                f"fileobj {data.label} was closed before the image was written", "/" + os.fsdecode(path)
            )


def name_list(values: object, what: str, where: str, patterns: bool = False) -> list[str | bytes]:
    """A list of str or bytes (and compiled bytes patterns if `patterns`); a bare str is refused."""
    if isinstance(values, str | bytes) or not isinstance(values, Iterable):
        raise InvalidInputError(f"{what} must be a list of str or bytes, not {_kind(values)}", where)
    items = list(values)
    for item in items:
        if patterns and isinstance(item, re.Pattern) and isinstance(item.pattern, bytes):
            continue
        if not isinstance(item, str | bytes):
            raise InvalidInputError(f"{what} must hold str or bytes, not {_kind(item)}", where)
    return items


def check_output(output: object) -> str | os.PathLike[str] | None:
    """The builder's `output`: None, or a str or os.PathLike path of the image to write."""
    if output is None or isinstance(output, str):
        return output
    if isinstance(output, os.PathLike) and isinstance(_fspath(output, "output", None), str):
        return output
    raise InvalidInputError(f"output must be a str or os.PathLike path, not {_kind(output)}")
