"""Blob devices and content-addressed blob stores (specs/blob-store.md).

Modules: store (a store directory: blobs, index segments, locking, publishing), segment (the
index segment file format), cache (the stat cache of packed source files), maintenance (verify,
gc, du), devices (finding an image's devices by tag), mount (mounting an image with its blobs).
"""

from .cache import FileCache
from .errors import StoreError
from .store import BlobStore, ChunkLocation, PendingBlob

__all__ = ["BlobStore", "ChunkLocation", "FileCache", "PendingBlob", "StoreError"]
