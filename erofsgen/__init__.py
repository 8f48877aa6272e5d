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
    ImageWriteError,
    InvalidInputError,
    NotFoundError,
    UnsupportedFeatureError,
)

if TYPE_CHECKING:
    from .blobs import BlobStore, ChunkLocation, StoreError
    from .composefs.build import MkcomposefsOptions, mkcomposefs
    from .format.constants import FileType
    from .model import (
        BytesData,
        DataSource,
        Device,
        Directory,
        Fifo,
        File,
        FileObjectData,
        Metadata,
        Node,
        PathData,
        Socket,
        Symlink,
    )
    from .reader import DirEntry, ExtractResult, Image, ImageFile, Stat, SuperblockInfo, is_erofs, open_image
    from .sources import ImageBuilder, tree_from_directory
    from .sources.tar_tree import tree_from_layers, tree_from_tar
    from .transform import TreeOverrides, apply_overrides
    from .writer import ImageSummary, cutting_ahead, write_image
    from .writer.options import InodeFormat, WriteOptions

__version__ = "0.1.0"

# Every public name and the module it comes from, imported on first use.
_LAZY = {
    "BlobStore": ".blobs",
    "ChunkLocation": ".blobs",
    "StoreError": ".blobs",
    "MkcomposefsOptions": ".composefs.build",
    "mkcomposefs": ".composefs.build",
    "FileType": ".format.constants",
    "BytesData": ".model",
    "DataSource": ".model",
    "Device": ".model",
    "Directory": ".model",
    "Fifo": ".model",
    "File": ".model",
    "FileObjectData": ".model",
    "Metadata": ".model",
    "Node": ".model",
    "PathData": ".model",
    "Socket": ".model",
    "Symlink": ".model",
    "DirEntry": ".reader",
    "ExtractResult": ".reader",
    "Image": ".reader",
    "ImageFile": ".reader",
    "Stat": ".reader",
    "SuperblockInfo": ".reader",
    "open_image": ".reader",
    "is_erofs": ".reader",
    "ImageBuilder": ".sources",
    "tree_from_directory": ".sources",
    "tree_from_layers": ".sources.tar_tree",
    "tree_from_tar": ".sources.tar_tree",
    "TreeOverrides": ".transform",
    "apply_overrides": ".transform",
    "ImageSummary": ".writer",
    "cutting_ahead": ".writer",
    "write_image": ".writer",
    "InodeFormat": ".writer.options",
    "WriteOptions": ".writer.options",
}

__all__ = [
    "BlobStore",
    "BytesData",
    "ChunkLocation",
    "CorruptImageError",
    "DataSource",
    "Device",
    "DirEntry",
    "Directory",
    "ErofsgenError",
    "ExtractResult",
    "Fifo",
    "File",
    "FileObjectData",
    "FileType",
    "Image",
    "ImageBuilder",
    "ImageFile",
    "ImageSummary",
    "ImageWriteError",
    "InodeFormat",
    "InvalidInputError",
    "Metadata",
    "MkcomposefsOptions",
    "Node",
    "NotFoundError",
    "PathData",
    "Socket",
    "Stat",
    "StoreError",
    "SuperblockInfo",
    "Symlink",
    "TreeOverrides",
    "UnsupportedFeatureError",
    "WriteOptions",
    "__version__",
    "apply_overrides",
    "cutting_ahead",
    "is_erofs",
    "mkcomposefs",
    "open_image",
    "tree_from_directory",
    "tree_from_layers",
    "tree_from_tar",
    "write_image",
]


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(module, __name__), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *_LAZY})
