"""The store's error type, shared by the store, its file formats and its maintenance."""

from __future__ import annotations

from ..errors import InvalidInputError


class StoreError(InvalidInputError):
    """A blob store (or one of its files) is missing, damaged, or cannot be used as asked.

    The message names the store directory or the file inside it.
    """


__all__ = ["StoreError"]
