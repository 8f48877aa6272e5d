"""Read EROFS images: `open_image()` returns an `Image` to list, stat, read and extract."""

from __future__ import annotations

from .data import ImageFile, InodeData
from .extract import ExtractResult
from .image import DirEntry, Image, open_image
from .inode import InodeInfo, Stat, decode_inode
from .superblock import SuperblockInfo, is_erofs

__all__ = [
    "DirEntry",
    "ExtractResult",
    "Image",
    "ImageFile",
    "InodeData",
    "InodeInfo",
    "Stat",
    "SuperblockInfo",
    "decode_inode",
    "is_erofs",
    "open_image",
]
