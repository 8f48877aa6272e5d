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
DEPTH = 8  # batches in flight per worker
WORKERS = 2  # system calls of two workers overlap each other and the emitter
SWITCH_INTERVAL = 0.0001  # seconds; let a thread back from a syscall get the GIL promptly


def copy_file(plan: PlannedInode, fd: int, block_size: int) -> bytes:
    """Copy one file's whole blocks into the image; return its inline tail."""
    node = plan.node
    assert isinstance(node, File)
    with FileReader(node, plan.path, plan.size) as reader:
        if plan.nblocks:
            reader.copy_to(fd, plan.startblk * block_size, plan.block_bytes)
        tail = reader.read(plan.tail_size) if plan.tail_size else b""
        reader.finish()
    return tail


class DataPump:
    """Runs `copy_file` over the jobs on worker threads; `tails()` yields results in job order.

    Worker k of n takes batches k, k + n, k + 2n, ... and has its own queue, so reading the
    queues in turn gives the tails back in job order while the workers' system calls overlap.
    """

    def __init__(
        self, jobs: Sequence[PlannedInode], fd: int, block_size: int, workers: int = WORKERS
    ) -> None:
        self.jobs = jobs
        self.fd = fd
        self.block_size = block_size
        self.stopping = threading.Event()
        self.queues: list[queue.Queue[list[bytes] | BaseException]] = [
            queue.Queue(maxsize=DEPTH) for _ in range(workers)
        ]
        self.old_interval = sys.getswitchinterval()
        sys.setswitchinterval(SWITCH_INTERVAL)
        self.threads = [
            threading.Thread(target=self._run, args=(k,), name=f"erofsgen-data-{k}", daemon=True)
            for k in range(workers)
        ]
        for thread in self.threads:
            thread.start()

    def _run(self, k: int) -> None:
        results = self.queues[k]
        try:
            for start in range(k * BATCH, len(self.jobs), len(self.queues) * BATCH):
                batch = []
                for job in self.jobs[start : start + BATCH]:
                    if self.stopping.is_set():
                        return
                    batch.append(copy_file(job, self.fd, self.block_size))
                results.put(batch)
        except BaseException as exc:  # handed to the emitter at the batch that failed
            results.put(exc)

    def tails(self) -> Iterator[bytes]:
        """Each job's tail, in order, once its data is in the image; re-raises a worker's error."""
        remaining = len(self.jobs)
        turn = 0
        while remaining:
            item = self.queues[turn].get()
            if isinstance(item, BaseException):
                raise item
            turn = (turn + 1) % len(self.queues)
            remaining -= len(item)
            yield from item

    def __enter__(self) -> DataPump:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        """Stop the workers (they may be blocked on full queues) and wait for them."""
        self.stopping.set()
        for thread, results in zip(self.threads, self.queues, strict=True):
            while thread.is_alive():
                with contextlib.suppress(queue.Empty):
                    results.get(timeout=0.05)
            thread.join()
        sys.setswitchinterval(self.old_interval)
