"""Comparing two snapshots: every difference, with messages that name path, field and values."""

from __future__ import annotations

import hashlib
import os
from collections.abc import Collection, Iterator
from typing import NamedTuple

from tests.support.snapshot import FIELDS, Entry, TreeSnapshot


class Difference(NamedTuple):
    path: str
    field: str
    expected: object
    got: object


def _diff_entry(path: str, want: Entry, got: Entry) -> Iterator[Difference]:
    for name in FIELDS:
        a, b = getattr(want, name), getattr(got, name)
        if name == "xattrs":
            da, db = dict(a), dict(b)
            for key in sorted(da.keys() | db.keys()):
                if da.get(key) != db.get(key):
                    yield Difference(path, f"xattr {key}", da.get(key), db.get(key))
        elif a != b:
            yield Difference(path, name, a, b)


def diff_trees(expected: TreeSnapshot, actual: TreeSnapshot) -> list[Difference]:
    """All differences: per path and field, then hard-link groups."""
    out: list[Difference] = []
    for path in sorted(expected.entries.keys() | actual.entries.keys(), key=os.fsencode):
        want, got = expected.entries.get(path), actual.entries.get(path)
        if want is None or got is None:
            out.append(
                Difference(path, "presence", want.kind if want else "absent", got.kind if got else "absent")
            )
        else:
            out.extend(_diff_entry(path, want, got))
    out.extend(_diff_hardlinks(expected, actual))
    return out


def _diff_hardlinks(expected: TreeSnapshot, actual: TreeSnapshot) -> Iterator[Difference]:
    # One line per changed group: a split or merge names all of its paths once.
    changed = {p for g in expected.hardlinks ^ actual.hardlinks for p in g}
    seen: set[str] = set()
    for path in sorted(changed, key=os.fsencode):
        if path not in seen:
            want, got = _group_of(expected, path), _group_of(actual, path)
            seen.update(want, got)
            yield Difference(path, "hard links", want, got)


def _group_of(snap: TreeSnapshot, path: str) -> list[str]:
    return next((sorted(g) for g in snap.hardlinks if path in g), [path])


def _show(field_name: str, value: object) -> str:
    if field_name == "mode" and isinstance(value, int):
        return f"0o{value:04o}"
    if isinstance(value, bytes) and len(value) > 48:
        return f"{value[:48]!r}... ({len(value)} bytes, sha256 {hashlib.sha256(value).hexdigest()[:12]})"
    text = repr(value)
    return text if len(text) <= 200 else text[:200] + "..."


def format_differences(diffs: list[Difference], max_diffs: int = 20) -> str:
    lines = [f"trees differ in {len(diffs)} place(s):"]
    for d in diffs[:max_diffs]:
        lines.append(
            f"  {d.path!r}: {d.field}: expected {_show(d.field, d.expected)}, got {_show(d.field, d.got)}"
        )
    if len(diffs) > max_diffs:
        lines.append(f"  ... and {len(diffs) - max_diffs} more")
    return "\n".join(lines)


def assert_same_tree(
    expected: TreeSnapshot,
    actual: TreeSnapshot,
    *,
    ignore_root_meta: bool = False,
    ignore_mtime: bool = False,
    ignore_owner: bool = False,
    ignore_fields: Collection[str] = (),
    max_diffs: int = 20,
) -> None:
    """Raise AssertionError listing the first `max_diffs` differences.

    `ignore_fields` takes Entry field names and "hardlinks".
    """
    unknown = set(ignore_fields) - set(FIELDS) - {"hardlinks"}
    if unknown:
        raise ValueError(f"unknown fields to ignore: {sorted(unknown)}")

    def norm(snap: TreeSnapshot) -> TreeSnapshot:
        return snap.normalized(
            ignore_root_meta=ignore_root_meta,
            ignore_mtime=ignore_mtime,
            ignore_owner=ignore_owner,
            ignore_fields=ignore_fields,
        )

    diffs = diff_trees(norm(expected), norm(actual))
    if diffs:
        raise AssertionError(format_differences(diffs, max_diffs))
