"""Copying file data on a second thread while the emitter builds metadata records.

The copier walks the files in the order the emitter will ask for them (metadata order), has each
stored form write its whole blocks, and hands back the inline tails in batches. The emitter takes
them in the same order, so what is written, and which error is reported first, is exactly what
the emitter would have done alone; only the time overlaps. copy_file_range, open and pread
release the GIL, so the copy runs beside the emitter's Python work.
"""

from __future__ import annotations

import threading
from collections import deque
from collections.abc import Sequence
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from .plan import PlannedInode

BATCH = 64  # files per hand-over: keeps locking per file negligible
AHEAD = 64  # batches the copier may run ahead (bounds the tails held in memory)


class Copier:
    """Writes the data of `plans` (in that order) on a worker thread; `tail()` returns each tail."""

    def __init__(self, plans: Sequence[PlannedInode], fd: int, block_size: int) -> None:
        self.plans = plans
        self.fd = fd
        self.bs = block_size
        self.ready: deque[list[bytes | BaseException]] = deque()
        self.current: list[bytes | BaseException] = []
        self.index = 0  # next result of `current` to hand out
        self.cond = threading.Condition()
        self.stopped = False
        self.thread = threading.Thread(target=self._work, name="erofsgen-copy", daemon=True)
        self.thread.start()

    def __enter__(self) -> Copier:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        """Stop the worker (after the file it is copying) and wait for it."""
        with self.cond:
            self.stopped = True
            self.cond.notify_all()
        self.thread.join()

    def _work(self) -> None:
        batch: list[bytes | BaseException] = []
        for plan in self.plans:
            try:
                batch.append(plan.data.write(self.fd, plan, self.bs))
            except BaseException as exc:  # handed over in order; nothing after it is copied
                batch.append(exc)
                self._hand_over(batch)
                return
            if len(batch) == BATCH:
                if not self._hand_over(batch):
                    return
                batch = []
        if batch:
            self._hand_over(batch)

    def _hand_over(self, batch: list[bytes | BaseException]) -> bool:
        """Queue a batch, waiting while the emitter is far behind; False once stopped."""
        with self.cond:
            while len(self.ready) >= AHEAD and not self.stopped:
                self.cond.wait()
            if self.stopped:
                return False
            self.ready.append(batch)
            self.cond.notify_all()
            return True

    def tail(self) -> bytes:
        """The next file's inline tail, once its blocks are in the image; raises its error."""
        if self.index == len(self.current):
            with self.cond:
                while not self.ready:
                    if not self.thread.is_alive():
                        raise AssertionError("the copier stopped before the last file")
                    self.cond.wait(0.1)
                self.current = self.ready.popleft()
                self.cond.notify_all()
            self.index = 0
        result = self.current[self.index]
        self.index += 1
        if isinstance(result, BaseException):
            raise result
        return result
