"""The emitting pass: turns a Layout into bytes at the offsets the plan chose."""

from __future__ import annotations

import contextlib
import os
import uuid

from ..format.constants import (
    EROFS_SUPER_MAGIC_V1,
    EROFS_SUPER_OFFSET,
    DataLayout,
    FeatureCompat,
    FeatureIncompat,
    FileType,
)
from ..format.inode import (
    INODE_COMPACT,
    INODE_EXTENDED,
    xattr_icount,
)
from ..format.superblock import CHECKSUM_OFFSET, SUPERBLOCK, SuperBlockRec, checksum_length, sb_checksum
from ..model import Directory, File, Symlink
from .digest import ContentDigest
from .dirs import directory_block
from .options import ProgressCallback
from .plan import Layout, PlannedInode
from .sources import copy_file

WINDOW_FLUSH = 1 << 20
# The schema-derived struct codecs, called positionally on the hot path (fields in schema order).
COMPACT_PACK = INODE_COMPACT.struct.pack
EXTENDED_PACK = INODE_EXTENDED.struct.pack
COMPACT_RESERVED = bytes(4)
EXTENDED_RESERVED = bytes(16)


class MetadataWriter:
    """Buffers metadata written in increasing offset order; refuses to overlap what came before."""

    def __init__(self, fd: int) -> None:
        self.fd = fd
        self.start = 0
        self.buf = bytearray()

    @property
    def end(self) -> int:
        return self.start + len(self.buf)

    def write(self, offset: int, data: bytes) -> None:
        end = self.start + len(self.buf)
        if offset < end:
            raise AssertionError(f"metadata at {offset:#x} overlaps what was written up to {end:#x}")
        if self.buf and (offset - end > 4096 or len(self.buf) > WINDOW_FLUSH):
            self.flush()
            end = self.start
        if not self.buf:
            self.start = end = offset
        self.buf += bytes(offset - end)
        self.buf += data

    def flush(self) -> None:
        if self.buf:
            os.pwrite(self.fd, self.buf, self.start)
            self.start += len(self.buf)
            self.buf.clear()


class Emitter:
    def __init__(self, layout: Layout, fd: int, progress: ProgressCallback | None) -> None:
        self.layout = layout
        self.fd = fd
        self.bs = layout.options.block_size
        self.meta = MetadataWriter(fd)
        self.progress = progress
        self.done = 0
        self.digest: ContentDigest | None = None

    def emit(self) -> uuid.UUID:
        layout = self.layout
        # Full size up front: the digest worker may read any final range; holes read as zeros.
        os.ftruncate(self.fd, layout.blocks * self.bs)
        if layout.options.uuid is None:
            self.digest = ContentDigest(self.fd, layout.data_start * self.bs)
        # Leaving the block stops the digest thread, whatever failed, before the descriptor closes.
        with self.digest or contextlib.nullcontext():
            self.emit_areas()
            return self.finish_superblock()

    def emit_areas(self) -> None:
        layout = self.layout
        if layout.prefix_table:
            self.meta.write(layout.prefix_start, layout.prefix_table)
        shared_offset = layout.xattr_blkaddr * self.bs
        shared_pending = bool(layout.shared.data)
        for plan in layout.inodes:
            if shared_pending and plan.offset >= shared_offset:
                self.meta.write(shared_offset, layout.shared.data)
                shared_pending = False
            self.meta.write(plan.offset, self.inode_record(plan))
            if plan.nblocks and self.digest is not None:
                self.digest.advance((plan.startblk + plan.nblocks) * self.bs)
        if shared_pending:
            self.meta.write(shared_offset, layout.shared.data)
        self.meta.flush()
        if self.meta.end > layout.data_start * self.bs:
            raise AssertionError("metadata ran into the data area")

    def inode_record(self, plan: PlannedInode) -> bytes:
        """Core, xattr body and inline tail of one inode; writes its data blocks on the way."""
        tail = self.store_data(plan)
        return self.inode_core(plan) + plan.xattr_body + tail

    def store_data(self, plan: PlannedInode) -> bytes:
        """Have the inode's whole blocks written (a file's by the data workers); return its tail."""
        node = plan.node
        full = plan.block_bytes
        addr = plan.startblk * self.bs
        if isinstance(node, File):
            tail = copy_file(plan, self.fd, self.bs)
            self.done += plan.size
            if self.progress is not None:
                self.progress(self.done, self.layout.total_data)
            return tail
        if isinstance(node, Symlink):
            if full:
                os.pwrite(self.fd, node.target[:full], addr)
            return node.target[full:]
        if isinstance(node, Directory):
            return self.write_directory(plan, addr)
        return b""

    def write_directory(self, plan: PlannedInode, addr: int) -> bytes:
        shape = plan.shape
        assert shape is not None and plan.parent is not None and plan.children is not None
        # Both lists are in bytewise order; "." and ".." slot in among the children.
        dots = {b".": (b".", plan.nid, FileType.DIR), b"..": (b"..", plan.parent.nid, FileType.DIR)}
        children = iter(plan.children)
        entries = []
        for name in shape.names:
            dot = dots.get(name)
            if dot is None:
                child_name, child = next(children)
                entries.append((child_name, child.nid, child.ftype))
            else:
                entries.append(dot)
        blocks = len(shape.splits)
        whole = blocks if plan.layout is DataLayout.FLAT_PLAIN else blocks - 1
        for b in range(whole):
            os.pwrite(self.fd, directory_block(shape, b, entries, self.bs, self.bs), addr + b * self.bs)
        if whole == blocks:
            return b""
        return directory_block(shape, blocks - 1, entries, self.bs, plan.tail_size)

    def inode_core(self, plan: PlannedInode) -> bytes:
        meta = plan.node.meta
        i_u = plan.i_u
        icount = xattr_icount(len(plan.xattr_body))
        mode = plan.mode
        if plan.extended:
            sec, nsec = divmod(meta.mtime_ns, 10**9)
            return EXTENDED_PACK(
                plan.layout_format, icount, mode, 0, plan.size, i_u, plan.ino, meta.uid, meta.gid,
                sec, nsec, plan.nlink, EXTENDED_RESERVED,
            )  # fmt: skip
        return COMPACT_PACK(
            plan.layout_format, icount, mode, plan.nlink, plan.size, 0, i_u, plan.ino, meta.uid, meta.gid,
            COMPACT_RESERVED,
        )  # fmt: skip

    def superblock(self, image_uuid: uuid.UUID) -> SuperBlockRec:
        layout = self.layout
        options = layout.options
        compat = FeatureCompat.MTIME | FeatureCompat.XATTR_FILTER
        if options.sb_checksum:
            compat |= FeatureCompat.SB_CHKSUM
        incompat = FeatureIncompat(0)
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
            u1=0,
            extra_devices=0,
            devt_slotoff=0,
            dirblkbits=0,
            xattr_prefix_count=layout.prefix_count,
            xattr_prefix_start=layout.prefix_start // 4 if layout.prefix_count else 0,
            packed_nid=0,
            xattr_filter_reserved=0,
            ishare_xattr_prefix_id=0,
            reserved=bytes(2),
            build_time=0,
            rootnid_8b=0,
            reserved2=bytes(8),
        )

    def finish_superblock(self) -> uuid.UUID:
        """Write the superblock; derive the UUID from the image first if none was given."""
        image_uuid = self.layout.options.uuid
        if image_uuid is None:
            os.pwrite(self.fd, SUPERBLOCK.pack(self.superblock(uuid.UUID(int=0))), EROFS_SUPER_OFFSET)
            assert self.digest is not None
            image_uuid = self.digest.finish(self.layout.blocks * self.bs, self.layout.data_start * self.bs)
        os.pwrite(self.fd, SUPERBLOCK.pack(self.superblock(image_uuid)), EROFS_SUPER_OFFSET)
        if self.layout.options.sb_checksum:
            end = EROFS_SUPER_OFFSET + checksum_length(self.bs)
            head = os.pread(self.fd, end, 0)
            os.pwrite(self.fd, sb_checksum(head, self.bs).to_bytes(4, "little"), CHECKSUM_OFFSET)
        return image_uuid
