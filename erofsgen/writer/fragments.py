"""Fragments (-E fragments, -E all-fragments): file tails, or whole files, in the packed inode.

The data stage cuts a file as usual but keeps its last extent (with all-fragments: all of it)
raw in the spool instead of compressing it on its own (compressed.py, `fragments`). Once every
file is cut, `FragmentTable` gives each such fragment its offset in the packed inode's data, in
file order, storing identical fragments once; the packed inode is then compressed like any file
and written outside the tree (superblock `packed_nid`, feature FRAGMENTS). A file's map header
holds its fragment's offset (h_fragmentoff, FRAGMENT_PCLUSTER advise); a file that is all
fragment keeps nothing else: bit 7 of h_clusterbits and the offset in the header's other 63 bits.

`FragmentedData` is the stored form of such a file; it also writes the pclusters that dedupe.py
shares between extents, which need full indexes (each head names its block). See
specs/compression.md.
"""

from __future__ import annotations

import hashlib
import os
import threading
from array import array
from typing import TYPE_CHECKING

from ..format.constants import CompressionAlgorithm, DataLayout, LclusterType, MapAdvise
from ..format.zmap import LCLUSTER_INDEX, MAP_HEADER, MapHeaderRec, compact_index_size, compact_layout
from .compressed import CompressedData, compact_indexes, lcluster_entries
from .filecopy import copy_range
from .stored import Stored

if TYPE_CHECKING:
    from .plan import PlannedInode

_INDEX_PACK = LCLUSTER_INDEX.struct.pack
_WHOLE_FRAGMENT = 1 << 63  # in the 8-byte map header: the file is all fragment
_HASH_PIECE = 1 << 20
SUFFIX_KEY = 64  # fragments at least this long are looked up by their last bytes, as mkfs.erofs
SUFFIX_MAX = 1 << 20  # longer ones are matched whole only
SUFFIX_TRIES = 8  # stored fragments compared per look-up, the latest first

# A shared extent: the planned inode that owns its pcluster and the pcluster's block there.
Share = tuple["PlannedInode", int]


class FragmentedData(CompressedData):
    """A compressed file with a fragment in the packed inode and/or pclusters shared (dedupe)."""

    __slots__ = ("compact_now", "fragment_offset", "own_blocks", "pinned", "shared")

    def __init__(
        self,
        plain: Stored,
        size: int,
        spool_fd: int,
        spool_offset: int,
        *,
        compact: bool,
        pcluster: int,
        fragments: int,
        max_extent: int | None = None,
        algorithm: CompressionAlgorithm = CompressionAlgorithm.LZ4,
    ) -> None:
        super().__init__(
            plain,
            size,
            spool_fd,
            spool_offset,
            compact=compact,
            pcluster=pcluster,
            max_extent=max_extent,
            algorithm=algorithm,
        )
        self.fragments = fragments  # 0: none, 1: the last extent, 2: the whole file
        self.fragment_offset = -1  # in the packed inode, set by FragmentTable
        self.shared: list[Share | None] | None = None  # per extent, set by dedupe.share_pclusters
        self.own_blocks = -1  # pcluster blocks this file writes (the others are shared); -1: all
        self.pinned = False  # another file uses its pclusters: it stays compressed
        self.compact_now = self.compact

    @property
    def whole_fragment(self) -> bool:
        return self.tail_start == 0

    @property
    def written_blocks(self) -> int:
        return self.blocks if self.own_blocks < 0 else self.own_blocks

    def index_bytes(self, plan: PlannedInode, block_size: int) -> int:
        inode_end = plan.core_size + len(plan.xattr_body)
        pad = -inode_end % 8
        if self.whole_fragment:
            return pad + MAP_HEADER.size
        # Compacted indexes count blocks: shared pclusters, or a fragment offset beyond 32 bits
        # (its high half goes in the tail head's block address), need full ones.
        self.compact_now = self.compact and self.shared is None and self.fragment_offset < 1 << 32
        total = -(-self.size // block_size)
        if self.compact_now:
            return pad + MAP_HEADER.size + compact_index_size(compact_layout(inode_end, total, True), total)
        return pad + MAP_HEADER.size + 8 + 8 * total

    def shape(self, plan: PlannedInode, block_size: int, may_inline: bool) -> None:
        if self.compressed:
            extra = self.index_bytes(plan, block_size)
            keep = self.tail_start >= 0 or self.pinned  # as mkfs.erofs: a fragment is kept
            if keep or self.written_blocks * block_size + extra < self.size:
                full = self.whole_fragment or not self.compact_now
                plan.layout = DataLayout.COMPRESSED_FULL if full else DataLayout.COMPRESSED_COMPACT
                plan.nblocks = self.written_blocks
                plan.tail_size = 0
                plan.extra = extra
                return
            self.compressed = False
        plan.extra = 0
        self.plain.shape(plan, block_size, may_inline)

    def i_u(self, plan: PlannedInode) -> int:
        if self.compressed:
            return self.written_blocks
        return self.plain.i_u(plan)

    def write(
        self, fd: int, plan: PlannedInode, block_size: int, stop: threading.Event | None = None
    ) -> bytes:
        if not self.compressed:
            return self.plain.write(fd, plan, block_size, stop)
        inode_end = plan.core_size + len(plan.xattr_body)
        pad = bytes(-inode_end % 8)
        if self.whole_fragment:
            return pad + (self.fragment_offset | _WHOLE_FRAGMENT).to_bytes(8, "little")
        self._copy_pclusters(fd, plan, block_size)
        fragment = self.tail_start > 0
        starts, heads, nblocks = self.starts, self.heads, self.nblocks
        if fragment:  # the fragment is one more extent, of no blocks
            starts = array("Q", [*starts, self.tail_start])
            heads = bytearray([*heads, LclusterType.HEAD1])
            nblocks = array("H", [*nblocks, 0])
        big = self.pcluster > block_size
        entries = lcluster_entries(starts, heads, nblocks, self.size, block_size, big=big)
        advise = (MapAdvise.BIG_PCLUSTER_1 | MapAdvise.BIG_PCLUSTER_2) if big else 0
        offset = 0
        if fragment:
            advise |= MapAdvise.FRAGMENT_PCLUSTER
            offset = self.fragment_offset & 0xFFFFFFFF  # h_fragmentoff overlays the first 4 bytes
        if self.compact_now:
            advise |= MapAdvise.COMPACTED_2B
        header = MAP_HEADER.pack(MapHeaderRec(offset & 0xFFFF, offset >> 16, advise, self.algorithm, 0))
        if self.compact_now:
            return pad + header + compact_indexes(entries, inode_end, plan.startblk, big=big)
        return pad + header + bytes(8) + self._full_indexes(entries, plan)

    def _head_addresses(self, plan: PlannedInode) -> list[int]:
        """Each extent's pcluster block, then the fragment's: its offset's high half."""
        addresses = []
        own = 0
        for j, blocks in enumerate(self.nblocks):
            share = self.shared[j] if self.shared is not None else None
            if share is None:
                addresses.append(plan.startblk + own)
                own += blocks
            else:
                addresses.append(share[0].startblk + share[1])
        addresses.append(self.fragment_offset >> 32 if self.tail_start > 0 else 0)
        return addresses

    def _full_indexes(self, entries: list[tuple[int, int, int]], plan: PlannedInode) -> bytes:
        addresses = iter(self._head_addresses(plan))
        out = []
        for ltype, a, b in entries:
            if ltype == LclusterType.NONHEAD:
                out.append(_INDEX_PACK(ltype, 0, a | b << 16))
            else:  # the dummy EOF head (b < 0) names block 0
                out.append(_INDEX_PACK(ltype, a, next(addresses) if b >= 0 else 0))
        return b"".join(out)

    def _copy_pclusters(self, fd: int, plan: PlannedInode, block_size: int) -> None:
        """This file's own pclusters, one after another from its first block."""
        shared = self.shared
        if shared is None:
            at = plan.startblk * block_size
            copy_range(self.spool_fd, self.spool_offset, fd, at, self.blocks * block_size)
            return
        src = dst = 0
        for j, blocks in enumerate(self.nblocks):
            if shared[j] is None:
                n = blocks * block_size
                copy_range(self.spool_fd, self.spool_offset + src, fd, (plan.startblk * block_size) + dst, n)
                dst += n
            src += blocks * block_size


class FragmentTable:
    """The packed inode's data: every file's fragment, in file order, each stored once.

    A fragment identical to an earlier one, or to the end of an earlier one (as mkfs.erofs
    finds them: by their last `SUFFIX_KEY` bytes), takes that one's bytes.
    """

    def __init__(self) -> None:
        self.size = 0
        self.pieces: list[tuple[int, int, int]] = []  # (spool descriptor, offset, length) in order
        self._offsets: dict[bytes, int] = {}  # content digest -> offset in the packed inode
        # last SUFFIX_KEY bytes -> stored fragments ending so: (spool fd, spool offset, length, offset)
        self._ends: dict[bytes, list[tuple[int, int, int, int]]] = {}

    def add(self, form: FragmentedData) -> None:
        """Give `form`'s fragment its offset, reusing an identical one's or an earlier one's end."""
        fd, at, length = form.spool_fd, form.tail_spool, form.size - form.tail_start
        digest = _digest(fd, at, length)
        offset = self._offsets.get(digest)
        if offset is None:
            offset = self._suffix_of_stored(fd, at, length)
        if offset is None:
            offset = self.size
            self.pieces.append((fd, at, length))
            self.size += length
            if length >= SUFFIX_KEY:
                end = os.pread(fd, SUFFIX_KEY, at + length - SUFFIX_KEY)
                self._ends.setdefault(end, []).append((fd, at, length, offset))
        self._offsets[digest] = offset
        form.fragment_offset = offset

    def _suffix_of_stored(self, fd: int, at: int, length: int) -> int | None:
        if length < SUFFIX_KEY:
            return None
        end = os.pread(fd, SUFFIX_KEY, at + length - SUFFIX_KEY)
        candidates = self._ends.get(end, ())
        if not candidates or length > SUFFIX_MAX:
            return None
        data = os.pread(fd, length, at)
        for g_fd, g_at, g_length, g_offset in reversed(candidates[-SUFFIX_TRIES:]):
            if g_length > length and os.pread(g_fd, length, g_at + g_length - length) == data:
                return g_offset + g_length - length
        return None

    def write(self, fd: int, offset: int) -> None:
        """Copy the packed inode's data to `offset` of `fd`."""
        for src_fd, src, length in self.pieces:
            copy_range(src_fd, src, fd, offset, length)
            offset += length


def join_segments(form: CompressedData, parts: list[tuple[int, CompressedData]], block_size: int) -> None:
    """Make `form` the concatenation of `parts` (each compressed from file byte `start`)."""
    written = 0
    for start, part in parts:
        form.starts.extend(s + start for s in part.starts)
        form.heads += part.heads
        form.nblocks.extend(part.nblocks)
        length = part.blocks * block_size
        copy_range(part.spool_fd, part.spool_offset, form.spool_fd, form.spool_offset + written, length)
        written += length
    form.blocks = sum(form.nblocks)
    form.compressed = any(h == LclusterType.HEAD1 for h in form.heads)


def _digest(fd: int, offset: int, length: int) -> bytes:
    h = hashlib.sha256()
    end = offset + length
    while offset < end:
        piece = os.pread(fd, min(_HASH_PIECE, end - offset), offset)
        if not piece:
            raise AssertionError("the spool is shorter than the fragment written to it")
        h.update(piece)
        offset += len(piece)
    return h.digest()
