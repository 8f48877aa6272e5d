"""Sources of trees: a directory on disk and the builder API."""

from __future__ import annotations

from .builder import EntryOptions, ImageBuilder
from .directory import ScanProgress, tree_from_directory

__all__ = ["EntryOptions", "ImageBuilder", "ScanProgress", "tree_from_directory"]
