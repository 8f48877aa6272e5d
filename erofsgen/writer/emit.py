"""The emitting pass: turns a Layout into bytes at the offsets the plan chose.

The early files' data is copied by the copier thread from the moment their blocks are placed
(before planning), or the streamed (compressed) files' by `StreamedWriter` as each is placed;
inode records and header areas go through one `MetadataWriter` in offset order, each area
checked against its plan; every other inode's data is written by its stored form as its record
is, so the data after the early (or streamed) files is written in address order.
"""

from __future__ import annotations

import os
import uuid
from typing import TYPE_CHECKING

from ..format.constants import (
    EROFS_SUPER_MAGIC_V1,
    DataLayout,
    FeatureCompat,
    FeatureIncompat,
)
from ..format.device import DEVICE_SLOT
from ..format.inode import INODE_COMPACT, INODE_EXTENDED, xattr_icount
from ..format.superblock import CHECKSUM_OFFSET, SUPERBLOCK, SuperBlockRec, checksum_length, sb_checksum
from ..model import full_mode
from .codecs import codec
from .compressed import CompressedData
from .copier import Copier
from .digest import ContentDigest
from .filecopy import copy_range
from .header import Area, MetadataWriter, write_final
from .lz4dest import LZ4_MAX_DISTANCE
from .options import ProgressCallback, WriteOptions
from .plan import DEVICE_TABLE_OFFSET, Draft, Layout, PlannedInode
from .writeback import Writeback, punch_hole

if TYPE_CHECKING:
    from .chunks import ChunkSession

# The schema-derived struct codecs, called positionally on the hot path (fields in schema order).
COMPACT_PACK = INODE_COMPACT.struct.pack
EXTENDED_PACK = INODE_EXTENDED.struct.pack
COMPACT_RESERVED = bytes(4)
_COMPRESSED = (DataLayout.COMPRESSED_FULL, DataLayout.COMPRESSED_COMPACT)
EXTENDED_RESERVED = bytes(16)
GATHER_BYTES = 1 << 20  # streamed pclusters are written in pwritev calls of about this much
GATHER_PIECES = 512  # and at most this many buffers (IOV_MAX is 1024)


class Emitter:
    """Writes one image into `fd` (already the right file): `start` before planning, `emit` after.

    Use it as a context manager: leaving it stops the copier and digest threads, whatever
    failed, before the descriptor closes.
    """

    layout: Layout  # set by emit()

    def __init__(
        self, fd: int, options: WriteOptions, progress: ProgressCallback | None, *, writeback: bool = False
    ) -> None:
        self.fd = fd
        self.options = options
        self.writeback = writeback  # the image will be synced in place: start its writes early
        self.bs = options.block_size
        self.meta = MetadataWriter(fd)  # told where the data area is once it is planned
        self.progress = progress
        self.done = 0
        self.total = 0
        self.digest: ContentDigest | None = None
        self.copier: Copier | None = None
        self.chunks: ChunkSession | None = None
        self.streamed: StreamedWriter | None = None
        self._compression_used: tuple[bool, bool] | None = None

    def __enter__(self) -> Emitter:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, *exc: object) -> None:
        try:
            if self.copier is not None:
                self.copier.close(failed=exc_type is not None)
            if self.chunks is not None:
                self.chunks.stop_copy()
        finally:
            if self.digest is not None:
                self.digest.__exit__(exc_type)

    def start(self, draft: Draft) -> None:
        """Start copying (and hashing) the early files, whose blocks are already placed."""
        bs = self.bs
        self.chunks = draft.stage.chunks
        # The early files' area in full, before anything is copied: the digest worker may read
        # any range below the copier's watermark, and a partial last block must read as zeros.
        os.ftruncate(self.fd, draft.early_end * bs)
        streaming = draft.streamed is not None  # they take the front of the data area (no early files)
        if self.options.uuid is None:
            early_end = None if streaming else draft.early_end * bs
            self.digest = ContentDigest(self.fd, draft.data_start * bs, early_end)
        if draft.early:
            # Streaming, the copier only reads tails: the streamed writer reports the data.
            copied = self.digest.advance_early if self.digest is not None and not streaming else None
            self.copier = Copier(draft.early, self.fd, bs, copied)
        if streaming:
            start = draft.early_end * bs
            writeback = Writeback(self.fd, start) if self.writeback else None
            self.streamed = StreamedWriter(self.fd, bs, start, self.digest, writeback)

    def write_streamed(self, plan: PlannedInode) -> None:
        """A streamed file's blocks, placed just now (plan.place_streamed)."""
        assert self.streamed is not None
        self.streamed.write(plan)

    def emit(self, layout: Layout) -> uuid.UUID:
        """Write every area, record and the remaining data blocks, then the superblock; return the UUID."""
        self.layout = layout
        if self.streamed is not None:
            self.streamed.finish(layout.data_start * self.bs)
        self.total = layout.total_data
        self.meta.data_area = (layout.data_start * self.bs, layout.meta_start * self.bs)
        # Full size up front: the digest worker may read any final range; holes read as zeros.
        os.ftruncate(self.fd, layout.blocks * self.bs)
        self.emit_areas()
        if self.copier is not None:
            self.copier.close()
        chunks = layout.chunks
        if chunks is not None:
            chunks.finish_copy()  # the new chunks are in place; a new blob is named and published
            table = layout.area("device table")
            if table is not None:
                write_final(self.fd, table, chunks.device_table(layout.blocks))
        return self.finish_superblock()

    def emit_areas(self) -> None:
        layout = self.layout
        # Header areas whose bytes are planned, in offset order, merged with the records.
        pending = [a for a in layout.areas if a.data is not None]
        pending.reverse()
        next_area = pending[-1].offset if pending else -1
        meta = self.meta
        digest = self.digest
        bs = self.bs
        for plan in layout.inodes:
            while 0 <= next_area <= plan.offset:
                meta.write_area(pending.pop())
                next_area = pending[-1].offset if pending else -1
            meta.write(plan.offset, self.inode_record(plan))
            if plan.nblocks and plan.early < 0 and not plan.streamed and digest is not None:
                digest.advance((plan.startblk + plan.nblocks) * bs)
        while pending:
            meta.write_area(pending.pop())
        meta.flush()

    def inode_record(self, plan: PlannedInode) -> bytes:
        """Core, xattr body and inline tail of one inode; its stored form writes its blocks."""
        data = plan.data
        if plan.early >= 0:
            assert self.copier is not None
            tail = self.copier.tail(plan.early)
        else:
            tail = data.write(self.fd, plan, self.bs)
        if data.file_data:
            self.done += plan.size
            if self.progress is not None:
                self.progress(self.done, self.total)
        meta = plan.node.meta
        mode = full_mode(plan.node)
        body = plan.xattr_body
        icount = xattr_icount(len(body)) if body else 0
        if plan.extended:
            sec, nsec = divmod(meta.mtime_ns, 10**9)
            core = EXTENDED_PACK(
                plan.layout_format, icount, mode, 0, plan.size, data.i_u(plan), plan.ino, meta.uid,
                meta.gid, sec, nsec, plan.nlink, EXTENDED_RESERVED,
            )  # fmt: skip
        else:
            core = COMPACT_PACK(
                plan.layout_format, icount, mode, plan.nlink, plan.size, 0, data.i_u(plan), plan.ino,
                meta.uid, meta.gid, COMPACT_RESERVED,
            )  # fmt: skip
        return core + body + tail

    def compression_used(self) -> tuple[bool, bool]:
        """Whether any inode is compressed, and whether any has an inline pcluster (one pass over
        the inodes, made once: the superblock is encoded twice)."""
        if self._compression_used is None:
            compressed = inline = False
            for plan in self.layout.inodes:
                if plan.layout in _COMPRESSED:
                    compressed = True
                    if plan.tail_size:
                        inline = True
                        break
            self._compression_used = (compressed, inline)
        return self._compression_used

    def superblock(self, image_uuid: uuid.UUID) -> SuperBlockRec:
        layout = self.layout
        options = self.options
        compat = FeatureCompat.MTIME | FeatureCompat.XATTR_FILTER
        if options.sb_checksum:
            compat |= FeatureCompat.SB_CHKSUM
        incompat = FeatureIncompat(0)
        chunks = layout.chunks
        devices = len(chunks.devices) if chunks is not None else 0
        if chunks is not None and chunks.forms:
            incompat |= FeatureIncompat.CHUNKED_FILE
        if devices:
            incompat |= FeatureIncompat.DEVICE_TABLE
        u1 = 0
        compressed, inline_pcluster = self.compression_used()
        if compressed:
            # LZ4 streams right-aligned in their pclusters; u1 is lz4_max_distance without COMPR_CFGS.
            incompat |= FeatureIncompat.ZERO_PADDING
            u1 = LZ4_MAX_DISTANCE
        if inline_pcluster:
            incompat |= FeatureIncompat.ZTAILPACKING  # an inline pcluster after some index
        if layout.area("compression configs") is not None:
            # Big pclusters or another algorithm than LZ4: its record after the superblock; u1 is
            # the algorithm bitmap.
            assert options.compression is not None
            incompat |= FeatureIncompat.COMPR_CFGS
            u1 = 1 << codec(options.compression).algorithm
        if layout.packed is not None or layout.shared_pclusters:
            incompat |= FeatureIncompat.FRAGMENTS  # the same bit as DEDUPE
        prefixes = layout.area("long xattr prefixes")
        if layout.prefix_count:
            incompat |= FeatureIncompat.XATTR_PREFIXES
            compat |= FeatureCompat.PLAIN_XATTR_PFX
        sec, nsec = divmod(layout.build_time_ns, 10**9)
        return SuperBlockRec(
            magic=EROFS_SUPER_MAGIC_V1,
            checksum=0,
            feature_compat=int(compat),
            blkszbits=options.blkszbits,
            sb_extslots=0,
            root_nid=layout.root.nid,
            inos=len(layout.inodes),
            epoch=sec,
            fixed_nsec=nsec,
            blocks=layout.blocks,
            meta_blkaddr=0,
            xattr_blkaddr=layout.xattr_blkaddr,
            uuid=image_uuid.bytes,
            volume_name=options.label.encode().ljust(16, b"\0"),
            feature_incompat=int(incompat),
            u1=u1,
            extra_devices=devices,
            devt_slotoff=DEVICE_TABLE_OFFSET // DEVICE_SLOT.size if devices else 0,
            dirblkbits=0,
            xattr_prefix_count=layout.prefix_count,
            xattr_prefix_start=prefixes.offset // 4 if prefixes is not None and layout.prefix_count else 0,
            packed_nid=layout.packed.nid if layout.packed is not None else 0,
            xattr_filter_reserved=0,
            ishare_xattr_prefix_id=0,
            reserved=bytes(2),
            build_time=0,
            rootnid_8b=0,
            reserved2=bytes(8),
        )

    def finish_superblock(self) -> uuid.UUID:
        """Write the superblock; derive the UUID from the image first if none was given."""
        area = self.layout.area("superblock")
        assert area is not None
        image_uuid = self.options.uuid
        if image_uuid is None:
            write_final(self.fd, area, SUPERBLOCK.pack(self.superblock(uuid.UUID(int=0))))
            assert self.digest is not None
            layout = self.layout
            image_uuid = self.digest.finish(layout.meta_start * self.bs, layout.blocks * self.bs)
        self.write_superblock(area, SUPERBLOCK.pack(self.superblock(image_uuid)))
        return image_uuid

    def write_superblock(self, area: Area, record: bytes) -> None:
        """The superblock with its checksum over block 0 (from the superblock to the block end)."""
        write_final(self.fd, area, record)
        if self.options.sb_checksum:
            end = area.offset + checksum_length(self.bs)
            head = os.pread(self.fd, end, 0)
            os.pwrite(self.fd, sb_checksum(head, self.bs).to_bytes(4, "little"), CHECKSUM_OFFSET)


def _piece_length(piece: bytes | int) -> int:
    return len(piece) if isinstance(piece, bytes) else piece


class StreamedWriter:
    """Writes the streamed files' blocks in the order they are placed, one after another.

    Pclusters kept in memory are gathered into large pwritev calls; spooled ones are copied in
    the kernel; a file that stays plain is written from its raw pieces (or copies itself) and
    keeps its inline tail for its record.
    The digest is told how far the data is final after each write.
    """

    def __init__(
        self,
        fd: int,
        block_size: int,
        start: int,
        digest: ContentDigest | None,
        writeback: Writeback | None = None,
    ) -> None:
        self.fd = fd
        self.bs = block_size
        self.digest = digest
        self.writeback = writeback
        self.buffers: list[bytes] = []  # gathered, to be written from `at`
        self.at = start
        self.pending = 0  # bytes in `buffers`
        self.end = start  # the end of the last file written, in bytes
        self.size = start  # the image file's size as far as writes made it

    def write(self, plan: PlannedInode) -> None:
        form = plan.data
        assert isinstance(form, CompressedData)
        bs = self.bs
        at = plan.startblk * bs
        if form.compressed:
            if plan.nblocks:
                self._write_pieces(form, at, form.blocks * bs)
                block = form.tail_block(bs)
                if block:
                    self._gather(at + form.blocks * bs, block)
            kept = form.record(plan, bs)  # made now, while the main thread would wait for the workers
        elif form.holds_raw():
            # Stored plain, and the workers' pieces are its blocks already (raw, block-padded):
            # no second read of the source.
            full = plan.nblocks * bs
            if full:
                self._write_pieces(form, at, full)
            kept = self._piece_bytes(form, full, plan.tail_size)
        else:
            self._flush()
            kept = form.plain.write(self.fd, plan, bs)
            if plan.nblocks:
                self.size = max(self.size, at + plan.size - plan.tail_size)
        if plan.nblocks:
            self.end = (plan.startblk + plan.nblocks) * bs
        if any(isinstance(piece, int) for piece in form.pieces):  # the spool's copy is not needed
            punch_hole(form.spool_fd, form.spool_offset, sum(_piece_length(p) for p in form.pieces))
        form.written_with(kept)
        if self.pending >= GATHER_BYTES:
            self._flush()

    def _write_pieces(self, form: CompressedData, at: int, length: int) -> None:
        """The first `length` bytes of `form`'s pieces, to the image from `at`."""
        pos = 0
        for piece in form.pieces:
            if pos >= length:
                break
            n = _piece_length(piece)
            take = min(n, length - pos)
            if isinstance(piece, bytes):
                self._gather(at + pos, piece if take == n else piece[:take])
            else:  # spooled at the same offset of the file's room in the spool
                self._flush()
                copy_range(form.spool_fd, form.spool_offset + pos, self.fd, at + pos, take)
                self.size = max(self.size, at + pos + take)
            pos += n

    @staticmethod
    def _piece_bytes(form: CompressedData, start: int, length: int) -> bytes:
        """Bytes [start, start + length) of `form`'s pieces."""
        out = []
        pos = 0
        end = start + length
        for piece in form.pieces:
            n = _piece_length(piece)
            lo, hi = max(start, pos), min(end, pos + n)
            if lo < hi:
                if isinstance(piece, bytes):
                    out.append(piece[lo - pos : hi - pos])
                else:
                    out.append(os.pread(form.spool_fd, hi - lo, form.spool_offset + lo))
            pos += n
        data = b"".join(out)
        if len(data) != length:
            raise AssertionError("the spool is shorter than the data written to it")
        return data

    def _gather(self, at: int, piece: bytes) -> None:
        if self.pending and self.at + self.pending != at:
            self._flush()
        if not self.pending:
            self.at = at
        self.buffers.append(piece)
        self.pending += len(piece)
        if len(self.buffers) >= GATHER_PIECES:
            self._flush()

    def _flush(self) -> None:
        """Write what is gathered; then the data below it is final."""
        if self.pending:
            views = [memoryview(b) for b in self.buffers]
            at = self.at
            while views:
                n = os.pwritev(self.fd, views, at)
                at += n
                while views and n >= len(views[0]):
                    n -= len(views[0])
                    views.pop(0)
                if n:
                    views[0] = views[0][n:]
            self.size = max(self.size, at)
            self.at = at
            self.buffers = []
            self.pending = 0
        self._final(self.at if self.at > self.end else self.end)

    def _final(self, upto: int) -> None:
        if self.writeback is not None:
            self.writeback.finished(upto)
        if self.digest is None:
            return
        if self.size < upto:  # a plain file's last block ends short: it must read as zeros
            os.ftruncate(self.fd, upto)
            self.size = upto
        self.digest.advance_early(upto)

    def finish(self, data_start: int) -> None:
        """Everything is written: the front part of the data area ends here."""
        self._flush()
        end = max(self.end, data_start)
        self._final(end)
        if self.digest is not None:
            self.digest.end_early(end)
