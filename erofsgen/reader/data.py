"""Read the bytes of one inode, whatever its layout, lazily and within bounded memory.

Uncompressed data is copied segment by segment straight from the devices (into a file, in the
kernel: `copy_to`). Compressed data is decoded one extent at a time (at most 12 MiB) and the
last extent is kept, so sequential reads decode each extent once. A fragment extent is read in
pieces from the packed inode (packed.py), never decoded whole: it may be as long as the file.
`ImageFile` wraps this as a read-only, seekable binary file object.
"""

from __future__ import annotations

import io
import os
from dataclasses import replace
from typing import TYPE_CHECKING

from ..errors import CorruptImageError
from ..format.constants import FeatureIncompat
from .datamap import Segment, check_bounds, iter_segments, map_uncompressed
from .decompress import decode_extent
from .inode import InodeInfo
from .packed import packed_file
from .storage import Storage
from .superblock import SuperblockInfo
from .zmap import Extent, ZMap

if TYPE_CHECKING:
    from _typeshed import WriteableBuffer

# Holes and raw runs are copied in pieces of this size so one read never maps a huge buffer.
COPY_PIECE = 1 << 20


def copy_uncompressed(storage: Storage, sb: SuperblockInfo, inode: InodeInfo, fd: int) -> None:
    """`InodeData.copy_to` for an uncompressed inode: its data runs, in the kernel."""
    copy_segments(storage, inode.nid, inode.size, plan_uncompressed(storage, sb, inode), fd)


# A data run of `plan_uncompressed`: (logical, length, device, physical, inline) as in Segment,
# but a plain tuple, which pickles fast.
Run = tuple[int, int, int, int, bool]


def plan_uncompressed(storage: Storage, sb: SuperblockInfo, inode: InodeInfo) -> list[Run]:
    """The data runs of an uncompressed inode (holes left out), checked against the image."""
    check_bounds(storage, sb, inode)
    return [
        (seg.logical, seg.length, seg.device, seg.physical, seg.inline)
        for seg in iter_segments(storage, sb, inode)
        if seg.device is not None
    ]


def copy_segments(storage: Storage, nid: int, size: int, runs: list[Run], fd: int) -> None:
    """Copy `plan_uncompressed` runs into the new, empty file at `fd` and give it `size` bytes."""
    written, positioned = 0, True  # a new file's position is 0
    for logical, length, device, physical, inline in runs:
        positioned = storage.copy_to(
            physical,
            length,
            fd,
            logical,
            area="inline data" if inline else "file data",
            nid=nid,
            device=device,
            positioned=positioned and logical == written,
        )
        written = logical + length
    if written < size:
        os.ftruncate(fd, size)  # the file ends in a hole


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

    def copy_to(self, fd: int) -> None:
        """Write the whole data into the empty regular file open at `fd`, leaving holes sparse.

        Uncompressed runs go from the image to `fd` in the kernel (copy_file_range, else
        sendfile) without passing through Python; mapping holes are skipped unread (a sparse
        file may claim terabytes). Compressed data is decoded extent by extent and all-zero
        extents become holes. OSErrors of `fd` (ENOSPC, EFBIG, ...) propagate as they are.
        """
        if self._zmap is None:
            copy_uncompressed(self.storage, self.sb, self.inode, fd)
        elif self._copy_compressed(fd) < self.size:
            os.ftruncate(fd, self.size)  # the file ends in a hole

    def _copy_compressed(self, fd: int) -> int:
        written = pos = 0
        while pos < self.size:
            ext, data = self._decoded_piece(pos)
            start, end = pos - ext.logical, min(self.size, ext.end) - ext.logical
            if data.count(0, start, end) != end - start:
                view = memoryview(data)[start:end]
                at = pos
                while view:
                    done = os.pwrite(fd, view, at)
                    view, at = view[done:], at + done
                written = ext.logical + end
            pos = ext.logical + end
        return written

    def _read_piece(self, pos: int, end: int) -> bytes:
        if self._zmap is not None:
            ext, data = self._decoded_piece(pos)
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

    def _decoded_piece(self, pos: int) -> tuple[Extent, bytes]:
        """An extent holding `pos` and its bytes; a fragment comes as a piece of at most COPY_PIECE."""
        ext = self._extent
        if ext is not None and ext.logical <= pos < ext.end:
            return ext, self._extent_data
        assert self._zmap is not None
        ext = self._zmap.extent_at(pos)
        self._extent = None
        if ext.fragment:
            start = pos - pos % COPY_PIECE if pos - ext.logical >= COPY_PIECE else ext.logical
            count = min(ext.end, start + COPY_PIECE) - start
            packed = packed_file(self.storage, self.sb)
            piece = replace(ext, logical=start, length=count, physical=ext.physical + start - ext.logical)
            self._extent_data = packed.read(piece.physical, count, self.inode.nid)
            self._extent = piece
            return piece, self._extent_data
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


READ_PIECE = 1 << 20  # readall() gathers the rest of the file in pieces of this size


class ImageFile(io.RawIOBase):
    """File object returned by `Image.open`: read/readinto/seek/tell over an inode's bytes.

    Data is decoded lazily; memory use is bounded by the size of each read (plus one decoded
    extent of a compressed file), never by the size of the file.
    """

    def __init__(self, data: InodeData, name: str = "") -> None:
        super().__init__()
        self._data = data
        self._pos = 0
        self.name = name

    @property
    def size(self) -> int:
        """The file size in bytes."""
        return self._data.size

    @property
    def nid(self) -> int:
        """The NID of the inode being read."""
        return self._data.inode.nid

    def _check_open(self) -> None:
        if self.closed:
            raise ValueError("I/O operation on closed file")

    def readable(self) -> bool:
        """Always True (while open)."""
        self._check_open()
        return True

    def seekable(self) -> bool:
        """Always True (while open)."""
        self._check_open()
        return True

    def writable(self) -> bool:
        """Always False: images are read-only."""
        return False

    def tell(self) -> int:
        """The current position."""
        self._check_open()
        return self._pos

    def seek(self, offset: int, whence: int = os.SEEK_SET) -> int:
        """Move the position like io.IOBase.seek; seeking past EOF is allowed."""
        self._check_open()
        if whence == os.SEEK_SET:
            pos = offset
        elif whence == os.SEEK_CUR:
            pos = self._pos + offset
        elif whence == os.SEEK_END:
            pos = self._data.size + offset
        else:
            raise ValueError(f"invalid whence {whence}")
        if pos < 0:
            raise OSError(22, "negative seek position")
        self._pos = pos
        return pos

    def read(self, size: int | None = -1) -> bytes:
        """Up to `size` bytes (all the rest if negative or None); b"" at EOF."""
        self._check_open()
        if size is None or size < 0:
            return self.readall()
        data = self._data.read(self._pos, size)
        self._pos += len(data)
        return data

    def readall(self) -> bytes:
        """Everything from the current position to EOF."""
        self._check_open()
        parts: list[bytes] = []
        while True:
            piece = self.read(READ_PIECE)
            if not piece:
                return b"".join(parts)
            parts.append(piece)

    def readinto(self, buffer: WriteableBuffer) -> int:
        """Fill `buffer` from the current position; returns the byte count (0 at EOF)."""
        self._check_open()
        view = memoryview(buffer).cast("B")
        data = self._data.read(self._pos, len(view))
        view[: len(data)] = data
        self._pos += len(data)
        return len(data)

    def __repr__(self) -> str:
        return f"<ImageFile name={self.name!r} nid={self.nid} size={self.size}>"
