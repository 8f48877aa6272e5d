"""The one tree walk: `Image.walk`, `extract`, `inspect` statistics, `dump` and `check` all use it.

The walk visits directories, each once, depth or breadth first. It owns the order, the paths
and loop detection; the caller owns what a directory's entries are (`list_dir`: the reader's
listing, or check's validating one) and which of them to enter, by filling `Visit.descend`
before asking for the next visit (pruning is leaving an entry out). A directory reached a
second time (a loop, or a hard-linked directory) raises CorruptImageError in strict walks and
is skipped otherwise, so the walk ends on any image.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Generic, TypeVar

from ..errors import CorruptImageError, ErofsgenError
from .names import escape_name

L = TypeVar("L")  # what list_dir returns for one directory


@dataclass
class Visit(Generic[L]):
    """One directory: its path, NID and entries; `descend` is for the caller to fill."""

    path: bytes
    nid: int
    entries: L
    descend: list[tuple[bytes, int]] = field(default_factory=list)  # (name, nid) to enter

    def child_path(self, name: bytes) -> bytes:
        """The path of entry `name` (relative when the walk's top path is b"")."""
        return self.path.rstrip(b"/") + b"/" + name if self.path else name


def walk_dirs(
    list_dir: Callable[[int], L],
    top_nid: int,
    top_path: bytes = b"/",
    *,
    breadth_first: bool = False,
    strict: bool = True,
    on_error: Callable[[bytes, int, ErofsgenError], None] | None = None,
) -> Iterator[Visit[L]]:
    """Visit `top_nid` and every directory the caller descends into, each once.

    Depth first visits a directory's subdirectories in the order given in `descend`.
    A directory that cannot be listed raises, or with `on_error` is reported there and
    skipped. `strict=False` skips directories reached twice instead of raising.
    """
    pending: deque[tuple[bytes, int]] = deque([(top_path, top_nid)])
    seen = {top_nid}
    while pending:
        path, nid = pending.popleft() if breadth_first else pending.pop()
        try:
            entries = list_dir(nid)
        except ErofsgenError as exc:
            if on_error is None:
                raise
            on_error(path, nid, exc)
            continue
        visit = Visit(path, nid, entries)
        yield visit
        children = []
        for name, child in visit.descend:
            child_path = visit.child_path(name)
            if child in seen:
                if strict:
                    shown = escape_name(child_path)
                    raise CorruptImageError(f"directory {shown} reached twice", nid=child, area="directory")
                continue
            seen.add(child)
            children.append((child_path, child))
        pending.extend(children if breadth_first else reversed(children))


__all__ = ["Visit", "walk_dirs"]
