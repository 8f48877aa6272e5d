"""apply_overrides: fixed and clamped times, owners, offsets, hard links changed once."""

from __future__ import annotations

import pytest

from erofsgen.errors import InvalidInputError
from erofsgen.limits import MAX_ID
from erofsgen.model import Directory, File, Metadata, Symlink, iter_tree
from erofsgen.transform import TreeOverrides, apply_overrides


def _tree() -> tuple[Directory, File]:
    shared = File(Metadata(uid=10, gid=20, mtime_ns=500))
    sub = Directory(Metadata(mode=0o755, uid=1, gid=2, mtime_ns=100), {b"two": shared})
    root = Directory(
        Metadata(mode=0o755, uid=0, gid=0, mtime_ns=300),
        {b"one": shared, b"sub": sub, b"lnk": Symlink(Metadata(uid=3, gid=4, mtime_ns=200), b"one")},
    )
    return root, shared


def _values(root: Directory, field: str) -> dict[bytes, int]:
    return {path: getattr(node.meta, field) for path, node in iter_tree(root)}


def test_defaults_change_nothing() -> None:
    root, _ = _tree()
    before = [(p, n.meta.uid, n.meta.gid, n.meta.mtime_ns) for p, n in iter_tree(root)]
    assert TreeOverrides().is_noop
    apply_overrides(root, TreeOverrides())
    assert [(p, n.meta.uid, n.meta.gid, n.meta.mtime_ns) for p, n in iter_tree(root)] == before


def test_fixed_mtime() -> None:
    root, _ = _tree()
    apply_overrides(root, TreeOverrides(mtime_ns=42))
    assert set(_values(root, "mtime_ns").values()) == {42}


def test_clamp_lowers_only_newer_times() -> None:
    root, _ = _tree()
    apply_overrides(root, TreeOverrides(clamp_mtime_ns=250))
    assert _values(root, "mtime_ns") == {b"": 250, b"lnk": 200, b"one": 250, b"sub": 100, b"sub/two": 250}


def test_fixed_mtime_wins_over_clamp() -> None:
    root, _ = _tree()
    apply_overrides(root, TreeOverrides(mtime_ns=999, clamp_mtime_ns=1))
    assert set(_values(root, "mtime_ns").values()) == {999}


def test_all_root() -> None:
    root, _ = _tree()
    apply_overrides(root, TreeOverrides(all_root=True))
    assert set(_values(root, "uid").values()) == {0}
    assert set(_values(root, "gid").values()) == {0}


def test_force_ids_independently() -> None:
    root, _ = _tree()
    apply_overrides(root, TreeOverrides(force_uid=1000))
    assert set(_values(root, "uid").values()) == {1000}
    assert _values(root, "gid")[b"sub"] == 2
    apply_overrides(root, TreeOverrides(force_gid=7))
    assert set(_values(root, "gid").values()) == {7}


def test_offsets_apply_once_per_inode() -> None:
    root, shared = _tree()
    apply_overrides(root, TreeOverrides(uid_offset=100_000, gid_offset=5))
    assert (shared.meta.uid, shared.meta.gid) == (100_010, 25)  # two names, one change
    assert _values(root, "uid") == {
        b"": 100_000,
        b"lnk": 100_003,
        b"one": 100_010,
        b"sub": 100_001,
        b"sub/two": 100_010,
    }


def test_offsets_add_to_forced_ids() -> None:
    root, _ = _tree()
    apply_overrides(root, TreeOverrides(all_root=True, force_uid=9, uid_offset=1000, gid_offset=1))
    # --force-uid is more specific than --all-root; offsets are added afterwards.
    assert set(_values(root, "uid").values()) == {1009}
    assert set(_values(root, "gid").values()) == {1}


@pytest.mark.parametrize(
    ("overrides", "message", "path"),
    [
        (TreeOverrides(uid_offset=-2), "uid -2 is outside", "/"),
        (TreeOverrides(gid_offset=2**32 - 20), "gid 4294967296 is outside", "/one"),  # only gid 20 overflows
    ],
)
def test_offset_out_of_range_names_the_path(overrides: TreeOverrides, message: str, path: str) -> None:
    root, _ = _tree()
    with pytest.raises(InvalidInputError, match=message) as info:
        apply_overrides(root, overrides)
    assert info.value.path == path


@pytest.mark.parametrize("field", ["force_uid", "force_gid"])
@pytest.mark.parametrize("value", [-1, 2**32 - 1, 2**32])  # (uid_t)-1 owns nothing: the writer refuses it
def test_forced_id_out_of_range(field: str, value: int) -> None:
    with pytest.raises(InvalidInputError, match=field):
        TreeOverrides(**{field: value})  # type: ignore[arg-type]
    assert getattr(TreeOverrides(**{field: MAX_ID}), field) == MAX_ID  # type: ignore[arg-type]


def test_offset_onto_the_no_id_value_is_refused() -> None:
    root, _ = _tree()  # gids 0, 2, 4, 20: 20 + offset is (gid_t)-1
    with pytest.raises(InvalidInputError, match=f"gid {MAX_ID + 1} is outside 0..{MAX_ID}") as info:
        apply_overrides(root, TreeOverrides(gid_offset=MAX_ID + 1 - 20))
    assert info.value.path == "/one"


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("force_uid", True),
        ("force_gid", "0"),
        ("uid_offset", 1.0),
        ("gid_offset", None),
        ("mtime_ns", 1.5),
        ("clamp_mtime_ns", False),
        ("all_root", 1),
    ],
)
def test_wrong_types_are_refused_not_converted(field: str, value: object) -> None:
    with pytest.raises(InvalidInputError, match=field):
        TreeOverrides(**{field: value})  # type: ignore[arg-type]
