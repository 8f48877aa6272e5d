"""A one-line progress display on stderr, shown only to a person watching a terminal."""

from __future__ import annotations

import sys
import time
from collections.abc import Callable
from types import TracebackType
from typing import TextIO

UPDATE_INTERVAL = 0.1  # seconds between redraws: ~10 updates a second
BAR_WIDTH = 30


class Progress:
    """Draws scan and write progress on `stream` if it is a TTY and not quiet; else does nothing.

    Use as a context manager so the line is cleared however the command ends.
    """

    def __init__(
        self,
        *,
        quiet: bool = False,
        stream: TextIO | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.stream = stream if stream is not None else sys.stderr
        self._clock = clock
        self.enabled = not quiet and self.stream.isatty()
        self._last = 0.0
        self._drawn = False

    def __enter__(self) -> Progress:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.clear()

    def scanned(self, entries: int) -> None:
        """Report how many source entries have been scanned so far."""
        if self._due(final=False):
            self._draw(f"scanning: {entries} entries")

    def written(self, done: int, total: int) -> None:
        """Report bytes of file data written out of `total` (a `ProgressCallback`)."""
        if not self._due(final=done >= total):
            return
        fraction = done / total if total else 1.0
        filled = int(fraction * BAR_WIDTH)
        bar = "#" * filled + "-" * (BAR_WIDTH - filled)
        self._draw(f"[{bar}] {fraction:4.0%} {_size(done)} / {_size(total)}")

    def clear(self) -> None:
        """Erase the line, leaving the cursor where the display started."""
        if self._drawn:
            self.stream.write("\r\x1b[K")
            self.stream.flush()
            self._drawn = False

    def _due(self, *, final: bool) -> bool:
        if not self.enabled:
            return False
        now = self._clock()
        if not final and now - self._last < UPDATE_INTERVAL:
            return False
        self._last = now
        return True

    def _draw(self, line: str) -> None:
        self.stream.write("\r\x1b[K" + line)
        self.stream.flush()
        self._drawn = True


def _size(count: int) -> str:
    if count < 1024:
        return f"{count} B"
    value = count / 1024
    for unit in ("KiB", "MiB", "GiB"):
        if value < 1024:
            return f"{value:.1f} {unit}"
        value /= 1024
    return f"{value:.1f} TiB"
