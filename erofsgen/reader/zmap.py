"""Compressed inodes: decode lcluster indexes (full and compacted) and map offsets to extents.

This follows the kernel's `zmap.c` semantics: the lcluster holding an offset is loaded; a
HEAD/PLAIN entry whose clusterofs is at or before the offset starts the extent, otherwise the
extent head is found by looking back along NONHEAD delta[0] distances. The physical length comes
from the CBLKCNT entry after the head (big pclusters), the logical length from following
delta[1] to the next head. Every walk is bounded by the 12 MiB extent limit, so a corrupt index
cannot loop.

Fragments (FRAGMENTS feature): the tail extent of a FRAGMENT_PCLUSTER inode lives in the packed
inode at `fragment_offset` instead of a pcluster; with bit 7 of h_clusterbits set the whole file
does (the other 63 bits of the header are the offset). Such an extent has `fragment` set and
`physical` = its offset in the packed inode. Dedupe needs nothing here: several heads may name the
same pcluster, and a PARTIAL_REF extent is a prefix of what its pcluster decodes to.
"""

from __future__ import annotations

from dataclasses import dataclass

from ..errors import CorruptImageError, UnsupportedFeatureError
from ..format.constants import (
    Z_EROFS_FRAGMENT_INODE_BIT,
    Z_EROFS_LI_D0_CBLKCNT,
    Z_EROFS_LI_PARTIAL_REF,
    Z_EROFS_PCLUSTER_MAX_DSIZE,
    Z_EROFS_PCLUSTER_MAX_SIZE,
    CompressionAlgorithm,
    DataLayout,
    FeatureIncompat,
    LclusterType,
    MapAdvise,
)
from ..format.zmap import (
    LCLUSTER_INDEX,
    LCLUSTER_TYPE_MASK,
    MAP_HEADER,
    MapHeaderRec,
    compact_entry_position,
    compact_index_size,
    compact_layout,
    decode_compacted_bits,
    full_index_offset,
    lobits,
    pack_geometry,
)
from .inode import InodeInfo
from .storage import Storage
from .superblock import SuperblockInfo

NONHEAD = LclusterType.NONHEAD
_BIG = MapAdvise.BIG_PCLUSTER_1 | MapAdvise.BIG_PCLUSTER_2
MAX_LCLUSTERBITS = 24  # anything larger cannot describe an extent within the 12 MiB limit


@dataclass(frozen=True)
class Lcluster:
    """One decoded index entry (what the kernel keeps in z_erofs_maprecorder)."""

    lcn: int
    type: LclusterType
    clusterofs: int  # HEAD/PLAIN: extent start in this lcluster; NONHEAD: lcluster size
    delta0: int  # NONHEAD: distance back to the head
    delta1: int  # NONHEAD: distance forward to the next head (only when looked ahead)
    pblk: int  # HEAD/PLAIN: pcluster block address
    cblkcnt: int | None  # NONHEAD carrying a big-pcluster block count
    nextpackoff: int  # byte position right after this entry's pack (ztailpacking data)
    partial_ref: bool


@dataclass(frozen=True)
class Extent:
    """A decompressed extent [logical, logical + length) and the pcluster it decodes from."""

    logical: int
    length: int
    physical: int  # absolute byte offset in the primary device
    plen: int
    head_lcn: int
    head_type: LclusterType
    algorithm: CompressionAlgorithm | None  # None: raw (PLAIN) data
    interlaced: bool  # raw data rotated to its in-block position
    inline: bool  # ztailpacking tail stored after the index
    partial_ref: bool
    fragment: bool = False  # stored raw in the packed inode, at offset `physical` there

    @property
    def end(self) -> int:
        """The file offset just past this extent."""
        return self.logical + self.length


class ZMap:
    """The index of one compressed inode; `extent_at(offset)` maps like z_erofs_map_blocks_iter."""

    def __init__(self, storage: Storage, sb: SuperblockInfo, inode: InodeInfo) -> None:
        assert inode.map_header_offset is not None
        self.storage, self.sb, self.inode = storage, sb, inode
        self.nid = inode.nid
        raw = storage.read(inode.map_header_offset, MAP_HEADER.size, area="map header", nid=inode.nid)
        self.header: MapHeaderRec = MAP_HEADER.unpack(raw, area="map header")
        self.whole_fragment = bool(self.header.h_clusterbits >> Z_EROFS_FRAGMENT_INODE_BIT)
        self.fragment_offset = 0
        self.tail_head_lcn = -1
        self.idata_size = 0
        self.idata_offset = 0
        if self.whole_fragment:
            # The other fields overlap the 63-bit offset: there is no index at all.
            self._require_fragments()
            self.fragment_offset = int.from_bytes(raw, "little") ^ (1 << 63)
            self.advise = MapAdvise.FRAGMENT_PCLUSTER
            self.algorithms = (0, 0)
            self.lclusterbits = sb.blkszbits
            self.totalidx = 0
            self.max_span = 0
            self.compact_layout = compact_layout(inode.inode_end, 0, False)
            return
        self.advise = MapAdvise(self.header.h_advise)
        self.algorithms = (self.header.h_algorithmtype & 0xF, self.header.h_algorithmtype >> 4)
        self.lclusterbits = sb.blkszbits + (self.header.h_clusterbits & 0xF)
        self.totalidx = -(-inode.size >> sb.blkszbits)  # erofs_iblks: what the kernel counts
        self.max_span = (Z_EROFS_PCLUSTER_MAX_DSIZE >> self.lclusterbits) + 2
        self._check_header()
        self.compact_layout = compact_layout(
            inode.inode_end, self.totalidx, bool(self.advise & MapAdvise.COMPACTED_2B)
        )
        self._check_index_bounds()
        if self.advise & MapAdvise.FRAGMENT_PCLUSTER:
            self._require_fragments()
            # h_fragmentoff overlays h_reserved1/h_idata_size, so there is no inline tail.
            self.fragment_offset = self.header.h_reserved1 | self.header.h_idata_size << 16
            if inode.size:
                self._find_fragment_tail()
        elif self.advise & MapAdvise.INLINE_PCLUSTER and inode.size:
            self._find_tail()

    # -- header ---------------------------------------------------------------------------

    def _corrupt(self, message: str, offset: int | None = None) -> CorruptImageError:
        return CorruptImageError(message, nid=self.nid, offset=offset, area="compressed index")

    def _require_fragments(self) -> None:
        if not self.sb.has(FeatureIncompat.FRAGMENTS):
            raise self._corrupt("fragment data without the superblock FRAGMENTS feature")
        if self.sb.packed_nid == self.nid:
            raise self._corrupt("the packed inode itself stores a fragment")

    def _check_header(self) -> None:
        compact = self.inode.layout == DataLayout.COMPRESSED_COMPACT
        if not compact and self.advise & MapAdvise.COMPACTED_2B:
            raise UnsupportedFeatureError(f"nid {self.nid}: encoded EXTENTS (48-bit era) not supported")
        for nibble in self.algorithms:
            if nibble >= len(CompressionAlgorithm):
                raise UnsupportedFeatureError(f"nid {self.nid}: unknown compression algorithm {nibble}")
        if self.lclusterbits > MAX_LCLUSTERBITS or (compact and self.lclusterbits > 14):
            raise self._corrupt(f"lclusterbits {self.lclusterbits} out of range")
        if self.advise & _BIG and not self.sb.has(FeatureIncompat.BIG_PCLUSTER):
            raise self._corrupt("big pcluster advise without the superblock feature")
        if compact and bool(self.advise & MapAdvise.BIG_PCLUSTER_1) != bool(
            self.advise & MapAdvise.BIG_PCLUSTER_2
        ):
            raise self._corrupt("inconsistent BIG_PCLUSTER_1/2 advise for compacted indexes")

    def _check_index_bounds(self) -> None:
        """Every lcluster of the file needs an entry: the index must fit in the image."""
        if self.inode.layout == DataLayout.COMPRESSED_FULL:
            lcount = -(-self.inode.size >> self.lclusterbits)
            end = full_index_offset(self.inode.inode_end) + lcount * LCLUSTER_INDEX.size
        else:
            end = self.compact_layout.ebase + compact_index_size(self.compact_layout, self.totalidx)
        if end > self.storage.primary_size:
            raise self._corrupt(f"index of a {self.inode.size}-byte file ends at {end:#x}, beyond the image")

    def _find_tail(self) -> None:
        """ztailpacking: the tail pcluster sits right after the pack holding the last lcluster."""
        self.idata_size = self.header.h_idata_size
        last = self.inode.size - 1
        first = self.load(last >> self.lclusterbits)
        head, _ = self._find_head(last, first)
        self.idata_offset = first.nextpackoff
        self.tail_head_lcn = head.lcn
        bs = self.sb.block_size
        if not self.idata_size or self.idata_offset % bs + self.idata_size > bs:
            raise self._corrupt(f"invalid tail-packing pclustersize {self.idata_size}", self.idata_offset)

    def _find_fragment_tail(self) -> None:
        """The head of the extent holding the last byte starts the fragment (z_erofs_fill_inode_lazy)."""
        last = self.inode.size - 1
        head, _ = self._find_head(last, self.load(last >> self.lclusterbits))
        self.tail_head_lcn = head.lcn
        if self.inode.layout == DataLayout.COMPRESSED_FULL:
            self.fragment_offset |= head.pblk << 32  # full indexes keep the high half here

    # -- loading one lcluster -------------------------------------------------------------

    def load(self, lcn: int, lookahead: bool = False) -> Lcluster:
        """Decode the index entry of logical cluster `lcn`."""
        if lcn < 0:
            raise self._corrupt(f"negative lcluster {lcn}")
        if self.inode.layout == DataLayout.COMPRESSED_FULL:
            return self._load_full(lcn)
        return self._load_compact(lcn, lookahead)

    def _cblkcnt_ok(self) -> None:
        if not self.advise & _BIG:
            raise self._corrupt("CBLKCNT without big pcluster advise")

    def _load_full(self, lcn: int) -> Lcluster:
        pos = full_index_offset(self.inode.inode_end) + lcn * LCLUSTER_INDEX.size
        raw = self.storage.read(pos, LCLUSTER_INDEX.size, area="lcluster index", nid=self.nid)
        rec = LCLUSTER_INDEX.unpack(raw, area="lcluster index")
        ltype = LclusterType(rec.di_advise & LCLUSTER_TYPE_MASK)
        nextpos = pos + LCLUSTER_INDEX.size
        if ltype == NONHEAD:
            d0, d1 = rec.di_u & 0xFFFF, rec.di_u >> 16
            cblk = None
            if d0 & Z_EROFS_LI_D0_CBLKCNT:
                self._cblkcnt_ok()
                cblk, d0 = d0 & ~Z_EROFS_LI_D0_CBLKCNT, 1
            return Lcluster(lcn, ltype, 1 << self.lclusterbits, d0, d1, 0, cblk, nextpos, False)
        if rec.di_clusterofs >= 1 << self.lclusterbits:
            raise self._corrupt(f"clusterofs {rec.di_clusterofs} of lcluster {lcn} too large", pos)
        partial = bool(rec.di_advise & Z_EROFS_LI_PARTIAL_REF)
        return Lcluster(lcn, ltype, rec.di_clusterofs, 0, 0, rec.di_u, None, nextpos, partial)

    def _load_compact(self, lcn: int, lookahead: bool) -> Lcluster:
        if lcn >= self.totalidx:
            raise self._corrupt(f"lcluster {lcn} beyond the {self.totalidx} index entries")
        pos, unit = compact_entry_position(self.compact_layout, lcn)
        if unit == 2 and self.lclusterbits > 12:
            raise self._corrupt("2-byte compacted indexes need lclusterbits <= 12")
        vcnt, pack_bytes, encodebits = pack_geometry(unit, self.lclusterbits)
        start = pos - pos % pack_bytes
        pack = self.storage.read(start, pack_bytes, area="compacted index pack", nid=self.nid)
        nbits = lobits(self.lclusterbits)
        i = (pos - start) // unit
        ltype, lo = decode_compacted_bits(pack, encodebits * i, nbits)
        nextpos = start + pack_bytes
        if ltype == NONHEAD:
            d1 = self._lookahead(pack, i, vcnt, encodebits, nbits) if lookahead else 0
            d0, cblk = lo, None
            if lo & Z_EROFS_LI_D0_CBLKCNT:
                if not self.advise & MapAdvise.BIG_PCLUSTER_1:
                    raise self._corrupt("CBLKCNT without big pcluster advise", pos)
                cblk, d0 = lo & ~Z_EROFS_LI_D0_CBLKCNT, 1
            elif i + 1 == vcnt:
                # The last entry of a pack stores delta[1]; delta[0] follows from the previous one.
                ptype, plo = decode_compacted_bits(pack, encodebits * (i - 1), nbits)
                d0 = 1 + (0 if ptype != NONHEAD else 1 if plo & Z_EROFS_LI_D0_CBLKCNT else plo)
            return Lcluster(lcn, LclusterType(ltype), 1 << self.lclusterbits, d0, d1, 0, cblk, nextpos, False)
        if lo >= 1 << self.lclusterbits:
            raise self._corrupt(f"clusterofs {lo} of lcluster {lcn} too large", pos)
        base = int.from_bytes(pack[-4:], "little")
        pblk = base + self._blocks_before(pack, i, encodebits, nbits, pos)
        return Lcluster(lcn, LclusterType(ltype), lo, 0, 0, pblk, None, nextpos, False)

    @staticmethod
    def _lookahead(pack: bytes, i: int, vcnt: int, encodebits: int, nbits: int) -> int:
        """delta[1] of a NONHEAD entry, counted from the pack (get_compacted_la_distance)."""
        d1 = 0
        lo = 0
        for j in range(i, vcnt):
            ltype, lo = decode_compacted_bits(pack, encodebits * j, nbits)
            if ltype != NONHEAD:
                return d1
            d1 += 1
        if not lo & Z_EROFS_LI_D0_CBLKCNT:
            d1 += lo - 1
        return d1

    def _blocks_before(self, pack: bytes, i: int, encodebits: int, nbits: int, pos: int) -> int:
        """Blocks of the pclusters whose heads precede entry i of the pack (implicit addressing)."""
        if not self.advise & MapAdvise.BIG_PCLUSTER_1:
            nblk = 1
            while i > 0:
                i -= 1
                ltype, lo = decode_compacted_bits(pack, encodebits * i, nbits)
                if ltype == NONHEAD:
                    i -= lo
                if i >= 0:
                    nblk += 1
            return nblk
        nblk = 0
        while i > 0:
            i -= 1
            ltype, lo = decode_compacted_bits(pack, encodebits * i, nbits)
            if ltype != NONHEAD:
                nblk += 1
            elif lo & Z_EROFS_LI_D0_CBLKCNT:
                i -= 1
                nblk += lo & ~Z_EROFS_LI_D0_CBLKCNT
            elif lo <= 1:
                raise self._corrupt("big pcluster with a plain delta[0] of 1", pos)
            else:
                i -= lo - 2
        return nblk

    # -- extents --------------------------------------------------------------------------

    def _find_head(self, offset: int, first: Lcluster) -> tuple[Lcluster, int]:
        """(head entry, extent start) of the extent holding `offset`, given its lcluster."""
        endoff = offset & ((1 << self.lclusterbits) - 1)
        if first.type != NONHEAD and endoff >= first.clusterofs:
            return first, (first.lcn << self.lclusterbits) | first.clusterofs
        if first.type != NONHEAD:
            if first.lcn == 0:
                raise self._corrupt("invalid logical cluster 0")
            distance = 1
        else:
            distance = first.delta0
        lcn = first.lcn
        while distance and lcn >= distance:
            lcn -= distance
            if first.lcn - lcn > self.max_span:
                break
            m = self.load(lcn)
            if m.type != NONHEAD:
                return m, (lcn << self.lclusterbits) | m.clusterofs
            distance = m.delta0
        raise self._corrupt(f"bogus lookback distance {distance} at lcluster {lcn}")

    def _compressed_blocks(self, head: Lcluster) -> int:
        """Blocks of the pcluster starting at `head` (z_erofs_get_extent_compressedlen)."""
        big1 = bool(self.advise & MapAdvise.BIG_PCLUSTER_1)
        big2 = bool(self.advise & MapAdvise.BIG_PCLUSTER_2)
        lcn = head.lcn + 1
        if (
            (head.type == LclusterType.HEAD1 and not big1)
            or (head.type in (LclusterType.PLAIN, LclusterType.HEAD2) and not big2)
            or (lcn << self.lclusterbits) >= self.inode.size
        ):
            return 1
        nxt = self.load(lcn)
        if nxt.type == NONHEAD and nxt.delta0 != 1:
            raise self._corrupt(f"bogus CBLKCNT at lcluster {lcn}")
        return nxt.cblkcnt if nxt.type == NONHEAD and nxt.cblkcnt else 1

    def _decompressed_length(self, head: Lcluster, la: int) -> int:
        """Length of the extent starting at `la` up to the next head or EOF."""
        size, bits = self.inode.size, self.lclusterbits
        lcn = head.lcn
        while True:
            if (lcn << bits) >= size:
                return size - la
            if lcn - head.lcn > self.max_span:
                raise self._corrupt(f"extent at {la} exceeds the 12 MiB limit")
            m = self.load(lcn, lookahead=True)
            if m.type == NONHEAD:
                step = m.delta1 or 1  # the kernel's workaround for pre-1.0 mkfs
            elif lcn != head.lcn:
                return (lcn << bits) + m.clusterofs - la
            else:
                step = 1
            lcn += step

    def extent_at(self, offset: int) -> Extent:
        """The extent holding byte `offset` (0 <= offset < i_size)."""
        if not 0 <= offset < self.inode.size:
            raise ValueError(f"offset {offset} outside the file")
        if self.whole_fragment or (self.tail_head_lcn == 0 and self.advise & MapAdvise.FRAGMENT_PCLUSTER):
            return self._fragment_extent(0)
        head, la = self._find_head(offset, self.load(offset >> self.lclusterbits))
        length = self._decompressed_length(head, la)
        if length <= 0 or la + length <= offset or la > offset:
            raise self._corrupt(f"extent [{la}, +{length}) does not cover offset {offset}")
        inline = head.lcn == self.tail_head_lcn
        if inline and self.advise & MapAdvise.FRAGMENT_PCLUSTER:
            return self._fragment_extent(la)
        if inline:
            physical, plen = self.idata_offset, self.idata_size
        else:
            physical = head.pblk * self.sb.block_size
            plen = self._compressed_blocks(head) << self.sb.blkszbits
        return self._finish(head, la, length, physical, plen, inline)

    def _fragment_extent(self, la: int) -> Extent:
        """The tail [la, EOF) stored uncompressed in the packed inode (no size limit applies)."""
        length = self.inode.size - la
        return Extent(
            logical=la,
            length=length,
            physical=self.fragment_offset,
            plen=length,
            head_lcn=la >> self.lclusterbits if not self.whole_fragment else 0,
            head_type=LclusterType.PLAIN,
            algorithm=None,
            interlaced=False,
            inline=False,
            partial_ref=False,
            fragment=True,
        )

    def _finish(self, head: Lcluster, la: int, length: int, physical: int, plen: int, inline: bool) -> Extent:
        if plen > Z_EROFS_PCLUSTER_MAX_SIZE or length > Z_EROFS_PCLUSTER_MAX_DSIZE:
            raise self._corrupt(f"extent at {la}: pcluster {plen} / extent {length} bytes beyond the limits")
        algorithm: CompressionAlgorithm | None = None
        if head.type == LclusterType.PLAIN:
            if length > plen:
                raise self._corrupt(f"raw extent at {la} is {length} bytes, its pcluster {plen}")
        else:
            nibble = self.algorithms[1 if head.type == LclusterType.HEAD2 else 0]
            if not self.sb.available_compr_algs & (1 << nibble):
                raise self._corrupt(f"inconsistent algorithmtype {nibble}")
            algorithm = CompressionAlgorithm(nibble)
        return Extent(
            logical=la,
            length=length,
            physical=physical,
            plen=plen,
            head_lcn=head.lcn,
            head_type=head.type,
            algorithm=algorithm,
            interlaced=bool(self.advise & MapAdvise.INTERLACED_PCLUSTER),
            inline=inline,
            partial_ref=head.partial_ref,
        )

    def extents(self) -> list[Extent]:
        """Every extent of the file in order (for dump/check tools; reads the whole index)."""
        result: list[Extent] = []
        pos = 0
        while pos < self.inode.size:
            ext = self.extent_at(pos)
            result.append(ext)
            pos = ext.end
        return result
