"""ImageBuilder's contract, checked with random values: a wrong value for any argument of any
call raises InvalidInputError (never TypeError, ValueError or AttributeError, never a silent
conversion) and leaves the tree as it was; right values are accepted."""

from __future__ import annotations

import io
import math
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from erofsgen.errors import InvalidInputError
from erofsgen.limits import MAX_ID
from erofsgen.model import Directory, Node
from erofsgen.sources.builder import ImageBuilder
from erofsgen.writer.options import WriteOptions

Strategy = st.SearchStrategy[Any]
Spec = dict[str, tuple[Strategy, Strategy]]  # argument -> (right values, wrong values)

# Objects no argument takes. Not lists or tuples: a list of str is a right exclude_paths.
ODD = st.sampled_from([object(), {"k": 1}, {1, 2}, 1j, Ellipsis, Exception("x")])
TEXT = st.text(max_size=4)
FLOATS = st.floats(allow_nan=True, allow_infinity=True)
NOT_INT = st.one_of(st.booleans(), FLOATS, TEXT, st.binary(max_size=4), ODD, st.just([1]))
NOT_PATH = st.one_of(st.integers(), st.booleans(), FLOATS, st.none(), ODD, st.just([b"a"]))


def _closed_file() -> io.BytesIO:
    f = io.BytesIO(b"data")
    f.close()
    return f


def _meta(xattr_names: list[str | bytes]) -> Spec:
    """The metadata keywords every entry call takes (`mtime_ns` is tried wrong only)."""
    xattr_value = st.one_of(st.binary(max_size=8), st.binary(max_size=8).map(bytearray))
    return {
        "mode": (
            st.none() | st.integers(0, 0o7777),
            NOT_INT | st.integers(max_value=-1) | st.integers(min_value=0o200000),
        ),
        "uid": (
            st.none() | st.integers(0, MAX_ID),
            NOT_INT | st.integers(max_value=-1) | st.just(MAX_ID + 1),
        ),
        "gid": (st.none() | st.integers(0, MAX_ID), NOT_INT | st.integers(min_value=MAX_ID + 1)),
        "mtime": (
            st.none() | st.integers(-(2**40), 2**40) | st.floats(-1e12, 1e12),
            st.one_of(
                st.booleans(),
                TEXT,
                st.binary(max_size=2),
                ODD,
                st.sampled_from([math.nan, math.inf, -math.inf, 2**64, -(2**64)]),
            ),
        ),
        "mtime_ns": (st.none(), st.one_of(st.booleans(), FLOATS, TEXT, ODD, st.just(2**96))),
        "xattrs": (
            st.none() | st.dictionaries(st.sampled_from(xattr_names), xattr_value, max_size=3),
            st.one_of(
                TEXT,
                st.integers(),
                st.just([("trusted.a", b"")]),
                st.dictionaries(
                    st.one_of(
                        st.integers(),
                        st.none(),
                        st.sampled_from(["", "user.", "trusted.", "security.", "system.", "other.x"]),
                        st.integers(250, 300).map(lambda n: "trusted." + "n" * n),
                    ),
                    xattr_value,
                    min_size=1,
                    max_size=2,
                ),
                st.dictionaries(
                    st.just("trusted.k"), st.one_of(TEXT, st.integers(), st.none(), FLOATS), min_size=1
                ),
            ),
        ),
    }


NEW_NAME = st.sampled_from(["new", "/new", "new/deeper/x", b"raw\xff", Path("p/q")])
BAD_PATH = st.one_of(
    NOT_PATH,
    st.integers(256, 300).map(lambda n: "n" * n),
    st.sampled_from(["a//b", "..", "x/./y", "a\0b", "etc/hosts/x"]),
)
BAD_NAME = BAD_PATH | st.sampled_from(["etc/hosts", "lnk"])  # for a new entry
MISSING = BAD_PATH | st.just("nope")  # for an existing one
ANY_NAMES: list[str | bytes] = ["trusted.a", b"security.b"]
PLAIN_NAMES: list[str | bytes] = ["trusted.a", b"security.b", "user.u", b"user.v"]


def _specs(tree_dir: Path) -> dict[str, Spec]:
    def entry(extra: Spec, names: list[str | bytes] = ANY_NAMES) -> Spec:
        return {"name": (NEW_NAME, BAD_NAME), **extra, **_meta(names)}

    existing = st.sampled_from(["etc/hosts", "/etc", "", "lnk"])
    return {
        "mkdir": entry({}, PLAIN_NAMES),
        "add_file": entry(
            {
                "data": (
                    st.none()
                    | st.binary(max_size=8)
                    | st.binary(max_size=8).map(lambda raw: memoryview(raw)),
                    st.one_of(TEXT, st.integers(), st.booleans(), FLOATS, ODD, st.just([1, 2])),
                ),
            },
            PLAIN_NAMES,
        ),
        "symlink": entry(
            {
                "target": (
                    st.text(st.characters(blacklist_characters="\0"), min_size=1, max_size=8),
                    NOT_PATH
                    | st.sampled_from(["", "\0", b"a\0"])
                    | st.integers(4096, 5000).map(lambda n: "t" * n),
                )
            }
        ),
        "mknod": entry(
            {
                "kind": (
                    st.sampled_from(["c", "b"]),
                    st.one_of(TEXT.filter(lambda k: k not in "cb"), NOT_PATH),
                ),
                "major": (st.integers(0, 4095), NOT_INT | st.none() | st.sampled_from([-1, 4096])),
                "minor": (st.integers(0, 2**20 - 1), NOT_INT | st.none() | st.sampled_from([-1, 2**20])),
            }
        ),
        "mkfifo": entry({}),
        "mksocket": entry({}),
        "link": entry({"target": (st.just("etc/hosts"), MISSING | st.just("etc"))}),
        "set_metadata": {"name": (st.sampled_from(["etc/hosts", "/etc", ""]), MISSING)} | _meta(ANY_NAMES),
        "setxattr": {
            "name": (existing, MISSING),
            "key": (st.sampled_from(ANY_NAMES), NOT_PATH | st.sampled_from(["", "user.", "system.", "x.y"])),
            "value": (st.binary(max_size=8), st.one_of(TEXT, st.integers(), st.none(), FLOATS, ODD)),
        },
        "add_tree": entry(
            {
                "source": (
                    st.just(tree_dir),
                    NOT_PATH | st.sampled_from(["/nonexistent/x", "/etc/hostname"]),
                ),
                "exclude_paths": (
                    st.lists(TEXT, max_size=2),
                    st.one_of(
                        TEXT.filter(bool),
                        st.integers(),
                        st.just([1]),
                        ODD.filter(lambda o: not isinstance(o, dict)),
                    ),
                ),
                "exclude_regexes": (st.just([r"\.pyc$"]), st.sampled_from(["x", ["("], [None], 5])),
                "read_xattrs": (st.booleans(), st.one_of(st.integers(), st.none(), TEXT, FLOATS)),
            },
            PLAIN_NAMES,
        ),
    }


# add_file's sources exclude each other: a wrong path or fileobj replaces data, a wrong size
# comes with a right fileobj.
FILE_SOURCES: Spec = {
    "path": (st.none(), NOT_PATH.filter(lambda p: p is not None) | st.sampled_from(["/nonexistent/x", "/"])),
    "fileobj": (
        st.none(),
        st.one_of(
            TEXT,
            st.binary(max_size=2),
            st.integers(),
            ODD,
            st.builds(io.StringIO, TEXT),
            st.builds(_closed_file),
        ),
    ),
    "size": (st.none(), st.one_of(st.booleans(), FLOATS, TEXT, st.sampled_from([-1, 5]))),
}

INIT: Spec = {
    "output": (
        st.none() | st.just("out.img"),
        st.one_of(st.integers(), st.binary(max_size=2), ODD, st.just([])),
    ),
    "options": (st.none() | st.just(WriteOptions()), st.one_of(TEXT, st.integers(), ODD)),
    "progress": (st.none() | st.just(print), st.one_of(TEXT, st.integers(), st.booleans())),
    "mtime": _meta([])["mtime"],
    "mtime_ns": _meta([])["mtime_ns"],
}


@pytest.fixture(scope="module")
def specs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Spec]:
    tree_dir = tmp_path_factory.mktemp("graft")
    (tree_dir / "f").write_bytes(b"f")
    return _specs(tree_dir)


def _sample() -> ImageBuilder:
    b = ImageBuilder(mtime=7)
    b.add_file("etc/hosts", data=b"h", xattrs={"user.a": b"1"})
    b.symlink("lnk", target="etc")
    return b


def _shape(node: Node) -> object:
    meta = (node.meta.mode, node.meta.uid, node.meta.gid, node.meta.mtime_ns, dict(node.meta.xattrs))
    if isinstance(node, Directory):
        return meta, {name: _shape(child) for name, child in node.children.items()}
    return meta, type(node)


def _arguments(data: st.DataObject, spec: Spec, wrong: str | None) -> dict[str, Any]:
    return {arg: data.draw(bad if arg == wrong else good, label=arg) for arg, (good, bad) in spec.items()}


def _call(b: ImageBuilder, method: str) -> Callable[..., object]:
    return getattr(b, method)  # type: ignore[no-any-return]


@settings(max_examples=400)
@given(data=st.data())
def test_a_wrong_value_raises_invalid_input_and_changes_nothing(
    data: st.DataObject, specs: dict[str, Spec]
) -> None:
    method = data.draw(st.sampled_from([*specs, "add_file source", "__init__"]), label="method")
    if method == "__init__":
        wrong = data.draw(st.sampled_from(sorted(INIT)), label="wrong")
        with pytest.raises(InvalidInputError):
            ImageBuilder(**_arguments(data, INIT, wrong))
        return
    b = _sample()
    before = _shape(b.tree)
    if method == "add_file source":
        method, wrong = "add_file", data.draw(st.sampled_from(sorted(FILE_SOURCES)), label="wrong")
        spec = specs["add_file"] | FILE_SOURCES
        if wrong == "size":
            spec = spec | {"fileobj": (st.builds(io.BytesIO, st.just(b"abc")), st.nothing())}
        arguments = _arguments(data, spec, wrong)
        arguments["data"] = None
    else:
        wrong = data.draw(st.sampled_from(sorted(specs[method])), label="wrong")
        arguments = _arguments(data, specs[method], wrong)
    with pytest.raises(InvalidInputError):
        _call(b, method)(**arguments)
    assert _shape(b.tree) == before


@settings(max_examples=200)
@given(data=st.data())
def test_right_values_are_accepted(data: st.DataObject, specs: dict[str, Spec]) -> None:
    method = data.draw(st.sampled_from([*specs, "__init__"]), label="method")
    if method == "__init__":
        ImageBuilder(**_arguments(data, INIT, None))
        return
    b = _sample()
    _call(b, method)(**_arguments(data, specs[method], None))
    if method not in ("setxattr", "set_metadata"):
        assert _shape(b.tree) != _shape(_sample().tree)


@given(mtime_ns=st.integers(-(2**70), 2**70))
def test_mtime_ns_is_kept_exactly(mtime_ns: int) -> None:
    assert ImageBuilder().mkfifo("f", mtime_ns=mtime_ns).meta.mtime_ns == mtime_ns
