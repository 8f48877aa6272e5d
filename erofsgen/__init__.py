"""erofsgen: write and read EROFS filesystem images in pure Python."""

from __future__ import annotations

from .errors import (
    CorruptImageError,
    ErofsgenError,
    InvalidInputError,
    NotFoundError,
    UnsupportedFeatureError,
)
from .reader import Image, open_image
from .sources import ImageBuilder, tree_from_directory
from .writer import ImageSummary, write_image
from .writer.options import InodeFormat, WriteOptions

__version__ = "0.1.0"

__all__ = [
    "CorruptImageError",
    "ErofsgenError",
    "Image",
    "ImageBuilder",
    "ImageSummary",
    "InodeFormat",
    "InvalidInputError",
    "NotFoundError",
    "UnsupportedFeatureError",
    "WriteOptions",
    "__version__",
    "open_image",
    "tree_from_directory",
    "write_image",
]
