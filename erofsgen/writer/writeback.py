"""Early writeback: the image's finished data starts for the disk while the rest is built.

A synced image otherwise waits at the end for all of its dirty pages, hundreds of megabytes that
the kernel has had no reason to write yet (they are below its dirty thresholds). Asking it to
start writing each finished stretch (sync_file_range(2) with SYNC_FILE_RANGE_WRITE, which does
not wait) leaves the final fsync only the last stretches and the metadata. It is advice: where
the call is missing or fails, the fsync still does all the work, as before.
"""

from __future__ import annotations

import ctypes
import sys
from collections.abc import Callable

STEP = 16 << 20  # bytes finished before a stretch is handed to the kernel
_SYNC_FILE_RANGE_WRITE = 2


def _sync_file_range() -> Callable[[int, int, int, int], int] | None:
    if not sys.platform.startswith("linux"):
        return None
    try:
        function = ctypes.CDLL(None, use_errno=True).sync_file_range
    except (OSError, AttributeError):
        return None
    function.argtypes = [ctypes.c_int, ctypes.c_int64, ctypes.c_int64, ctypes.c_uint]
    function.restype = ctypes.c_int
    call: Callable[[int, int, int, int], int] = function
    return call


_call = _sync_file_range()


def start_writeback(fd: int, offset: int, length: int) -> None:
    """Ask the kernel to start writing `length` bytes of `fd` from `offset`; do not wait."""
    if _call is not None:
        _call(fd, offset, length, _SYNC_FILE_RANGE_WRITE)  # advice: a failure changes nothing


class Writeback:
    """Hands an image's finished data to the kernel in stretches of `STEP` bytes, in order."""

    def __init__(self, fd: int, start: int = 0) -> None:
        self.fd = fd
        self.started = start  # bytes below this were handed over (or need not be)

    def finished(self, upto: int) -> None:
        """The data below `upto` is final."""
        if upto - self.started >= STEP:
            start_writeback(self.fd, self.started, upto - self.started)
            self.started = upto
