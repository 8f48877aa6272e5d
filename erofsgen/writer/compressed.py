"""Compressed regular files (LZ4, LZ4HC, ZSTD, DEFLATE, LZMA): cut into extents by the data stage.

The data stage reads the file once and cuts it into extents by output size: each extent is as
much data as compresses into one pcluster (one block), the compressed stream right-aligned in
it (0PADDING). Data whose stream would not save a block is stored raw instead (PLAIN pclusters
of one block of data each), and a file whose compression saves nothing at all stays a plain
file. The pclusters go to the spool, at an offset reserved on the main thread, so nothing
depends on which worker ran when; emit copies them to the file's blocks and writes the map
header and the lcluster index after the inode: compacted (COMPRESSED_COMPACT, as mkfs.erofs) or
full (COMPRESSED_FULL, 8 bytes per block of the file). With ztailpacking the last pcluster, when
under a block, is kept in memory and written inline after the index if the record fits a block
(else into a block of its own). See specs/compression.md.
"""

from __future__ import annotations

import os
import threading
from array import array
from collections.abc import Callable
from typing import TYPE_CHECKING

from ..errors import InvalidInputError
from ..format.constants import (
    Z_EROFS_LI_D0_CBLKCNT,
    CompressionAlgorithm,
    DataLayout,
    LclusterType,
    MapAdvise,
)
from ..format.zmap import (
    LCLUSTER_INDEX,
    MAP_HEADER,
    MapHeaderRec,
    compact_index_size,
    compact_layout,
    encode_compacted_pack,
)
from .codecs import MAX_EXTENT_LCLUSTERS, config_record
from .filecopy import copy_range
from .lz4dest import DestSizeCompressor
from .stored import Stored

if TYPE_CHECKING:
    from .plan import PlannedInode
    from .processes import CutAhead

_INDEX_PACK = LCLUSTER_INDEX.struct.pack
_HEADER = MAP_HEADER.pack(MapHeaderRec(0, 0, 0, 0, 0))  # only its length matters
_FULL_INDEX_GAP = bytes(8)  # the reserved bytes between the map header and the entries
FLUSH_BYTES = 1 << 20  # pclusters are written to the spool in pieces of about this size
_HEAD1 = int(LclusterType.HEAD1)
_PLAIN = int(LclusterType.PLAIN)
_ZEROS = memoryview(bytes(1 << 20))  # padding up to a whole pcluster (at most 1 MiB)

Reader = Callable[[int], bytes]  # the next n bytes of the file (fewer only at its end)
SpoolWriter = Callable[[int, bytes | bytearray, int], None]  # (spool descriptor, data, offset)
# A cut file's extents (starts, heads, nblocks as bytes), blocks, compressed, tail, tail_raw, pieces.
CutState = tuple[bytes, bytes, bytes, int, bool, bytes, bytes, list[bytes | int]]


class OutputBudget:
    """How many bytes of pclusters the workers may keep in memory until they are written.

    Streamed files' pclusters wait in memory for the emitter (which writes them in file order)
    instead of making a round trip through the spool; past the budget (the emitter fell behind,
    or a large file waits for a slow one before it) they go to the spool. Which way a piece goes
    depends on timing; the image's bytes do not.
    """

    def __init__(self, limit: int) -> None:
        self.left = limit
        self.lock = threading.Lock()

    def take(self, n: int) -> bool:
        with self.lock:
            if n > self.left:
                return False
            self.left -= n
            return True

    def give(self, n: int) -> None:
        with self.lock:
            self.left += n


class CompressedData(Stored):
    """A regular file compressed by the data stage, or its `plain` form where that saves nothing."""

    __slots__ = (
        "_size",
        "ahead",
        "algorithm",
        "blocks",
        "budget",
        "compact",
        "compressed",
        "fragments",
        "heads",
        "inline",
        "job",
        "kept",
        "max_extent",
        "nblocks",
        "pcluster",
        "pieces",
        "plain",
        "spool_fd",
        "spool_offset",
        "starts",
        "tail",
        "tail_raw",
        "tail_spool",
        "tail_start",
        "written",
        "ztail",
    )
    file_data = True

    def __init__(
        self,
        plain: Stored,
        size: int,
        spool_fd: int,
        spool_offset: int,
        *,
        compact: bool,
        pcluster: int,
        ztail: bool = False,
        max_extent: int | None = None,
        algorithm: CompressionAlgorithm = CompressionAlgorithm.LZ4,
    ) -> None:
        self.algorithm = algorithm  # of every HEAD1 extent (the map header's low nibble)
        self.compact = compact  # compacted indexes (layout 3), else full ones (layout 1)
        self.pcluster = pcluster  # largest pcluster in bytes: above a block, big pclusters
        self.ztail = ztail  # the last extent's pcluster may go inline after the index
        self.max_extent = max_extent  # most file bytes per extent (None: the window's)
        self.plain = plain  # how the file is stored if compression does not pay
        self._size = size
        self.spool_fd = spool_fd
        self.spool_offset = spool_offset  # room for ceil(size / block size) pclusters
        self.compressed = False  # decided by the data stage
        self.starts = array("Q")  # each extent's first byte in the file
        self.heads = bytearray()  # each extent's index type: LclusterType.HEAD1 or PLAIN
        self.nblocks = array("H")  # each extent's pcluster, in blocks (0: the inline tail)
        self.blocks = 0  # pcluster blocks in the spool
        # ztailpacking: the last extent's pcluster when it is under a block (its stream, or its
        # raw bytes for a PLAIN head), kept out of the spool; b"" when there is none.
        self.tail = b""
        # The tail's raw bytes when it is compressed but within one lcluster: such an extent must
        # be PLAIN if it ends up in a block (only an inline pcluster may end inside its lcluster).
        self.tail_raw = b""
        self.inline = False  # decided by shape(): the tail is inline, else in a block of its own
        # FRAGMENTS (fragments.py): 1 keeps the last extent's data raw for the packed inode, 2 the
        # whole file's; it is written to the spool at `tail_spool`, from file byte `tail_start`.
        self.fragments = 0
        self.tail_start = -1
        self.tail_spool = -1
        # Streamed files (plan.place_streamed): the pclusters in order, each piece kept in memory
        # (bytes) while `budget` allows, else spooled (its length, at the next spool offset).
        self.budget: OutputBudget | None = None
        self.pieces: list[bytes | int] = []
        self.job = -1  # the data stage's job that cuts this file, once handed to a worker
        self.ahead: CutAhead | None = None  # its cut, when it began during the scan
        self.written = False  # the blocks are in the image already: write() gives `kept` only
        self.kept = b""  # then, the record's bytes after the xattr body (or a plain file's tail)

    @property
    def size(self) -> int:
        return self._size

    def put(self, chunk: bytearray, at: int, spool_write: SpoolWriter) -> None:
        """Output bytes from `at` (relative to the reserved room): copied to memory if the budget
        allows, else written to the spool (`chunk` is the caller's to reuse either way)."""
        budget = self.budget
        if budget is None:
            spool_write(self.spool_fd, chunk, self.spool_offset + at)
        elif budget.take(len(chunk)):
            self.pieces.append(bytes(chunk))
        else:
            spool_write(self.spool_fd, chunk, self.spool_offset + at)
            self.pieces.append(len(chunk))

    def release(self) -> None:
        """Drop the pieces kept in memory (they are written, or not needed)."""
        if self.budget is not None:
            self.budget.give(sum(len(p) for p in self.pieces if isinstance(p, bytes)))
        self.pieces = []

    def spill(self, spool_write: SpoolWriter) -> None:
        """Move the pieces kept in memory to the spool (where the emitter reads unstreamed forms)."""
        at = 0
        for i, piece in enumerate(self.pieces):
            if isinstance(piece, bytes):
                spool_write(self.spool_fd, piece, self.spool_offset + at)
                self.pieces[i] = len(piece)
                if self.budget is not None:
                    self.budget.give(len(piece))
                piece = len(piece)
            at += piece

    def cut_state(self) -> CutState:
        """What compress_file decided, for a form in another process (processes.py)."""
        return (
            self.starts.tobytes(), bytes(self.heads), self.nblocks.tobytes(), self.blocks,
            self.compressed, self.tail, self.tail_raw, self.pieces,
        )  # fmt: skip

    def take_cut(self, state: CutState) -> None:
        """Become the form another process cut (its pieces are in this form's spool room)."""
        starts, heads, nblocks, self.blocks, self.compressed, self.tail, self.tail_raw, self.pieces = state
        self.starts.frombytes(starts)
        self.heads += heads
        self.nblocks.frombytes(nblocks)

    def holds_raw(self) -> bool:
        """Whether the pieces are the file's data itself, block-padded: every extent is PLAIN and
        nothing was kept apart as a tail (so they can stand in for the plain file's blocks)."""
        return bool(self.pieces) and not self.tail and _HEAD1 not in self.heads

    def written_with(self, kept: bytes) -> None:
        """The blocks are in the image and `kept` is all write() will return: drop the rest."""
        self.release()
        self.kept = kept
        self.written = True
        self.tail = self.tail_raw = b""
        self.starts, self.heads, self.nblocks = array("Q"), bytearray(), array("H")

    def index_bytes(self, plan: PlannedInode, block_size: int) -> int:
        """Record bytes after the xattr body: padding to 8, map header, then the index."""
        inode_end = plan.core_size + len(plan.xattr_body)  # records are 32-aligned: so is this
        pad = -inode_end % 8
        total = -(-self._size // block_size)
        if self.compact:
            return pad + len(_HEADER) + compact_index_size(compact_layout(inode_end, total, True), total)
        return pad + len(_HEADER) + len(_FULL_INDEX_GAP) + 8 * total

    def shape(self, plan: PlannedInode, block_size: int, may_inline: bool) -> None:
        """Compressed if that saves bytes: the tail inline when the whole record fits one block
        (so the inline pcluster never crosses a block), else in a block after the others."""
        if self.compressed:
            extra = self.index_bytes(plan, block_size)
            tail = len(self.tail)
            self.inline = (
                bool(tail)
                and may_inline
                and plan.core_size + len(plan.xattr_body) + extra + tail <= block_size
            )
            blocks = self.blocks + (1 if tail and not self.inline else 0)
            if blocks * block_size + extra + (tail if self.inline else 0) < self._size:
                plan.layout = DataLayout.COMPRESSED_COMPACT if self.compact else DataLayout.COMPRESSED_FULL
                plan.nblocks = blocks
                plan.tail_size = tail if self.inline else 0
                plan.extra = extra
                return
            self.compressed = False  # its indexes eat the gain: plain after all
            self.inline = False
        plan.extra = 0
        self.plain.shape(plan, block_size, may_inline)

    def i_u(self, plan: PlannedInode) -> int:
        if self.compressed:
            return plan.nblocks  # a compressed inode's i_u counts its pcluster blocks
        return self.plain.i_u(plan)

    def _tail_block(self, block_size: int) -> tuple[int, bytes]:
        """A tail that did not go inline, as one block: (its head type, the block)."""
        if self.heads[-1] == LclusterType.PLAIN or self.tail_raw:
            raw = self.tail_raw or self.tail
            return LclusterType.PLAIN, raw + bytes(block_size - len(raw))
        return LclusterType.HEAD1, bytes(block_size - len(self.tail)) + self.tail

    def write(
        self, fd: int, plan: PlannedInode, block_size: int, stop: threading.Event | None = None
    ) -> bytes:
        if self.written:  # by the streamed writer, which also made the record's part
            return self.kept
        if not self.compressed:
            return self.plain.write(fd, plan, block_size, stop)
        startblk = plan.startblk if plan.nblocks else 0  # no blocks at all: an inline tail only
        copy_range(self.spool_fd, self.spool_offset, fd, startblk * block_size, self.blocks * block_size)
        block = self.tail_block(block_size)
        if block:
            os.pwrite(fd, block, (startblk + self.blocks) * block_size)
        return self.record(plan, block_size)

    def tail_block(self, block_size: int) -> bytes:
        """The block after the pclusters holding a tail that did not go inline, or b"" if none."""
        if self.tail and not self.inline:
            return self._tail_block(block_size)[1]
        return b""

    def record(self, plan: PlannedInode, block_size: int) -> bytes:
        """What follows the xattr body in the record: padding, map header, index, inline pcluster."""
        startblk = plan.startblk if plan.nblocks else 0
        heads, nblocks = self.heads, self.nblocks
        if self.tail and not self.inline:
            heads, nblocks = bytearray(heads), array("H", nblocks)
            heads[-1] = self._tail_block(block_size)[0]
            nblocks[-1] = 1
        inode_end = plan.core_size + len(plan.xattr_body)
        pad = bytes(-inode_end % 8)
        big = self.pcluster > block_size
        entries = lcluster_entries(
            self.starts, heads, nblocks, self._size, block_size, big=big, inline_tail=self.inline
        )
        advise = (MapAdvise.BIG_PCLUSTER_1 | MapAdvise.BIG_PCLUSTER_2) if big else 0
        idata = b""
        if self.inline:
            advise |= MapAdvise.INLINE_PCLUSTER
            idata = self.tail
        if self.compact:
            advise |= MapAdvise.COMPACTED_2B
            header = MAP_HEADER.pack(MapHeaderRec(0, len(idata), advise, self.algorithm, 0))
            return pad + header + compact_indexes(entries, inode_end, startblk, big=big) + idata
        header = MAP_HEADER.pack(MapHeaderRec(0, len(idata), advise, self.algorithm, 0))
        return pad + header + _FULL_INDEX_GAP + full_indexes(entries, startblk) + idata


# One per lcluster: (type, clusterofs, block offset of its pcluster) for heads,
# (NONHEAD, delta[0], delta[1]) for the others; with big pclusters the first NONHEAD after a head
# holds CBLKCNT | blocks as its delta[0].
Entry = tuple[int, int, int]


def lcluster_entries(
    starts: array[int],
    heads: bytearray,
    nblocks: array[int],
    size: int,
    lcluster: int,
    *,
    big: bool = False,
    inline_tail: bool = False,
) -> list[Entry]:
    """The logical index of extents starting at `starts`, their pclusters one after another.

    The lcluster holding EOF gets a PLAIN head of its own (clusterofs = size % lcluster, offset
    -1: block 0, never read) when the last extent began earlier. An inline tail's head has no
    block either (offset -1); with big pclusters its first NONHEAD, if any, still carries
    CBLKCNT | 1, as mkfs.erofs writes it: a compacted reader counting back from a later head in
    the same pack (the EOF head) refuses a plain delta[0] of 1 there.
    """
    total = -(-size // lcluster)
    head_lcns = [s // lcluster for s in starts]
    dummy = size % lcluster != 0 and head_lcns[-1] != total - 1
    entries: list[Entry] = []
    block = 0
    for j, start in enumerate(starts):
        head = head_lcns[j]
        last = j + 1 == len(starts)
        next_head = (total - 1 if dummy else total) if last else head_lcns[j + 1]
        inline = last and inline_tail
        entries.append((heads[j], start % lcluster, -1 if inline else block))
        count = 1 if inline else nblocks[j]
        for lcn in range(head + 1, next_head):
            delta0 = Z_EROFS_LI_D0_CBLKCNT | count if big and lcn == head + 1 else lcn - head
            entries.append((LclusterType.NONHEAD, delta0, next_head - lcn))
        block += nblocks[j]
    if dummy:
        entries.append((LclusterType.PLAIN, size % lcluster, -1))
    assert len(entries) == total
    return entries


def full_indexes(entries: list[Entry], startblk: int) -> bytes:
    """Layout COMPRESSED_FULL: 8 bytes per lcluster, each head with its pcluster's block."""
    out = []
    for ltype, a, b in entries:
        if ltype == LclusterType.NONHEAD:
            out.append(_INDEX_PACK(ltype, 0, a | b << 16))
        else:
            out.append(_INDEX_PACK(ltype, a, startblk + b if b >= 0 else 0))
    return b"".join(out)


def compact_indexes(entries: list[Entry], inode_end: int, startblk: int, *, big: bool = False) -> bytes:
    """Layout COMPRESSED_COMPACT with 2-byte packs where they fit (COMPACTED_2B), as mkfs.erofs.

    No block address per entry: readers count back from a head to its pack's start. Without big
    pclusters a head's pcluster is base + 1 + the heads before it in the pack; with them, base +
    the blocks of the pclusters whose size marks (the CBLKCNT entry, or the head of a pcluster
    without one) come before it in the pack. Either way each pack's base follows from the
    pclusters marked before the pack. The last slot of a pack holds a NONHEAD's delta[1] instead
    of its delta[0], unless it is a CBLKCNT mark.
    """
    total = len(entries)
    geometry = compact_layout(inode_end, total, True)
    end_2b = geometry.initial_4b + geometry.compacted_2b
    bounds = [(0, geometry.initial_4b, 4), (geometry.initial_4b, end_2b, 2), (end_2b, total, 4)]
    lclusterbits = 0  # only its floor of 12 matters here (lobits = max(lclusterbits, 12))
    packs = []
    marked = 0  # blocks of the pclusters marked before the current pack
    for first, end, unit in bounds:
        vcnt = 2 if unit == 4 else 16
        for at in range(first, min(end, total), vcnt):
            slots = entries[at : at + vcnt]
            values = []
            for i, (ltype, a, b) in enumerate(slots):
                if ltype == LclusterType.NONHEAD and i == vcnt - 1 and not a & Z_EROFS_LI_D0_CBLKCNT:
                    values.append((ltype, min(b, 0x7FF)))
                else:
                    values.append((ltype, a))
            while len(values) < vcnt:
                values.append((0, 0))  # a half-filled final pack
            # u32: a file whose only pcluster is inline has no block, its base wraps below 0.
            base = (startblk + marked if big else startblk + marked - 1) & 0xFFFFFFFF
            packs.append(encode_compacted_pack(values, base, unit, lclusterbits))
            for n, (ltype, a, b) in enumerate(slots):
                if ltype == LclusterType.NONHEAD:
                    if a & Z_EROFS_LI_D0_CBLKCNT:
                        marked += a & ~Z_EROFS_LI_D0_CBLKCNT
                elif b >= 0 and not (big and _followed_by_mark(entries, at + n)):
                    marked += 1  # a one-block pcluster: its head is its mark
    out = b"".join(packs)
    assert len(out) == compact_index_size(geometry, total)
    return out


def _followed_by_mark(entries: list[Entry], lcn: int) -> bool:
    return lcn + 1 < len(entries) and entries[lcn + 1][0] == LclusterType.NONHEAD


def compression_configs(algorithm: str | None, pcluster_size: int, block_size: int) -> bytes:
    """The COMPR_CFGS records after the superblock: one for the algorithm, where it needs one
    (every algorithm but LZ4 with one-block pclusters; see codecs.config_record)."""
    if algorithm is None:
        return b""
    return config_record(algorithm, pcluster_size, block_size)


def compress_file(
    form: CompressedData,
    read: Reader,
    compress: DestSizeCompressor,
    block_size: int,
    spool_write: SpoolWriter,
    abort: threading.Event,
) -> None:
    """Cut the file into extents and write their pclusters to the spool (the data stage's job).

    Reads at most a window ahead: no stream holds more than `compress.max_ratio` times its size
    (about 255 for LZ4), and extents stay within 1024 lclusters (NONHEAD deltas then never reach the
    CBLKCNT bit), and within `form.max_extent` bytes. A pcluster takes as many blocks as its stream
    needs, up to `form.pcluster` bytes. Where a stream saves no block, every whole block of the data
    it covered is stored raw at once, one PLAIN extent per block: that costs no more blocks than the
    stream would have, and incompressible data is compressed once per pcluster, not once per block.
    With ztailpacking, the extent reaching EOF is kept in `form.tail` when its pcluster is under a
    block (compressed, or raw when compression does not shrink it).
    """
    size = form.size
    capacity = form.pcluster
    reach = min(compress.max_ratio * capacity, MAX_EXTENT_LCLUSTERS * block_size)
    window = reach if form.max_extent is None else min(reach, form.max_extent)
    buffer = b""  # file bytes from `pos - off`; refilled a few windows at a time
    off = 0
    pos = 0
    out = bytearray()
    written = 0
    starts, heads, nblocks = form.starts, form.heads, form.nblocks
    tail = form.fragments  # with fragments, ztail is off (fragments.py)
    ztail = form.ztail
    is_set = abort.is_set
    while pos < size:
        if is_set():
            return
        left = size - pos
        if tail == 2 or (tail and left <= capacity):
            break  # the rest is the fragment
        want = window if left > window else left
        if len(buffer) - off < want:
            more = read(min(4 * reach, left) - (len(buffer) - off))
            buffer = buffer[off:] + more
            off = 0
            if len(buffer) < want:
                raise AssertionError("the reader ended before the file's size")
        last = ztail and want == left  # this extent may reach EOF: a tail candidate
        stream, used = compress(buffer, off, off + want, capacity) if want > block_size or last else (b"", 0)
        if last and used == want and len(stream) < block_size:
            _keep_tail(form, buffer[off : off + want], stream, pos, block_size)
            break
        if last and used == want and len(stream) % block_size:
            stream, used = _shorter_for_tail(compress, buffer, off, want, stream, used, block_size)
        blocks = -(-len(stream) // block_size)
        if tail and used == left and used > blocks * block_size:
            break  # the final compressed extent: its data goes to the packed inode instead
        if used > blocks * block_size:
            starts.append(pos)
            heads.append(_HEAD1)
            nblocks.append(blocks)
            out += _ZEROS[: blocks * block_size - len(stream)]
            out += stream
        else:  # no block saved: the data it covered is stored raw, a block per extent
            raw = min(max(1, used // block_size) * block_size, left)
            if last and raw < block_size:
                _keep_tail(form, buffer[off : off + raw], b"", pos, block_size)
                break
            for at in range(pos, pos + raw, block_size):
                starts.append(at)
                heads.append(_PLAIN)
                nblocks.append(1)
            out += buffer[off : off + raw]
            out += _ZEROS[: -raw % block_size]
            used = raw
        off += used
        pos += used
        if len(out) >= FLUSH_BYTES:
            form.put(out, written, spool_write)
            written += len(out)
            out.clear()
    if tail and pos < size:
        # Pclusters never take more room than the data they hold, so the tail fits the rest.
        form.tail_start = pos
        form.tail_spool = form.spool_offset + written + len(out)
        out += buffer[off:]
        left = size - pos - (len(buffer) - off)
        while left > 0:
            if abort.is_set():
                return
            more = read(min(FLUSH_BYTES, left))
            if not more:
                raise AssertionError("the reader ended before the file's size")
            out += more
            left -= len(more)
            if len(out) >= FLUSH_BYTES:
                form.put(out, written, spool_write)
                written += len(out)
                out.clear()
    if out:
        form.put(out, written, spool_write)
    form.blocks = sum(nblocks)
    form.compressed = bool(form.tail) or form.tail_start >= 0 or any(h == LclusterType.HEAD1 for h in heads)


def _keep_tail(form: CompressedData, raw: bytes, stream: bytes, pos: int, block_size: int) -> None:
    """The last extent, from `pos` to EOF, as an inline candidate: its stream if that is shorter."""
    form.starts.append(pos)
    form.nblocks.append(0)
    if stream and len(stream) < len(raw):
        form.heads.append(LclusterType.HEAD1)
        form.tail = stream
        if pos % block_size + len(raw) <= block_size:
            form.tail_raw = raw
    else:
        form.heads.append(LclusterType.PLAIN)
        form.tail = raw


def _shorter_for_tail(
    compress: DestSizeCompressor,
    buffer: bytes,
    off: int,
    want: int,
    stream: bytes,
    used: int,
    block_size: int,
) -> tuple[bytes, int]:
    """The last extent ends in a partly used block: take a block less when what is left then
    fits under a block, compressed or (as mkfs.erofs estimates it) raw, so it may go inline."""
    blocks = -(-len(stream) // block_size)
    if blocks < 2:
        return stream, used
    shorter, took = compress(buffer, off, off + want, (blocks - 1) * block_size)
    if took <= (blocks - 1) * block_size:
        return stream, used  # no gain left in the shorter extent
    rest = want - took
    if len(shorter) + rest < blocks * block_size:
        return shorter, took
    rest_stream, rest_took = compress(buffer, off + took, off + want, block_size)
    if rest_took == rest and len(rest_stream) < block_size:
        return shorter, took
    return stream, used


def spool_write(fd: int, chunk: bytes | bytearray, offset: int) -> None:
    """A write to the spool; its failures are the build's, not the source's."""
    view = memoryview(chunk)
    while view:
        try:
            n = os.pwrite(fd, view, offset)
        except OSError as exc:
            raise InvalidInputError(f"cannot write the spool of streamed data: {exc.strerror}") from None
        view = view[n:]
        offset += n


def spool_reader(fd: int, offset: int) -> Reader:
    """Sequential reads of data already in the spool."""
    pos = offset

    def read(n: int) -> bytes:
        nonlocal pos
        try:
            data = os.pread(fd, n, pos)
        except OSError as exc:
            raise InvalidInputError(f"cannot read the spool of streamed data: {exc.strerror}") from None
        pos += len(data)
        return data

    return read
