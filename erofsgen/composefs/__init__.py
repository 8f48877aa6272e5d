"""composefs: metadata-only EROFS images over a content-addressed object directory.

Byte-compatible with composefs's own mkcomposefs 1.0.8 (see specs/composefs.md).
"""
