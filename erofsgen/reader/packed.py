"""The packed inode (superblock `packed_nid`): where FRAGMENTS images keep file tails.

A fragment is a plain byte range of the packed inode's data, which is itself an ordinary (often
compressed) regular file outside the directory tree. One `PackedFile` per open image is kept, so
the packed inode's last decoded extent serves the many small fragments that share it, as the
kernel's page cache of the packed inode does.
"""

from __future__ import annotations

import threading
import weakref
from typing import TYPE_CHECKING

from ..errors import CorruptImageError
from ..format.constants import FeatureIncompat, FileType
from .inode import decode_inode
from .storage import Storage
from .superblock import SuperblockInfo

if TYPE_CHECKING:
    from .data import InodeData

_AREA = "fragment"


class PackedFile:
    """Bounded reads of fragment bytes: `read(offset, size, nid)` from the packed inode."""

    def __init__(self, storage: Storage, sb: SuperblockInfo) -> None:
        from .data import InodeData  # data.py reads fragments through this module

        nid = sb.packed_nid
        if not sb.has(FeatureIncompat.FRAGMENTS) or not nid:
            raise CorruptImageError("a fragment is used but the image has no packed inode", area=_AREA)
        try:
            info = decode_inode(storage, sb, nid)
        except CorruptImageError as exc:
            message = f"bad packed inode (packed_nid {nid}): {exc}"
            raise CorruptImageError(message, nid=nid, area=_AREA) from None
        if info.file_type != FileType.REG_FILE:
            message = f"packed inode (packed_nid {nid}) is not a regular file"
            raise CorruptImageError(message, nid=nid, area=_AREA)
        self.nid = nid
        self.size = info.size
        self.data: InodeData = InodeData(storage, sb, info)
        self._lock = threading.Lock()  # the data's one-extent cache is shared by every reader

    def read(self, offset: int, size: int, nid: int) -> bytes:
        """`size` bytes at `offset` of the packed inode, for the fragment of inode `nid`."""
        if offset < 0 or offset + size > self.size:
            raise CorruptImageError(
                f"fragment of {size} bytes at packed-inode offset {offset:#x} runs past the packed "
                f"inode (packed_nid {self.nid}, {self.size} bytes)",
                nid=nid,
                offset=offset,
                area=_AREA,
            )
        with self._lock:
            return self.data.read(offset, size)


_OPEN: weakref.WeakKeyDictionary[Storage, PackedFile] = weakref.WeakKeyDictionary()


def packed_file(storage: Storage, sb: SuperblockInfo) -> PackedFile:
    """The packed inode of the image on `storage`, decoded once per open image."""
    packed = _OPEN.get(storage)
    if packed is None or packed.nid != sb.packed_nid:
        packed = _OPEN[storage] = PackedFile(storage, sb)
    return packed
