"""LZ4 and LZ4HC compression to a fixed output size: as much input as fits `capacity` bytes.

EROFS extents are cut by output, not input: each pcluster is filled. liblz4 does this in one
pass (LZ4_compress_destSize, LZ4_compress_HC_destSize); the python-lz4 wheel's extension links
liblz4 statically and exports both, so they are called through ctypes (which releases the GIL).
Where the symbols are missing, a slower search over the input length with
`lz4.block.compress` gives a correct, if sometimes shorter, prefix. lz4 is imported only when
something is compressed: uncompressed images need no compression library.
"""

from __future__ import annotations

import ctypes
import threading
from dataclasses import dataclass
from functools import cache
from typing import Any, Protocol

from ..errors import InvalidInputError
from ..format.constants import CompressionAlgorithm

LZ4HC_DEFAULT_LEVEL = 9  # liblz4's LZ4HC_CLEVEL_DEFAULT, mkfs.erofs's default for lz4hc
LZ4HC_MAX_LEVEL = 12
LZ4_MAX_DISTANCE = 65535  # liblz4's LZ4_DISTANCE_MAX: how far back any match reaches
LZ4_MAX_RATIO = 255  # an LZ4 block never holds more than about 255 times its size


class DestSizeCompressor(Protocol):
    """A fixed-output encoder of one algorithm (this module: LZ4; see codecs.py for the others)."""

    algorithm: CompressionAlgorithm  # the map header's HEAD1 algorithm
    max_ratio: int  # at most this many input bytes per output byte: bounds the read-ahead

    def __call__(self, data: bytes, start: int, end: int, capacity: int) -> tuple[bytes, int]:
        """(stream, input bytes it holds): the longest prefix of data[start:end] (or nearly) whose
        stream fits `capacity` bytes; the stream decodes to exactly that prefix."""
        ...


@dataclass(frozen=True)
class _Liblz4:
    """The liblz4 functions called through ctypes."""

    fast: Any  # LZ4_compress_destSize
    hc: Any  # LZ4_compress_HC_destSize
    state_size: int  # LZ4_sizeofStateHC()
    # LZ4HC with one state per thread reused from call to call (None where not exported):
    # LZ4_initStreamHC once, then LZ4_resetStreamHC_fast and LZ4_compress_HC_continue_destSize.
    # The two cheap calls keep the GIL (PyDLL): releasing and taking it back costs more than
    # they do, and the compressing threads wait on each other for it.
    hc_init: Any = None
    hc_reset: Any = None
    hc_next: Any = None


@cache
def _native() -> _Liblz4 | None:
    """liblz4 inside the lz4 wheel's extension, if it exports the destSize functions."""
    import lz4.block._block as lz4_extension

    try:
        lib = ctypes.CDLL(lz4_extension.__file__)
        held = ctypes.PyDLL(lz4_extension.__file__)
        fast, hc, sizeof_hc = lib.LZ4_compress_destSize, lib.LZ4_compress_HC_destSize, lib.LZ4_sizeofStateHC
    except (OSError, AttributeError):
        return None
    int_p = ctypes.POINTER(ctypes.c_int)
    fast.argtypes = [ctypes.c_void_p, ctypes.c_char_p, int_p, ctypes.c_int]
    fast.restype = ctypes.c_int
    hc.argtypes = [ctypes.c_void_p, ctypes.c_void_p, ctypes.c_char_p, int_p, ctypes.c_int, ctypes.c_int]
    hc.restype = ctypes.c_int
    sizeof_hc.argtypes = []
    sizeof_hc.restype = ctypes.c_int
    try:
        init, reset = held.LZ4_initStreamHC, held.LZ4_resetStreamHC_fast
        hc_next = lib.LZ4_compress_HC_continue_destSize
    except AttributeError:
        return _Liblz4(fast, hc, sizeof_hc())
    init.argtypes = [ctypes.c_void_p, ctypes.c_size_t]
    init.restype = ctypes.c_void_p
    reset.argtypes = [ctypes.c_void_p, ctypes.c_int]
    reset.restype = None
    hc_next.argtypes = [ctypes.c_void_p, ctypes.c_void_p, ctypes.c_char_p, int_p, ctypes.c_int]
    hc_next.restype = ctypes.c_int
    return _Liblz4(fast, hc, sizeof_hc(), init, reset, hc_next)


# The first bytes of formats whose data is compressed already (gzip, xz, bzip2, zstd, LZ4
# frame, zip and its kin, 7z, PNG, JPEG): LZ4HC can rarely shrink them, so a buffer that begins
# like one goes through the fast probe first, as after a window LZ4HC could not shrink.
COMPRESSED_MAGIC = (
    b"\x1f\x8b",
    b"\xfd7zXZ\x00",
    b"BZh",
    b"\x28\xb5\x2f\xfd",
    b"\x04\x22\x4d\x18",
    b"PK\x03\x04",
    b"7z\xbc\xaf\x27\x1c",
    b"\x89PNG\r\n\x1a\n",
    b"\xff\xd8\xff",
)


class _ThreadBuffers(threading.local):
    """What one thread reuses from call to call (ctypes objects cost more to make than to use)."""

    def __init__(self) -> None:
        self.consumed = ctypes.c_int()
        self.consumed_p = ctypes.pointer(self.consumed)
        self.out = ctypes.create_string_buffer(0)  # grown to the largest capacity asked for
        self.view = memoryview(self.out)  # copies the output out faster than ctypes would
        self.hc_state: ctypes.Array[ctypes.c_char] | None = None
        self.reused = False  # hc_state was initialised for reuse (LZ4_initStreamHC accepted it)
        self.data: bytes | None = None  # the input last seen, kept alive while its address is
        self.address = 0
        # LZ4HC's last window in this input buffer did not shrink. Per buffer, not per thread:
        # compress_file's buffers begin and are refilled at points its file's bytes set, so
        # which windows get the fast probe depends on the file alone, never on the schedule.
        self.failing = False


class NativeDestSize:
    """liblz4's own destSize functions; each thread keeps its buffers (and LZ4HC its state)."""

    algorithm = CompressionAlgorithm.LZ4
    max_ratio = LZ4_MAX_RATIO

    def __init__(self, lib: _Liblz4, level: int | None, *, reuse_state: bool = True) -> None:
        self.lib = lib
        self.level = level  # None: fast LZ4
        self.buffers = _ThreadBuffers()
        # liblz4's fast reset leaves the last call's tables in place, marked out of reach, so a
        # state is not cleared (256 KiB) for every pcluster; the streams are the same.
        self.reuse_state = reuse_state and lib.hc_reset is not None

    def __call__(self, data: bytes, start: int, end: int, capacity: int) -> tuple[bytes, int]:
        local = self.buffers
        if local.data is not data:
            # A pointer into `data` itself (no copy of the window), found once per input buffer.
            local.address = ctypes.cast(ctypes.c_char_p(data), ctypes.c_void_p).value or 0
            local.data = data
            # What the thread compressed before must not change the output: the flag starts
            # from the buffer itself, set when it begins like data compressed already.
            local.failing = data.startswith(COMPRESSED_MAGIC)
        out = local.out
        if len(out) < capacity:
            out = local.out = ctypes.create_string_buffer(capacity)
            local.view = memoryview(out)
        local.consumed.value = end - start
        lib = self.lib
        if self.level is None:
            n = lib.fast(local.address + start, out, local.consumed_p, capacity)
        else:
            n = 0
            if local.failing and end - start > capacity:
                n = self._fast_if_it_fails(local, start, capacity)
            if not n:
                state = local.hc_state
                if state is None:
                    # malloc'd by ctypes: aligned enough for liblz4's state (it asks for pointer alignment).
                    state = local.hc_state = ctypes.create_string_buffer(lib.state_size)
                    local.reused = self.reuse_state and lib.hc_init(state, len(state)) is not None
                if local.reused:
                    lib.hc_reset(state, self.level)
                    n = lib.hc_next(state, local.address + start, out, local.consumed_p, capacity)
                else:
                    n = lib.hc(state, local.address + start, out, local.consumed_p, capacity, self.level)
            local.failing = local.consumed.value <= capacity
        used = local.consumed.value
        if n <= 0 or used <= 0:
            raise AssertionError(f"LZ4 destSize compression failed ({n})")
        return local.view[:n].tobytes(), used

    def _fast_if_it_fails(self, local: _ThreadBuffers, start: int, capacity: int) -> int:
        """Fast LZ4's stream length if it fits no more input than `capacity` (`local.consumed`
        then says how much it fit), else 0.

        Run after a window LZ4HC could not shrink (already compressed data, say): when even fast
        LZ4 finds nothing in the next one, LZ4HC is spared it. What that costs is the rare window
        LZ4HC would have shrunk by a hair where fast LZ4 could not (4 KiB more on /usr/share).
        """
        wanted = local.consumed.value
        n: int = self.lib.fast(local.address + start, local.out, local.consumed_p, capacity)
        if local.consumed.value <= capacity:
            return n
        local.consumed.value = wanted
        return 0


class SearchDestSize:
    """Portable fallback: the longest prefix (found by bisection) whose LZ4 block fits."""

    algorithm = CompressionAlgorithm.LZ4
    max_ratio = LZ4_MAX_RATIO

    def __init__(self, level: int | None) -> None:
        self.level = level

    def compress(self, data: bytes) -> bytes:
        import lz4.block

        if self.level is None:
            out = lz4.block.compress(data, store_size=False)
        else:
            out = lz4.block.compress(data, mode="high_compression", compression=self.level, store_size=False)
        return bytes(out)

    def __call__(self, data: bytes, start: int, end: int, capacity: int) -> tuple[bytes, int]:
        # Grow the candidate from twice the capacity until it no longer fits, then bisect: the
        # work stays near the prefix's own length, incompressible or not.
        lo, hi = 0, end - start  # a prefix of lo bytes fits (vacuously for 0); none past hi is tried
        best = b""
        probe = min(2 * capacity, hi)
        while True:
            out = self.compress(data[start : start + probe])
            if len(out) > capacity:
                hi = probe
                break
            lo, best = probe, out
            if probe == hi:
                return best, lo
            probe = min(2 * probe, hi)
        while hi - lo > 1:
            mid = (lo + hi) // 2
            out = self.compress(data[start : start + mid])
            if len(out) <= capacity:
                lo, best = mid, out
            else:
                hi = mid
        if lo == 0:
            raise AssertionError(f"no LZ4 prefix fits {capacity} bytes")
        return best, lo


def dest_size_compressor(algorithm: str, level: int | None, *, native: bool = True) -> DestSizeCompressor:
    """The compressor for "lz4" or "lz4hc" at `level`; `native=False` forces the fallback."""
    try:
        import lz4.block  # noqa: F401 (both paths need it)
    except ImportError:
        raise InvalidInputError(f"compressing with {algorithm} needs the Python package lz4") from None
    hc_level = None if algorithm == "lz4" else (LZ4HC_DEFAULT_LEVEL if level is None else level)
    lib = _native() if native else None
    if lib is not None:
        return NativeDestSize(lib, hc_level)
    return SearchDestSize(hc_level)


def native_available() -> bool:
    return _native() is not None
