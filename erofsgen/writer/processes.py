"""Compression in forked processes: files are cut into pclusters without the interpreter lock.

A worker thread takes the interpreter lock back after every pcluster and every read; while the
main thread plans or writes in Python it hands the lock over only every switch interval, so
the threads wait for it rather than compress (LZ4, whose pclusters take microseconds, is bound
by that more than by the cores). Processes each have their own interpreter. The data stage's
worker threads hand a process a batch of path-backed files and wait on its pipe; the process
reads each file itself, cuts it with the same `compress_file`, writes the pclusters into the
data stage's spool at the offsets the main thread reserved, and sends back each file's extents.
The bytes are those the threads would have made.

Processes are forked only from a single-threaded writer (a fork copies one thread, and the
locks others held) and only where `os.fork` exists; otherwise, and for streams, threads do the
work. A process ignores the terminal's Ctrl-C (the writer stops it), dies with the writer
(PR_SET_PDEATHSIG on Linux), and exits when its request pipe closes.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import pickle
import queue
import signal
import struct
import sys
import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from ..errors import ErofsgenError, InvalidInputError
from ..format.constants import CompressionAlgorithm
from ..model import PathData
from .compressed import CompressedData, OutputBudget, compress_file, spool_write
from .filecopy import FileReader
from .lz4dest import DestSizeCompressor
from .stored import NO_DATA, Stored

_LENGTH = struct.Struct("<Q")
_PR_SET_PDEATHSIG = 1

# One file to cut: its source path, size, image path (for messages; b"" when cut ahead of
# planning, which names the file itself) and spool offset.
Job = tuple[bytes | str, int, bytes, int]
# What comes back for it: ("cut", CompressedData.cut_state()), or ("invalid", (message, path))
# or ("error", text). Every file of a batch gets one; CompressionProcesses.cut decides.
Reply = tuple[str, Any]


def available() -> bool:
    """Whether processes can be forked safely now: `os.fork` exists and no other thread runs."""
    return hasattr(os, "fork") and threading.active_count() == 1


@dataclass(frozen=True, slots=True)
class FormSettings:
    """What every file cut by one data stage shares (CompressedData's keyword arguments)."""

    compact: bool
    pcluster: int
    ztail: bool
    max_extent: int | None
    algorithm: CompressionAlgorithm

    def form(self, size: int, spool_fd: int, offset: int, plain: Stored = NO_DATA) -> CompressedData:
        """A file's form, its pclusters in the spool from `offset`, `plain` if compression fails."""
        return CompressedData(
            plain, size, spool_fd, offset, compact=self.compact, pcluster=self.pcluster,
            ztail=self.ztail, max_extent=self.max_extent, algorithm=self.algorithm,
        )  # fmt: skip


@dataclass(slots=True)
class _Process:
    pid: int
    requests: int  # the writer's ends of the two pipes
    replies: int


class CompressionProcesses:
    """`count` forked processes that cut files into the spool `spool_fd`."""

    def __init__(
        self,
        count: int,
        compressor: DestSizeCompressor,
        settings: FormSettings,
        block_size: int,
        spool_fd: int,
    ) -> None:
        self.idle: queue.SimpleQueue[_Process] = queue.SimpleQueue()
        self.processes: list[_Process] = []
        serve = _Server(compressor, settings, block_size, spool_fd)
        try:
            for _ in range(count):
                self.processes.append(self._fork(serve))
        except BaseException:  # no more processes (EAGAIN, ENOMEM): none at all
            self.kill()
            self.close()
            raise
        for process in self.processes:
            self.idle.put(process)

    def _fork(self, serve: _Server) -> _Process:
        requests_read, requests_write = os.pipe()
        replies_read, replies_write = os.pipe()
        inherited = [fd for p in self.processes for fd in (p.requests, p.replies)]
        try:
            pid = os.fork()
        except BaseException:
            for fd in (requests_read, requests_write, replies_read, replies_write):
                os.close(fd)
            raise
        if pid == 0:  # the process: never returns into the writer's code
            status = 1
            try:
                for fd in (requests_write, replies_read, *inherited):
                    os.close(fd)
                serve(requests_read, replies_write)
                status = 0
            finally:
                os._exit(status)
        os.close(requests_read)
        os.close(replies_write)
        return _Process(pid, requests_write, replies_read)

    def cut(self, items: list[tuple[CompressedData | CutAhead, Job]]) -> None:
        """Cut the files in order, in one process. A form's failure is raised (the first, as the
        threads would); a file cut ahead keeps its own until the writer asks for the file."""
        process = self.idle.get()
        try:
            _send(process.requests, [job for _target, job in items])
            replies: list[Reply] = _receive(process.replies)
        except (OSError, EOFError):
            raise ErofsgenError(f"a compression process ({process.pid}) stopped unexpectedly") from None
        finally:
            self.idle.put(process)
        for (target, _job), reply in zip(items, replies, strict=True):
            if isinstance(target, CutAhead):
                target.reply = reply
            elif reply[0] == "cut":
                target.take_cut(reply[1])
            else:
                raise _failure(reply)

    def kill(self) -> None:
        """Stop every process at once (the build failed): a thread waiting on one sees its end."""
        for process in self.processes:
            with contextlib.suppress(ProcessLookupError):
                os.kill(process.pid, signal.SIGKILL)

    def close(self) -> None:
        """End the processes once no thread uses them: an idle one exits when its requests end."""
        for process in self.processes:
            os.close(process.requests)
        for process in self.processes:
            os.waitpid(process.pid, 0)
            os.close(process.replies)
        self.processes = []


class CutAhead:
    """A file given to the processes while the directory is still being scanned, before the
    writer asks for it (DataStage.cut_ahead): its room in the spool, its job, then its cut."""

    __slots__ = ("job", "offset", "path", "reply")

    def __init__(self, offset: int) -> None:
        self.offset = offset
        self.job = -1  # the data stage's job that cuts it, once handed over
        self.reply: Reply | None = None  # set by the thread that waited on the process
        self.path = ""  # the file's path in the image, once the writer asks for it

    def claim(self, form: CompressedData) -> None:
        """Give `form` (whose spool room is this one's) the cut, or raise its failure."""
        assert self.reply is not None, "claimed before its job finished"
        kind, value = self.reply
        if kind == "cut":
            form.take_cut(value)
            return
        if kind == "invalid":
            raise InvalidInputError(value[0], self.path)  # the scan did not know the image path
        raise _failure(self.reply)


def _failure(reply: Reply) -> ErofsgenError:
    kind, value = reply
    if kind == "invalid":
        return InvalidInputError(*value)
    return ErofsgenError(f"compression failed: {value}")


class _Server:
    """The process's side: requests in, cuts out, until the requests end."""

    def __init__(
        self, compressor: DestSizeCompressor, settings: FormSettings, block_size: int, spool_fd: int
    ) -> None:
        self.compressor = compressor
        self.settings = settings
        self.block_size = block_size
        self.spool_fd = spool_fd

    def __call__(self, requests: int, replies: int) -> None:
        signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C reaches the writer, which ends us
        for signum in (signal.SIGTERM, signal.SIGHUP):
            signal.signal(signum, signal.SIG_DFL)  # not the writer's handlers, which raise
        _die_with_parent()
        never = threading.Event()
        while True:
            try:
                jobs: list[Job] = _receive(requests)
            except EOFError:
                return
            # Every file gets its reply: a failure is the build's only if the writer reaches
            # that file (a file cut ahead may be left out of the image after all).
            _send(replies, [self._cut(job, never) for job in jobs])

    def _cut(self, job: Job, never: threading.Event) -> Reply:
        path, size, image_path, offset = job
        form = self.settings.form(size, self.spool_fd, offset)
        form.budget = OutputBudget(0)  # every piece to the spool, where the writer reads it
        try:
            with FileReader(PathData(path, size), image_path, size, never) as reader:
                compress_file(form, reader.read, self.compressor, self.block_size, spool_write, never)
                reader.finish()
        except InvalidInputError as exc:
            return "invalid", (exc.message, exc.path)
        except Exception as exc:  # reported by the writer, which stops the build
            return "error", f"{type(exc).__name__}: {exc}"
        return "cut", form.cut_state()


def _die_with_parent() -> None:
    """Ask Linux to kill this process when the writer ends, even by SIGKILL."""
    if not sys.platform.startswith("linux"):
        return
    parent = os.getppid()
    try:
        prctl: Callable[..., int] = ctypes.CDLL(None, use_errno=True).prctl
        prctl(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
    except (OSError, AttributeError):
        return
    if os.getppid() != parent:  # the writer ended before the request took effect
        os._exit(1)


def _send(fd: int, message: object) -> None:
    data = pickle.dumps(message, protocol=pickle.HIGHEST_PROTOCOL)
    view = memoryview(_LENGTH.pack(len(data)) + data)
    while view:
        view = view[os.write(fd, view) :]


def _receive(fd: int) -> Any:
    (length,) = _LENGTH.unpack(_read_exactly(fd, _LENGTH.size))
    return pickle.loads(_read_exactly(fd, length))


def _read_exactly(fd: int, n: int) -> bytes:
    parts = []
    while n:
        part = os.read(fd, min(n, 1 << 20))
        if not part:
            raise EOFError
        parts.append(part)
        n -= len(part)
    return b"".join(parts)
