"""erofsgen: write and read EROFS filesystem images in pure Python."""

from __future__ import annotations

from .errors import (
    CorruptImageError,
    ErofsgenError,
    InvalidInputError,
    NotFoundError,
    UnsupportedFeatureError,
)

__version__ = "0.1.0"

__all__ = [
    "CorruptImageError",
    "ErofsgenError",
    "InvalidInputError",
    "NotFoundError",
    "UnsupportedFeatureError",
    "__version__",
]
