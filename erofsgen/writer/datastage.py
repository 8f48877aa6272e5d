"""The data stage: between the tree and the plan, each inode's stored form is decided once.

Plain files only note their source (they are copied kernel-side at emit). Data that must be
examined before planning (streams, which can be read only once; chunked files, whose chunks
are hashed for dedup (chunks.py); compressed files, cut into pclusters (compressed.py)) is
read exactly once, by worker threads, while the main thread goes on collecting and planning.
`settle()` waits for that work, in submission order, so the first error reported and
everything decided do not depend on which worker ran when.

Workers write only to places reserved for them on the main thread (spool offsets assigned in
submission order), so even the spool's bytes are independent of thread timing.
"""

from __future__ import annotations

import os
import tempfile
import threading
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from typing import TYPE_CHECKING, BinaryIO

from ..errors import InvalidInputError
from ..model import (
    BytesData,
    DataSource,
    Device,
    Directory,
    EntryData,
    File,
    Node,
    PathData,
    StreamData,
    Symlink,
)
from .chunks import ChunkedData, ChunkSession, hash_chunks
from .codecs import dest_size_compressor
from .compressed import CompressedData, OutputBudget, compress_file, spool_reader, spool_write
from .dedupe import share_pclusters
from .dirs import shape_directory
from .filecopy import FileReader
from .fragments import FragmentedData, FragmentTable, join_segments
from .lz4dest import DestSizeCompressor
from .processes import CompressionProcesses, CutAhead, FormSettings, Job
from .processes import available as processes_available
from .stored import (
    NO_DATA,
    DeviceNumber,
    DirectoryData,
    InlineBytes,
    PlainData,
    SpooledData,
    Stored,
    SymlinkTarget,
)
from .validate import show

if TYPE_CHECKING:
    from .options import WriteOptions
    from .plan import PlannedInode

WORKERS = 2  # threads for examined kinds (more only contend for the GIL); compression processes: every cpu
# Chunked and small compressed files are handed to the workers in batches: one job per file
# costs more in thread hand-overs than hashing a small file takes. A batch ends at BATCH_FILES
# files or at about BATCH_BYTES of hashing's worth of work (compressing a byte costs far more:
# its batches stay small, so the workers share the last ones evenly).
BATCH_FILES = 32
BATCH_BYTES = 8 << 20
COMPRESS_BATCH_BYTES = 1 << 20  # a compressed file this large is a job of its own
SPOOL_CHUNK = 1 << 20
PACKED_SEGMENT = 16 << 20  # the packed inode's data is compressed in parallel pieces this large
# Streamed files' pclusters kept in memory until the emitter writes them (compressed.OutputBudget).
STREAM_BUDGET = 32 << 20
_spool_write = spool_write  # the threads' writes to the spool; tests wrap it
USE_PROCESSES = True  # tests turn it off to run the threads' path
# Tests set this to delay or reorder worker jobs; it is called with the job's index.
job_hook: Callable[[int], None] | None = None


class DataStage:
    """Turns tree nodes into stored forms; owns the workers and the spool until closed."""

    def __init__(
        self,
        block_size: int,
        workers: int | None = None,
        chunks: ChunkSession | None = None,
        compressor: DestSizeCompressor | None = None,
        compact_indexes: bool = True,
        pcluster_size: int | None = None,
        ztailpacking: bool = False,
        max_extent_bytes: int | None = None,
        fragments: int = 0,
        dedupe: bool = False,
        packed_pcluster_size: int | None = None,
    ) -> None:
        self.block_size = block_size
        self.workers = workers or WORKERS
        self.chosen_workers = workers  # None: compression processes take every usable cpu
        self.chunks = chunks  # regular files of a block or more are chunked into it
        self.compressor = compressor  # regular files over a block are compressed with it
        self.compact_indexes = compact_indexes
        self.pcluster_size = pcluster_size or block_size
        self.ztailpacking = ztailpacking  # compressed files' last pclusters may go inline
        self.max_extent_bytes = max_extent_bytes
        self.fragments = fragments  # 1: file tails go to the packed inode, 2: whole files
        self.packed_pcluster = packed_pcluster_size or self.pcluster_size  # the packed inode's
        self.dedupe = dedupe  # identical pclusters are shared (dedupe.py)
        self.extended: list[tuple[FragmentedData, PlannedInode]] = []  # forms of the two above
        self.shared_pclusters = False  # set by finish_compression
        # Without fragments and dedupe a compressed file's blocks depend on that file alone: it
        # is placed and written as soon as it is cut, in file order (plan.place_streamed).
        self.streaming = compressor is not None and not fragments and not dedupe
        self.budget = OutputBudget(STREAM_BUDGET) if self.streaming else None
        self.batch_forms: list[CompressedData | CutAhead] = []  # compressed files in the batch
        self.waited = 0  # jobs before this one have finished (wait_for)
        self.batch: list[tuple[Callable[..., None], tuple[object, ...]]] = []  # jobs not yet handed over
        self.batch_work = 0.0  # how full the batch is: it goes to a worker at 1
        self.jobs: list[Future[None]] = []
        self.executor: ThreadPoolExecutor | None = None
        self.spool: BinaryIO | None = None
        self.spool_end = 0
        self.abort = threading.Event()
        # Streamed path-backed files are cut in forked processes where that is safe (processes.py).
        self.use_processes = self.streaming and USE_PROCESSES
        self.processes: CompressionProcesses | None = None
        self.ahead: dict[int, tuple[EntryData | PathData, CutAhead]] = {}  # files cut ahead, by id
        self.options: WriteOptions | None = None  # what stage_for made it from
        self.served = False  # write_image took it (a stage serves one image)

    def __enter__(self) -> DataStage:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def stored_form(self, node: Node, plan: PlannedInode) -> Stored:
        """The stored form of `node`'s data (the one place that dispatches on model types)."""
        if isinstance(node, File):
            data = node.data
            if self.chunks is not None and data.size >= self.chunks.min_file_size:
                return self._chunked(data, plan, self.chunks)
            small = data.size <= self.block_size
            if self.compressor is not None and (
                not small or (data.size and (self.ztailpacking or self.fragments))
            ):
                # A file of a block or less cannot save a block: it stays plain (or inline),
                # unless its compressed form may go inline, smaller than the file, or it can be
                # a fragment.
                return self._compressed(data, plan, self.compressor)
            if isinstance(data, StreamData):
                return self._spool(data, plan)
            if isinstance(data, BytesData):
                return InlineBytes(data.data)
            return PlainData(data)
        if isinstance(node, Directory):
            return DirectoryData(shape_directory(list(node.children), self.block_size))
        if isinstance(node, Symlink):
            return SymlinkTarget(node.target)
        if isinstance(node, Device):
            return DeviceNumber(node.major, node.minor)
        return NO_DATA

    def _spool(self, data: StreamData, plan: PlannedInode) -> SpooledData:
        fd, offset = self._reserve(data.size)
        self._submit(_consume_stream, data, plan, fd, offset)
        return SpooledData(fd, offset, data.size)

    def _compressed(self, data: DataSource, plan: PlannedInode, compressor: DestSizeCompressor) -> Stored:
        size = data.size
        plain: Stored
        if self.ahead:
            found = self.ahead.pop(id(data), None)
            if found is not None and found[0] is data:
                return self._claim(data, plan, found[1])
        raw = -1  # a stream's spool offset: it is compressed from there, and kept there if plain
        if isinstance(data, StreamData):
            _fd, raw = self._reserve(size)
            plain = SpooledData(_fd, raw, size)
        elif isinstance(data, BytesData):
            plain = InlineBytes(data.data)
        else:
            plain = PlainData(data)
        # Room for the pclusters: every extent but the last holds at least a block of data.
        fd, offset = self._reserve(-(-size // self.block_size) * self.block_size)
        form: CompressedData
        if self.fragments or self.dedupe:
            # Fragments win over inline tails, as in mkfs.erofs; shared pclusters need full
            # indexes, which FragmentedData writes without ztailpacking.
            form = FragmentedData(
                plain, size, fd, offset, compact=self.compact_indexes, pcluster=self.pcluster_size,
                fragments=self.fragments, max_extent=self.max_extent_bytes,
                algorithm=compressor.algorithm,
            )  # fmt: skip
            self.extended.append((form, plan))
        else:
            form = self._settings().form(size, fd, offset, plain)
            form.budget = self.budget
        job: Callable[..., None] = _compress
        args: tuple[object, ...] = (data, plan, form, raw, compressor, self.block_size)
        processes = self._processes(data, form)
        if processes is not None:
            assert isinstance(data, EntryData | PathData)
            job, args = _cut_elsewhere, (processes, [(form, (data.path, size, plan.path, form.spool_offset))])
        if raw < 0 and size < COMPRESS_BATCH_BYTES:
            self.batch_forms.append(form)
            self._defer(size / COMPRESS_BATCH_BYTES, job, args)
        else:
            form.job = self._submit(job, *args)
        return form

    def _settings(self) -> FormSettings:
        """What every streamed compressed form of this stage shares, here or in a process."""
        assert self.compressor is not None
        return FormSettings(
            self.compact_indexes,
            self.pcluster_size,
            self.ztailpacking,
            self.max_extent_bytes,
            self.compressor.algorithm,
        )

    def _processes(self, data: DataSource, form: CompressedData) -> CompressionProcesses | None:
        """The processes that cut `form`, if any (streamed and path-backed); None: threads."""
        if form.budget is None or type(data) not in (EntryData, PathData):
            return None
        return self._start_processes()

    def _start_processes(self) -> CompressionProcesses | None:
        """The compression processes, forked at the first file they can take, if they can be."""
        if self.processes is None and self.use_processes:
            self.use_processes = False  # one try: later files go where the first went
            if processes_available():
                assert self.compressor is not None
                spool_fd = self._reserve(0)[0]  # inherited by the processes
                count = self.chosen_workers or usable_cpus()
                try:
                    self.processes = CompressionProcesses(
                        count, self.compressor, self._settings(), self.block_size, spool_fd
                    )
                except OSError:
                    return None  # no process can be forked now (EAGAIN, ENOMEM): threads
                self.workers = count  # a thread per process waits on it
        return self.processes

    def cut_ahead(self, data: EntryData | PathData) -> None:
        """Start cutting a file as the directory scan finds it, before planning asks for it, so
        the scan overlaps the compression (`tree_from_directory(on_file=...)`). Only where the
        processes cut files; the scan finds files in inode order, so they are cut in that order.
        A file the tree then leaves out only costs its work; a failure counts only if the
        writer reaches the file."""
        if not isinstance(data, EntryData | PathData):
            raise InvalidInputError(
                f"cut_ahead takes a file's EntryData or PathData, not {type(data).__name__}"
            )
        size = data.size
        if size <= self.block_size or self.served:
            return  # not compressed (or, with ztailpacking, small work: left to planning)
        processes = self._start_processes()
        if processes is None:
            return
        offset = self._reserve(-(-size // self.block_size) * self.block_size)[1]
        ahead = CutAhead(offset)
        self.ahead[id(data)] = (data, ahead)
        args = (processes, [(ahead, (data.path, size, b"", offset))])
        if size < COMPRESS_BATCH_BYTES:
            self.batch_forms.append(ahead)
            self._defer(size / COMPRESS_BATCH_BYTES, _cut_elsewhere, args)
        else:
            ahead.job = self._submit(_cut_elsewhere, *args)

    def _claim(self, data: DataSource, plan: PlannedInode, ahead: CutAhead) -> CompressedData:
        """The form of a file cut ahead: its pclusters are in the room reserved then."""
        assert self.spool is not None
        form = self._settings().form(data.size, self.spool.fileno(), ahead.offset, PlainData(data))
        form.budget = self.budget
        if ahead.job < 0:
            self._flush_batch()  # the scan is over: its last batch goes now
        form.job = ahead.job
        form.ahead = ahead
        ahead.path = show(plan.path)
        return form

    def _chunked(self, data: DataSource, plan: PlannedInode, chunks: ChunkSession) -> ChunkedData:
        form = chunks.form(data, plan)
        if not chunks.hashing:  # tar index mode: the chunks' places are known already
            return form
        if isinstance(data, StreamData):
            form.spool = self._reserve(data.size)
            self._submit(_spool_and_hash, data, plan, *form.spool, form)
            return form
        self._defer(data.size / BATCH_BYTES, hash_chunks, (form,))
        return form

    def _defer(self, work: float, job: Callable[..., None], args: tuple[object, ...]) -> None:
        """Add a small job to the batch; `work` is its share of a full batch."""
        self.batch.append((job, args))
        self.batch_work += work
        if len(self.batch) >= BATCH_FILES or self.batch_work >= 1:
            self._flush_batch()

    def _flush_batch(self) -> None:
        if self.batch:
            batch = self.batch
            self.batch = []
            self.batch_work = 0.0
            job = self._submit(_run_batch, batch)
            for form in self.batch_forms:
                form.job = job
            self.batch_forms = []

    def _reserve(self, size: int) -> tuple[int, int]:
        """Room for `size` bytes in the spool: its descriptor and the offset."""
        if self.spool is None:
            # An unnamed temporary file: nothing is left behind, whatever stops the build.
            self.spool = tempfile.TemporaryFile()  # noqa: SIM115 (closed by close())
        offset = self.spool_end
        self.spool_end += size
        return self.spool.fileno(), offset

    def _submit(self, job: Callable[..., None], *args: object) -> int:
        """Hand a job to the workers; returns its index."""
        if self.batch and job is not _run_batch:
            self._flush_batch()  # jobs stay in submission order
        if self.executor is None:
            self.executor = ThreadPoolExecutor(self.workers, thread_name_prefix="erofsgen-data")
        index = len(self.jobs)
        self.jobs.append(self.executor.submit(self._run, index, job, args))
        return index

    def _run(self, index: int, job: Callable[..., None], args: tuple[object, ...]) -> None:
        if job_hook is not None:
            job_hook(index)
        if not self.abort.is_set():
            job(*args, self.abort)

    def spill(self, form: CompressedData) -> None:
        """Move `form`'s pieces from memory to the spool: it is planned but not streamed."""
        form.spill(_spool_write)

    def wait_for(self, form: CompressedData) -> None:
        """Wait until `form` is cut; raise the first failure of the jobs up to its own, in order."""
        if form.job < 0:
            self._flush_batch()
        jobs = self.jobs
        while self.waited <= form.job:
            jobs[self.waited].result()
            self.waited += 1
        if form.ahead is not None:
            ahead, form.ahead = form.ahead, None
            ahead.claim(form)

    def settle(self) -> None:
        """Wait for every examined kind; raise the first failure in submission order."""
        self._flush_batch()
        for future in self.jobs:
            future.result()

    def finish_compression(self) -> CompressedData | None:
        """Share pclusters (dedupe) and gather the fragments, in file order, once every file is cut.

        Returns the packed inode's stored form, compressed, or None when no file has a fragment.
        """
        self.settle()
        if self.dedupe:
            self.shared_pclusters = share_pclusters(self.extended, self.block_size)
        table = FragmentTable()
        for form, _plan in self.extended:
            if form.compressed and form.tail_start >= 0:
                table.add(form)
        if not table.size or self.compressor is None:
            return None
        size, bs = table.size, self.block_size
        algorithm = self.compressor.algorithm
        fd, raw = self._reserve(size)
        table.write(fd, raw)
        # Cut in segments of a fixed size, compressed in parallel and joined: a segment's last
        # extent ends on a block boundary, where the next one's first begins.
        parts = []
        for start in range(0, size, PACKED_SEGMENT):
            length = min(PACKED_SEGMENT, size - start)
            at = self._reserve(-(-length // bs) * bs)[1]
            part = CompressedData(
                NO_DATA, length, fd, at, compact=True, pcluster=self.packed_pcluster, algorithm=algorithm
            )
            self._submit(_compress_spooled, part, raw + start, self.compressor, bs)
            parts.append((start, part))
        self.settle()
        packed = CompressedData(
            SpooledData(fd, raw, size), size, fd, self._reserve(-(-size // bs) * bs)[1],
            compact=self.compact_indexes, pcluster=self.packed_pcluster, algorithm=algorithm,
        )  # fmt: skip
        join_segments(packed, parts, bs)
        return packed

    def close(self) -> None:
        """Stop the workers (pending jobs are dropped) and release the spool."""
        self.abort.set()
        if self.processes is not None and not all(job.done() for job in self.jobs):
            self.processes.kill()  # their work is dropped: the threads waiting on them go too
        if self.executor is not None:
            self.executor.shutdown(wait=True, cancel_futures=True)
            self.executor = None
        if self.processes is not None:
            self.processes.close()
            self.processes = None
        if self.spool is not None:
            self.spool.close()
            self.spool = None


def _consume_stream(
    data: StreamData, plan: PlannedInode, spool_fd: int, offset: int, abort: threading.Event
) -> None:
    """Read a stream exactly once into the spool; it must hold exactly its declared size."""

    def failed(why: str) -> InvalidInputError:
        return InvalidInputError(f"{data.describe()}: {why}", show(plan.path))

    try:
        stream = data.open()
        done = 0
        while done < data.size:
            if abort.is_set():
                return
            chunk = stream.read(min(SPOOL_CHUNK, data.size - done))
            if not chunk:
                raise failed(f"the stream ended at byte {done}, short of its size {data.size}")
            _spool_write(spool_fd, chunk, offset + done)
            done += len(chunk)
        if stream.read(1):
            raise failed(f"the stream runs on past its size {data.size}")
    except OSError as exc:
        raise failed(f"cannot read: {exc.strerror or exc}") from None


def _compress(
    data: DataSource,
    plan: PlannedInode,
    form: CompressedData,
    raw: int,
    compressor: DestSizeCompressor,
    block_size: int,
    abort: threading.Event,
) -> None:
    """A compressed file: a stream is spooled first (it can be read only once), then compressed."""
    if isinstance(data, StreamData):
        _consume_stream(data, plan, form.spool_fd, raw, abort)
        if not abort.is_set():
            compress_file(form, spool_reader(form.spool_fd, raw), compressor, block_size, _spool_write, abort)
        return
    with FileReader(data, plan.path, data.size, abort) as reader:
        compress_file(form, reader.read, compressor, block_size, _spool_write, abort)
        if not abort.is_set():
            reader.finish()


def _compress_spooled(
    form: CompressedData, raw: int, compressor: DestSizeCompressor, block_size: int, abort: threading.Event
) -> None:
    """Data already in the spool at `raw` (the packed inode's), compressed."""
    compress_file(form, spool_reader(form.spool_fd, raw), compressor, block_size, _spool_write, abort)


def usable_cpus() -> int:
    """The cpus this process may run on."""
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        return os.cpu_count() or 1


def stage_compressor(options: WriteOptions) -> DestSizeCompressor | None:
    """The compressor the options ask for, if any (its window fits the largest pcluster)."""
    if options.compression is None:
        return None
    return dest_size_compressor(
        options.compression, options.compression_level, options.max_pcluster_bytes, options.block_size
    )


def stage_for(options: WriteOptions, chunks: ChunkSession | None) -> DataStage:
    """The data stage `options` ask for."""
    stage = DataStage(
        options.block_size,
        options.workers,
        chunks=chunks,
        compressor=stage_compressor(options),
        compact_indexes=options.compact_indexes,
        pcluster_size=options.pcluster_size,
        ztailpacking=options.ztailpacking,
        max_extent_bytes=options.max_extent_bytes,
        fragments=options.fragment_mode,
        dedupe=options.dedupe,
        packed_pcluster_size=options.packed_pcluster_size,
    )
    stage.options = options
    return stage


def _run_batch(jobs: list[tuple[Callable[..., None], tuple[object, ...]]], abort: threading.Event) -> None:
    """Small jobs in their order; the first failure ends the batch (and is the build's).

    Consecutive files for the processes go to one of them as one request.
    """
    i = 0
    while i < len(jobs):
        if abort.is_set():
            return
        job, args = jobs[i]
        i += 1
        if job is _cut_elsewhere:
            processes, forms = args
            assert isinstance(forms, list)
            forms = list(forms)
            while i < len(jobs) and jobs[i][0] is _cut_elsewhere:
                more = jobs[i][1][1]
                assert isinstance(more, list)
                forms += more
                i += 1
            args = (processes, forms)
        job(*args, abort)


def _cut_elsewhere(
    processes: CompressionProcesses,
    forms: list[tuple[CompressedData | CutAhead, Job]],
    abort: threading.Event,
) -> None:
    """Path-backed files, cut in one of the processes."""
    if not abort.is_set():
        processes.cut(forms)


def _spool_and_hash(
    data: StreamData,
    plan: PlannedInode,
    spool_fd: int,
    offset: int,
    form: ChunkedData,
    abort: threading.Event,
) -> None:
    """A chunked stream: into the spool first (it can be read only once), then hashed there."""
    _consume_stream(data, plan, spool_fd, offset, abort)
    if not abort.is_set():
        hash_chunks(form, abort)
