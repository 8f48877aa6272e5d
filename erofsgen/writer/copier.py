"""Copying the early files' data on a second thread while the tree is planned and emitted.

The early files' blocks lie at the start of the data area, in inode order, and their addresses
and tails are fixed before planning (plan.begin_plan), so the copier starts as soon as the tree
is collected. It has each stored form write its whole blocks and keeps the inline tails; the
emitter takes a file's tail (or its error) when it writes that file's record. A failure stops
the copier, and every later file in its order reports that failure, so the error raised does
not depend on how far the copier had got. copy_file_range, open and pread release the GIL, so
the copy runs beside the main thread's Python work. The tails are held until their records are
written: at most one block per early file.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from .plan import PlannedInode

BATCH = 64  # files per progress report: keeps locking per file negligible
# After a failure elsewhere, how long to wait for the file being copied (a stuck copy must not
# keep an interrupted build from ending; the thread holds its own descriptor of the image).
STOP_WAIT = 5.0
# Tests set this to delay the copier; it is called with the index of the file about to be copied.
file_hook: Callable[[int], None] | None = None


class Copier:
    """Writes the data of `plans` (in that order) on a worker thread; `tail(i)` returns file i's."""

    def __init__(
        self,
        plans: Sequence[PlannedInode],
        fd: int,
        block_size: int,
        copied: Callable[[int], None] | None = None,
    ) -> None:
        self.plans = plans
        self.fd = os.dup(fd)  # closed by the thread: valid even if it outlives an aborted build
        self.bs = block_size
        self.copied = copied  # told the end of the data written so far, in bytes
        self.tails: list[bytes | None] = []
        self.done = 0  # files whose tails may be taken
        self.error: BaseException | None = None  # the failure of file `done`, if any
        self.cond = threading.Condition()
        self.stopped = False
        self.stop = threading.Event()  # set on a failure: ends even a long copy at its next chunk
        self.thread = threading.Thread(target=self._work, name="erofsgen-copy", daemon=True)
        self.thread.start()

    def __enter__(self) -> Copier:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, *exc: object) -> None:
        self.close(failed=exc_type is not None)

    def close(self, *, failed: bool = False) -> None:
        """Stop the worker: after the file it is copying, or after a failure at the copy's next
        chunk; wait for it (bounded after a failure)."""
        if failed:
            self.stop.set()
        with self.cond:
            self.stopped = True
            self.cond.notify_all()
        self.thread.join(STOP_WAIT if failed else None)

    def _work(self) -> None:
        try:
            self._copy_all()
        finally:
            os.close(self.fd)

    def _copy_all(self) -> None:
        tails = self.tails
        bs = self.bs
        for index, plan in enumerate(self.plans):
            if self.stopped:
                return
            if file_hook is not None:
                file_hook(index)
            try:
                tails.append(plan.data.write(self.fd, plan, bs, self.stop))
            except BaseException as exc:  # every later file reports it; nothing after it is copied
                self._publish(exc)
                return
            if len(tails) % BATCH == 0:
                self._publish(None, (plan.startblk + plan.nblocks) * bs)
        last = self.plans[-1] if self.plans else None
        self._publish(None, (last.startblk + last.nblocks) * bs if last is not None else None)

    def _publish(self, error: BaseException | None, end: int | None = None) -> None:
        with self.cond:
            self.done = len(self.tails)
            self.error = error
            self.cond.notify_all()
        if end is not None and self.copied is not None:
            self.copied(end)

    def tail(self, index: int) -> bytes:
        """File `index`'s inline tail, once its blocks are in the image; raises the first failure."""
        if index >= self.done:
            with self.cond:
                while index >= self.done and self.error is None:
                    if not self.thread.is_alive() and index >= self.done:
                        raise AssertionError("the copier stopped before the last file")
                    self.cond.wait(0.1)
                if index >= self.done:
                    assert self.error is not None
                    raise self.error
        tail = self.tails[index]
        self.tails[index] = None
        assert tail is not None
        return tail
