"""Tree-wide rewrites of times and owners, as mkfs.erofs applies them while scanning.

The writer never touches file times or owners; callers (the `pack` command, build tools) apply
these to the tree first. Each node is changed once even when hard-linked under several names,
so offsets are added once per inode.
"""

from __future__ import annotations

from dataclasses import dataclass

from .errors import InvalidInputError
from .limits import MAX_ID
from .model import Directory, Node, iter_tree


@dataclass(frozen=True, slots=True)
class TreeOverrides:
    """What to force on every inode; the defaults change nothing.

    Owners: `force_uid`/`force_gid`, else `all_root`, replaces the id (the more specific option
    wins; mkfs.erofs lets the last one given win), then the offset is added, as mkfs.erofs does.
    Times: `mtime_ns` sets every mtime (mkfs `-T`) and wins over `clamp_mtime_ns`, which lowers
    mtimes newer than it (SOURCE_DATE_EPOCH). Ids end in 0..MAX_ID (2**32-2), the range the
    builder and the writer also take; values of the wrong type are refused, not converted.
    """

    mtime_ns: int | None = None
    clamp_mtime_ns: int | None = None
    all_root: bool = False
    force_uid: int | None = None
    force_gid: int | None = None
    uid_offset: int = 0
    gid_offset: int = 0

    def __post_init__(self) -> None:
        optional = ("mtime_ns", "clamp_mtime_ns", "force_uid", "force_gid")
        for name in (*optional, "uid_offset", "gid_offset"):
            value = getattr(self, name)
            if value is None and name in optional:
                continue
            if not isinstance(value, int) or isinstance(value, bool):
                raise InvalidInputError(f"{name} must be an int, not {type(value).__name__}")
        if not isinstance(self.all_root, bool):
            raise InvalidInputError(f"all_root must be a bool, not {type(self.all_root).__name__}")
        for name in ("force_uid", "force_gid"):
            value = getattr(self, name)
            if value is not None and not 0 <= value <= MAX_ID:
                raise InvalidInputError(f"{name} {value} is outside 0..{MAX_ID}")

    @property
    def is_noop(self) -> bool:
        """True when applying these overrides would change nothing."""
        return self == TreeOverrides()


def apply_overrides(root: Directory, overrides: TreeOverrides) -> None:
    """Rewrite times and owners of every inode below and including `root`, in place.

    Raises `InvalidInputError` naming the path when an offset takes an id outside 0..MAX_ID
    (2**32-2: (uid_t)-1 owns nothing); the tree may then be partly rewritten.
    """
    if overrides.is_noop:
        return
    root_id = 0 if overrides.all_root else None
    uid_base = overrides.force_uid if overrides.force_uid is not None else root_id
    gid_base = overrides.force_gid if overrides.force_gid is not None else root_id
    seen: set[int] = set()
    for path, node in iter_tree(root):
        if id(node) in seen:
            continue  # a hard link: the inode was changed under its first name
        seen.add(id(node))
        _apply_times(node, overrides)
        node.meta.uid = _new_id(node.meta.uid, uid_base, overrides.uid_offset, "uid", path)
        node.meta.gid = _new_id(node.meta.gid, gid_base, overrides.gid_offset, "gid", path)


def _apply_times(node: Node, overrides: TreeOverrides) -> None:
    meta = node.meta
    if overrides.mtime_ns is not None:
        meta.mtime_ns = overrides.mtime_ns
    elif overrides.clamp_mtime_ns is not None and meta.mtime_ns > overrides.clamp_mtime_ns:
        meta.mtime_ns = overrides.clamp_mtime_ns


def _new_id(current: int, base: int | None, offset: int, what: str, path: bytes) -> int:
    value = (current if base is None else base) + offset
    if not 0 <= value <= MAX_ID:
        shown = "/" + path.decode("utf-8", "surrogateescape")
        raise InvalidInputError(f"{what} {value} is outside 0..{MAX_ID}", path=shown)
    return value
