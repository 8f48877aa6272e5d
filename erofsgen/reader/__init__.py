"""Read EROFS images: `open_image()` returns an `Image` to list, stat, read and extract."""

from __future__ import annotations

from .image import DirEntry, Image, open_image
from .inode import InodeInfo, Stat, decode_inode
from .superblock import SuperblockInfo

__all__ = ["DirEntry", "Image", "InodeInfo", "Stat", "SuperblockInfo", "decode_inode", "open_image"]
