"""Fast `struct` codecs derived from fixed-size construct schemas.

The construct schema is the only declaration of a layout. For hot paths we walk the schema once
at import time, derive the equivalent `struct` format and bind it to a NamedTuple whose field
names must match the schema's (checked here), so the two encodings cannot drift apart.
"""

from __future__ import annotations

import struct
from typing import Any, Generic, NamedTuple, TypeVar

import construct as cs

from ..errors import CorruptImageError

R = TypeVar("R", bound=NamedTuple)


def _field_format(sub: Any) -> str:
    """The struct format of one fixed-size construct field (without byte order)."""
    if isinstance(sub, cs.Const):
        return _field_format(sub.subcon)
    if isinstance(sub, cs.FormatField):
        fmt: str = sub.fmtstr
        if fmt[0] != "<":
            raise TypeError(f"schema field {fmt!r} is not little-endian")
        return fmt[1:]
    if isinstance(sub, cs.Bytes) and isinstance(sub.length, int):
        return f"{sub.length}s"
    if isinstance(sub, cs.Padded) and isinstance(sub.length, int) and sub.subcon is cs.Pass:
        return f"{sub.length}x"
    raise TypeError(f"cannot derive a struct codec for {sub!r}")


class FixedCodec(Generic[R]):
    """Packs and unpacks one fixed-size record as a NamedTuple, byte-identical to the schema."""

    def __init__(self, schema: cs.Struct, record: type[R]) -> None:
        names: list[str] = []
        fmt = "<"
        for sub in schema.subcons:
            if isinstance(sub, cs.Renamed) and sub.name is not None:
                names.append(sub.name)
                fmt += _field_format(sub.subcon)
            else:
                fmt += _field_format(sub)
        if tuple(names) != record._fields:
            raise TypeError(f"{record.__name__} fields {record._fields} != schema fields {tuple(names)}")
        self.schema = schema
        self.record = record
        self.struct = struct.Struct(fmt)
        self.size: int = self.struct.size
        if self.size != schema.sizeof():
            raise TypeError(f"{record.__name__}: struct size {self.size} != schema size {schema.sizeof()}")

    def pack(self, rec: R) -> bytes:
        return self.struct.pack(*rec)

    def unpack(self, data: bytes | bytearray | memoryview, offset: int = 0, *, area: str = "") -> R:
        """Decode at `offset`; a short buffer is a CorruptImageError naming the area."""
        try:
            values = self.struct.unpack_from(data, offset)
        except struct.error:
            raise CorruptImageError(
                f"truncated {area or self.record.__name__}: need {self.size} bytes", offset=offset
            ) from None
        return self.record._make(values)
