"""Advice to the kernel about finished data: write the image's back early, free the spool's.

Early writeback: the image's finished data starts for the disk while the rest is built.

A synced image otherwise waits at the end for all of its dirty pages, hundreds of megabytes that
the kernel has had no reason to write yet (they are below its dirty thresholds). Asking it to
start writing each finished stretch (sync_file_range(2) with SYNC_FILE_RANGE_WRITE, which does
not wait) leaves the final fsync only the last stretches and the metadata. It is advice: where
the call is missing or fails, the fsync still does all the work, as before.

Spool holes: pclusters cut by the compression processes wait in the spool (an unnamed file in
$TMPDIR) until the image has them; then their range is punched out (fallocate(2) with
FALLOC_FL_PUNCH_HOLE), so the spool holds only what waits, not the whole compressed tree.
Where that fails, the space comes back when the spool is closed, as before.
"""

from __future__ import annotations

import ctypes
import sys
from collections.abc import Callable

STEP = 16 << 20  # bytes finished before a stretch is handed to the kernel
_SYNC_FILE_RANGE_WRITE = 2
_FALLOC_FL_KEEP_SIZE = 1
_FALLOC_FL_PUNCH_HOLE = 2

Call = Callable[[int, int, int, int], int]


def _libc(name: str, *argtypes: type[ctypes._SimpleCData[int]]) -> Call | None:
    """A C library function of Linux, or None where there is none."""
    if not sys.platform.startswith("linux"):
        return None
    try:
        function = getattr(ctypes.CDLL(None, use_errno=True), name)
    except (OSError, AttributeError):
        return None
    function.argtypes = list(argtypes)
    function.restype = ctypes.c_int
    call: Call = function
    return call


# sync_file_range(fd, offset, nbytes, flags) and fallocate(fd, mode, offset, len)
_sync_file_range = _libc("sync_file_range", ctypes.c_int, ctypes.c_int64, ctypes.c_int64, ctypes.c_uint)
_fallocate = _libc("fallocate", ctypes.c_int, ctypes.c_int, ctypes.c_int64, ctypes.c_int64)


def start_writeback(fd: int, offset: int, length: int) -> None:
    """Ask the kernel to start writing `length` bytes of `fd` from `offset`; do not wait."""
    if _sync_file_range is not None:
        _sync_file_range(fd, offset, length, _SYNC_FILE_RANGE_WRITE)  # advice: a failure changes nothing


def punch_hole(fd: int, offset: int, length: int) -> None:
    """Free `length` bytes of `fd` from `offset` (they read as zeros after); the size stays."""
    if _fallocate is not None and length > 0:
        _fallocate(fd, _FALLOC_FL_PUNCH_HOLE | _FALLOC_FL_KEEP_SIZE, offset, length)


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
