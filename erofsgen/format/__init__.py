"""EROFS on-disk structures: construct schemas (the single declaration of each layout),
fast struct codecs derived from them, and small pure helpers. No I/O here."""

from __future__ import annotations

from .constants import (
    ChunkFormat,
    CompressionAlgorithm,
    DataLayout,
    FeatureCompat,
    FeatureIncompat,
    FileType,
    InodeVersion,
    LclusterType,
    MapAdvise,
    XattrIndex,
)

__all__ = [
    "ChunkFormat",
    "CompressionAlgorithm",
    "DataLayout",
    "FeatureCompat",
    "FeatureIncompat",
    "FileType",
    "InodeVersion",
    "LclusterType",
    "MapAdvise",
    "XattrIndex",
]
