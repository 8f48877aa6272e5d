"""Read the bytes of one inode, whatever its layout, lazily and within bounded memory.

Uncompressed data is copied segment by segment straight from the devices. Compressed data is
decoded one extent at a time (at most 12 MiB) and the last extent is kept, so sequential reads
decode each extent once.
"""

from __future__ import annotations

from ..errors import CorruptImageError
from ..format.constants import FeatureIncompat
from .datamap import Segment, check_bounds, map_uncompressed
from .decompress import decode_extent
from .inode import InodeInfo
from .storage import Storage
from .superblock import SuperblockInfo
from .zmap import Extent, ZMap

# Holes and raw runs are copied in pieces of this size so one read never maps a huge buffer.
COPY_PIECE = 1 << 20


class InodeData:
    """Random access to the data of one inode: `read(offset, size)` returns up to EOF."""

    def __init__(self, storage: Storage, sb: SuperblockInfo, inode: InodeInfo) -> None:
        self.storage = storage
        self.sb = sb
        self.inode = inode
        self.size = inode.size
        self._zmap: ZMap | None = ZMap(storage, sb, inode) if inode.compressed and inode.size else None
        if not inode.compressed:
            check_bounds(storage, sb, inode)
        self._extent: Extent | None = None
        self._extent_data = b""
        self._segment: Segment | None = None

    @property
    def zmap(self) -> ZMap | None:
        """The compressed index, for tools that list extents (None if uncompressed)."""
        return self._zmap

    def read(self, offset: int, size: int) -> bytes:
        """Up to `size` bytes from `offset`; shorter only at end of file."""
        if offset < 0 or size < 0:
            raise ValueError("negative offset or size")
        end = min(self.size, offset + size)
        parts: list[bytes] = []
        pos = offset
        while pos < end:
            piece = self._read_piece(pos, end)
            if not piece:
                raise CorruptImageError(
                    f"no progress reading offset {pos}", nid=self.inode.nid, area="file data"
                )
            parts.append(piece)
            pos += len(piece)
        return b"".join(parts)

    def _read_piece(self, pos: int, end: int) -> bytes:
        if self._zmap is not None:
            ext, data = self._decoded_extent(pos)
            return data[pos - ext.logical : min(end, ext.end) - ext.logical]
        seg = self._segment
        if seg is None or not seg.logical <= pos < seg.end:
            seg = self._segment = map_uncompressed(self.storage, self.sb, self.inode, pos)
            if not seg.logical <= pos < seg.end:
                raise CorruptImageError(
                    f"mapping of offset {pos} is inconsistent", nid=self.inode.nid, area="file data"
                )
        count = min(end, seg.end, pos + COPY_PIECE) - pos
        if seg.device is None:
            return bytes(count)
        area = "inline data" if seg.inline else "file data"
        return self.storage.read(
            seg.physical + (pos - seg.logical), count, area=area, nid=self.inode.nid, device=seg.device
        )

    def _decoded_extent(self, pos: int) -> tuple[Extent, bytes]:
        ext = self._extent
        if ext is not None and ext.logical <= pos < ext.end:
            return ext, self._extent_data
        assert self._zmap is not None
        ext = self._zmap.extent_at(pos)
        self._extent = None
        self._extent_data = decode_extent(
            self._pcluster_bytes(ext),
            ext,
            zero_padding=self.sb.has(FeatureIncompat.ZERO_PADDING),
            blksz=self.sb.block_size,
            configs=self.sb.compression_configs,
            nid=self.inode.nid,
        )
        self._extent = ext
        return ext, self._extent_data

    def _pcluster_bytes(self, ext: Extent) -> bytes:
        if ext.inline:
            return self.storage.read(ext.physical, ext.plen, area="inline pcluster", nid=self.inode.nid)
        device, phys = self.storage.locate(0, ext.physical // self.sb.block_size, nid=self.inode.nid)
        return self.storage.read(phys, ext.plen, area="pcluster", nid=self.inode.nid, device=device)
