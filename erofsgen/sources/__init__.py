"""Sources of trees: a directory on disk and the builder API."""

from __future__ import annotations

from .builder import ImageBuilder
from .directory import ScanProgress, tree_from_directory

__all__ = ["ImageBuilder", "ScanProgress", "tree_from_directory"]
