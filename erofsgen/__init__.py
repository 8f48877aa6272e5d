"""erofsgen: write and read EROFS filesystem images in pure Python.

The public names below are imported on first use, so `erofsgen pack` does not pay for the
reader and `erofsgen ls` does not pay for the writer.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from .errors import (
    CorruptImageError,
    ErofsgenError,
    InvalidInputError,
    NotFoundError,
    UnsupportedFeatureError,
)

if TYPE_CHECKING:
    from .reader import Image, is_erofs, open_image
    from .sources import ImageBuilder, tree_from_directory
    from .writer import ImageSummary, write_image
    from .writer.options import InodeFormat, WriteOptions

__version__ = "0.1.0"

_LAZY = {
    "Image": ".reader",
    "open_image": ".reader",
    "is_erofs": ".reader",
    "ImageBuilder": ".sources",
    "tree_from_directory": ".sources",
    "ImageSummary": ".writer",
    "write_image": ".writer",
    "InodeFormat": ".writer.options",
    "WriteOptions": ".writer.options",
}

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
    "is_erofs",
    "open_image",
    "tree_from_directory",
    "write_image",
]


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(module, __name__), name)
    globals()[name] = value
    return value
