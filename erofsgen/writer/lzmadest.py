"""MicroLZMA to a fixed output size, with liblzma's own encoder (as mkfs.erofs).

`lzma_microlzma_encoder` (liblzma 5.3.2+, stable since 5.4) stops by itself when its output
buffer is full and reports how much input it consumed: one pass per pcluster. Python's lzma
module does not expose it, so the library Python's _lzma links against is called through
ctypes (which releases the GIL). Each thread keeps one lzma_stream and re-initialises it per
pcluster, so the encoder's buffers are allocated once per thread.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import threading
from functools import cache

from ..errors import InvalidInputError
from ..format.constants import CompressionAlgorithm
from .codecs import EXTREME

LZMA_OK = 0
LZMA_PRESET_EXTREME = 1 << 31  # or'ed into a preset: slower, a little smaller
LZMA_STREAM_END = 1
LZMA_FINISH = 3
# lzma_options_lzma is about 112 bytes; dict_size is its first member (uint32_t). It is filled
# by lzma_lzma_preset, so only that one field's place matters here.
_OPTIONS_BYTES = 256


class _Stream(ctypes.Structure):
    """lzma_stream (lzma/base.h); LZMA_STREAM_INIT is all zeros."""

    _fields_ = [
        ("next_in", ctypes.c_void_p),
        ("avail_in", ctypes.c_size_t),
        ("total_in", ctypes.c_uint64),
        ("next_out", ctypes.c_void_p),
        ("avail_out", ctypes.c_size_t),
        ("total_out", ctypes.c_uint64),
        ("allocator", ctypes.c_void_p),
        ("internal", ctypes.c_void_p),
        ("reserved_ptr1", ctypes.c_void_p),
        ("reserved_ptr2", ctypes.c_void_p),
        ("reserved_ptr3", ctypes.c_void_p),
        ("reserved_ptr4", ctypes.c_void_p),
        ("seek_pos", ctypes.c_uint64),
        ("reserved_int2", ctypes.c_uint64),
        ("reserved_int3", ctypes.c_size_t),
        ("reserved_int4", ctypes.c_size_t),
        ("reserved_enum1", ctypes.c_int),
        ("reserved_enum2", ctypes.c_int),
    ]


@cache
def _library() -> ctypes.CDLL | None:
    """liblzma with lzma_microlzma_encoder, preferably the one Python's lzma module uses."""
    names = []
    try:
        import _lzma

        names.append(_lzma.__file__)  # its symbols include liblzma's when linked statically
    except ImportError:
        pass
    found = ctypes.util.find_library("lzma")
    names += [n for n in (found, "liblzma.so.5") if n]
    for name in names:
        try:
            lib = ctypes.CDLL(name)
            encoder, code, end, preset = (
                lib.lzma_microlzma_encoder,
                lib.lzma_code,
                lib.lzma_end,
                lib.lzma_lzma_preset,
            )
        except (OSError, AttributeError):
            continue
        stream_p = ctypes.POINTER(_Stream)
        encoder.argtypes = [stream_p, ctypes.c_void_p]
        encoder.restype = ctypes.c_int
        code.argtypes = [stream_p, ctypes.c_int]
        code.restype = ctypes.c_int
        end.argtypes = [stream_p]
        end.restype = None
        preset.argtypes = [ctypes.c_void_p, ctypes.c_uint32]
        preset.restype = ctypes.c_ubyte
        return lib
    return None


class _ThreadStream:
    """One thread's lzma_stream, ended when the thread's locals go."""

    def __init__(self, lib: ctypes.CDLL) -> None:
        self.lib = lib
        self.stream = _Stream()

    def __del__(self) -> None:
        self.lib.lzma_end(ctypes.byref(self.stream))


class MicroLzmaDestSize:
    """MicroLZMA at preset `level` with a dictionary of `dict_size` bytes (level 100 + N: preset N,
    extreme)."""

    algorithm = CompressionAlgorithm.LZMA
    max_ratio = 1 << 20  # no useful bound: the extent limit of compress_file applies

    def __init__(self, lib: ctypes.CDLL, level: int, dict_size: int) -> None:
        self.lib = lib
        self.options = ctypes.create_string_buffer(_OPTIONS_BYTES)
        preset = level - EXTREME | LZMA_PRESET_EXTREME if level >= EXTREME else level
        if lib.lzma_lzma_preset(self.options, preset):
            raise InvalidInputError(f"liblzma has no preset {level}")
        ctypes.c_uint32.from_buffer(self.options).value = dict_size
        self.local = threading.local()

    def __call__(self, data: bytes, start: int, end: int, capacity: int) -> tuple[bytes, int]:
        holder: _ThreadStream | None = getattr(self.local, "stream", None)
        if holder is None:
            holder = self.local.stream = _ThreadStream(self.lib)
        stream = holder.stream
        ret = self.lib.lzma_microlzma_encoder(ctypes.byref(stream), self.options)
        if ret != LZMA_OK:
            raise AssertionError(f"lzma_microlzma_encoder failed ({ret})")
        out = ctypes.create_string_buffer(capacity)
        # A pointer into `data` itself (no copy of the window); `data` outlives the call.
        src = ctypes.cast(ctypes.c_char_p(data), ctypes.c_void_p).value
        assert src is not None
        stream.next_in = src + start
        stream.avail_in = end - start
        # addressof, not cast: a cast makes a reference cycle that keeps `out` until the cyclic GC.
        stream.next_out = ctypes.addressof(out)
        stream.avail_out = capacity
        ret = self.lib.lzma_code(ctypes.byref(stream), LZMA_FINISH)
        if ret != LZMA_STREAM_END:
            raise AssertionError(f"MicroLZMA encoding failed ({ret})")
        return out.raw[: stream.total_out], stream.total_in


def microlzma_compressor(level: int, dict_size: int) -> MicroLzmaDestSize:
    lib = _library()
    if lib is None:
        raise InvalidInputError(
            "compressing with lzma needs liblzma 5.4 or later (lzma_microlzma_encoder), which was not found"
        )
    return MicroLzmaDestSize(lib, level, dict_size)


def available() -> bool:
    return _library() is not None
