"""composefs: metadata-only EROFS images over a content-addressed object directory.

Byte-compatible with composefs's own mkcomposefs 1.0.8 (see specs/composefs.md). The pieces:
`read_dump`/`format_dump` (composefs-dump(5)), `scan_directory` (a directory as mkcomposefs reads
it), `write_image`/`image_bytes` (the image and its fs-verity digest), `read_image` and
`dump_entries` (back from an image), `mkcomposefs` (all of it, with the object store).
"""

from __future__ import annotations

from .build import MkcomposefsOptions, mkcomposefs
from .dump import DumpEntry, DumpError, format_dump, parse_dump, read_dump
from .image import image_bytes, write_image
from .read import dump_entries, read_image
from .scan import ScanOptions, scan_directory
from .tree import CfsNode

__all__ = [
    "CfsNode",
    "DumpEntry",
    "DumpError",
    "MkcomposefsOptions",
    "ScanOptions",
    "dump_entries",
    "format_dump",
    "image_bytes",
    "mkcomposefs",
    "parse_dump",
    "read_dump",
    "read_image",
    "scan_directory",
    "write_image",
]
