"""erofsgen: write and read EROFS filesystem images in pure Python."""

from __future__ import annotations

from .errors import (
    CorruptImageError,
    ErofsgenError,
    InvalidInputError,
    NotFoundError,
    UnsupportedFeatureError,
)
from .sources import ImageBuilder, tree_from_directory
from .writer.options import WriteOptions

__version__ = "0.1.0"

__all__ = [
    "CorruptImageError",
    "ErofsgenError",
    "ImageBuilder",
    "InvalidInputError",
    "NotFoundError",
    "UnsupportedFeatureError",
    "WriteOptions",
    "__version__",
    "tree_from_directory",
]
