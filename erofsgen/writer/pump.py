"""File data copied on a worker thread, in the order the emitter needs the inline tails.

The emitter builds inode records (Python work) while the worker opens, copies and reads files
(system calls, which release the GIL), so the two overlap on two cores. Tails come back in
batches through a bounded queue: memory stays at a few batches of tails, whatever the tree.
"""

from __future__ import annotations

import contextlib
import queue
import sys
import threading
from collections.abc import Iterator, Sequence

from ..model import File
from .plan import PlannedInode
from .sources import FileReader

BATCH = 64  # files per hand-over: fewer queue operations
DEPTH = 16  # batches in flight
SWITCH_INTERVAL = 0.0001  # seconds; let a thread back from a syscall get the GIL promptly


def copy_file(plan: PlannedInode, fd: int, block_size: int) -> bytes:
    """Copy one file's whole blocks into the image; return its inline tail."""
    node = plan.node
    assert isinstance(node, File)
    with FileReader(node, plan.path) as reader:
        if plan.nblocks:
            full = plan.size - plan.tail_size if plan.tail_size else plan.size
            reader.copy_to(fd, plan.startblk * block_size, full)
        tail = reader.read(plan.tail_size) if plan.tail_size else b""
        reader.finish()
    return tail


class DataPump:
    """Runs `copy_file` over the jobs on a worker thread; `tails()` yields results in job order."""

    def __init__(self, jobs: Sequence[PlannedInode], fd: int, block_size: int) -> None:
        self.jobs = jobs
        self.fd = fd
        self.block_size = block_size
        self.results: queue.Queue[list[bytes] | BaseException] = queue.Queue(maxsize=DEPTH)
        self.stopping = threading.Event()
        self.old_interval = sys.getswitchinterval()
        sys.setswitchinterval(SWITCH_INTERVAL)
        self.thread = threading.Thread(target=self._run, name="erofsgen-data", daemon=True)
        self.thread.start()

    def _run(self) -> None:
        try:
            for start in range(0, len(self.jobs), BATCH):
                if self.stopping.is_set():
                    return
                batch = [copy_file(job, self.fd, self.block_size) for job in self.jobs[start : start + BATCH]]
                self.results.put(batch)
        except BaseException as exc:  # handed to the emitter at the file that failed
            self.results.put(exc)

    def tails(self) -> Iterator[bytes]:
        """Each job's tail, in order, once its data is in the image; re-raises the worker's error."""
        remaining = len(self.jobs)
        while remaining:
            item = self.results.get()
            if isinstance(item, BaseException):
                raise item
            remaining -= len(item)
            yield from item

    def close(self) -> None:
        """Stop the worker (it may be blocked on a full queue) and wait for it."""
        self.stopping.set()
        while self.thread.is_alive():
            with contextlib.suppress(queue.Empty):
                self.results.get(timeout=0.05)
        self.thread.join()
        sys.setswitchinterval(self.old_interval)
