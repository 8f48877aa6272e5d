"""composefs-dump(5) parsing and writing: escapes, fields, hard links, rejections, round trips."""

from __future__ import annotations

import stat
from dataclasses import replace

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from erofsgen.composefs.dump import DumpEntry, DumpError, format_dump, parse_dump, read_dump
from erofsgen.composefs.escape import EscapeError, escape, unescape

ROOT = b"/ 4096 40555 2 0 0 0 1633950376.0 - - -\n"
DIGEST = "5a" * 32


def test_escape_spelling() -> None:
    assert escape(b"a b\\c\n\r\t\x00\xff=") == b"a\\x20b\\\\c\\n\\r\\t\\x00\\xff="
    assert escape(b"k=v", equal=True) == b"k\\x3dv"
    assert escape(b"-", lone_dash=True) == b"\\x2d"
    assert escape(b"--", lone_dash=True) == b"--"
    assert unescape(b"\\x41\\x3D\\\\\\n") == b"A=\\\n"


@pytest.mark.parametrize("bad", [b"\\", b"\\x4", b"\\xg0", b"\\q"])
def test_bad_escapes(bad: bytes) -> None:
    with pytest.raises(EscapeError):
        unescape(bad)


def test_all_fields() -> None:
    text = (
        ROOT
        + b"/a\\x20b 1234 100644 3 7 8 0 12.34 5a/"
        + DIGEST[2:].encode()
        + b" - "
        + DIGEST.encode()
        + b" user.k\\x3d=v\\x20 trusted.x=\n"
        + b"/dev 0 20600 1 0 0 1025 0.0 - - -\n"
        + b"/ln 7 120777 1 0 0 0 0.0 /target - -\n"
        + b"/in 3 100600 1 0 0 0 0.0 - a\\nb -\n"
        + b"/hard 0 @100644 1 0 0 0 0.0 /a\\x20b - -\n"
    )
    entries, root = read_dump(text)
    a = entries[1]
    assert a.path == b"/a b"
    assert (a.size, a.mode, a.nlink, a.uid, a.gid, a.mtime_sec, a.mtime_nsec) == (
        1234,
        0o100644,
        3,
        7,
        8,
        12,
        34,
    )
    assert a.payload == b"5a/" + DIGEST[2:].encode()
    assert a.digest == bytes.fromhex(DIGEST)
    assert a.xattrs == ((b"user.k=", b"v "), (b"trusted.x", b""))
    assert entries[2].rdev == 1025
    assert entries[3].size == 7 and entries[3].payload == b"/target"
    assert entries[4].content == b"a\nb"
    assert entries[5].hardlink and entries[5].payload == b"/a b"
    assert root.children is not None
    assert root.children[b"hard"].link_to is root.children[b"a b"]
    assert format_dump(entries) == text


def test_rdev_of_a_non_device_is_ignored_unless_strict() -> None:
    text = ROOT + b"/f 0 100644 1 0 0 5 0.0 - - -\n"
    assert parse_dump(text)[1].rdev == 0
    with pytest.raises(DumpError, match="dump:2: non-zero devnum"):
        parse_dump(text, strict=True)


def test_missing_trailing_newline() -> None:
    assert len(parse_dump(ROOT + b"/f 0 100644 1 0 0 0 0.0 - - -")) == 2
    with pytest.raises(DumpError, match="dump:2: missing trailing newline"):
        parse_dump(ROOT + b"/f 0 100644 1 0 0 0 0.0 - - -", strict=True)


def test_repeated_xattr_keeps_the_last_value() -> None:
    entry = parse_dump(ROOT.replace(b"-\n", b"- a.b=1 a.c=2 a.b=3\n"))[0]
    assert dict(entry.xattrs) == {b"a.b": b"3", b"a.c": b"2"}


# Each of these is refused by mkcomposefs 1.0.8 too; the message names the line.
SHOULD_FAIL = [
    (b"/f 5004 100777 1 0 0 0 0.0 - " + b"x" * 5004 + b" -\n", 2, "exceeds maximum 5000"),
    (b"/rootlink 4096 @40555 2 0 0 0 0.0 / - -\n", 2, "directories can't be hardlinked"),
    (b"/. 4096 40555 2 0 0 0 0.0 - - -\n", 2, r"invalid \. or \.\."),
    (b"/.. 4096 40555 2 0 0 0 0.0 - - -\n", 2, r"invalid \. or \.\."),
    (b"/nolinkname 0 120777 1 0 0 0 0.0 - - -\n", 2, "empty target"),
    (b"// 4096 40555 2 0 0 0 0.0 - - -\n", 2, "empty file name"),
    (b"/k 0 100644 1 0 0 0 0.0 - - - =somevalue\n", 2, "xattr name of 0 bytes"),
    (b"/l 5 120777 1 0 0 0 0.0 " + b"a" * 4096 + b" - -\n", 2, "payload of 4096 bytes"),
    (b"/k 0 100644 1 0 0 0 0.0 - - - " + b"a" * 256 + b"=x\n", 2, "xattr name of 256 bytes"),
    (b"/v 0 100644 1 0 0 0 0.0 - - - a=" + b"b" * 40000 + b"\n", 2, "more than 32767 bytes"),
    (b"/v 0 644 1 0 0 0 0.0 - - -\n", 2, "invalid mode 644"),
    (b"/n 3 0 1 0 0 0 0.0 foo - -\n", 2, "invalid mode 0"),
    (b"/b 0 @63340777 2 0 0 0 0.0 /b - -\n", 2, "self-referential hardlink /b"),
    (b"/x/y 0 100644 1 0 0 0 0.0 - - -\n", 2, "parent directory missing"),
    (b"/f 0 100644 1 0 0 0 0.0 - - -\n/f/y 0 100644 1 0 0 0 0.0 - - -\n", 3, "must be a directory"),
    (b"/f 0 100644 1 0 0 0 0.0 - - -\n/f 0 100644 1 0 0 0 0.0 - - -\n", 3, "already exists"),
    (b"/ 4096 40555 2 0 0 0 0.0 - - -\n", 2, "multiple roots"),
    (b"/h 0 @100644 1 0 0 0 0.0 /nowhere - -\n", 2, "no target at /nowhere"),
    (b"/h 0 @100644 1 0 0 0 0.0 - - -\n", 2, "no target path"),
    (b"/f 3 100644 1 0 0 0 0.0 - ab -\n", 2, "content size 2, must match size 3"),
    (b"/f 0 100644 1 0 0 0 0 - - -\n", 2, "mtime nanoseconds"),
    (b"/f 0 100644 x 0 0 0 0.0 - - -\n", 2, "invalid nlink"),
    (b"/f 0 100644 1 0 0 0 0.0 - - - a\n", 2, "missing = in xattr"),
    (b"/f 0 100644 1 0 0 0 0.0 - - -  a=b\n", 2, "missing = in xattr"),
    (b"/f\\q 0 100644 1 0 0 0 0.0 - - -\n", 2, "unsupported escape"),
    (b"/f\x00 0 100644 1 0 0 0 0.0 - - -\n", 2, "embedded NUL"),
    (b"\n", 2, "invalid empty path"),
    (b"/" + b"n" * 256 + b" 0 100644 1 0 0 0 0.0 - - -\n", 2, "file name of 256 bytes"),
]


# mkcomposefs 1.0.8 accepts these but mangles them (wraps or truncates numbers, keeps
# uninitialised digest bytes, cuts names at the NUL, links a name to a directory inode).
MANGLED = [
    (b"/h 0 @100644 1 0 0 0 0.0 / - -\n", 2, "hard link to the directory"),
    (b"/f 0 100644 1 -1 0 0 0.0 - - -\n", 2, "invalid uid"),
    (b"/f 0 100644 1 4294967296 0 0 0.0 - - -\n", 2, "uid 4294967296 is out of range"),
    (b"/f 1 100644 1 0 0 0 0.0 - - 5a\n", 2, "digest must be 64 hex"),
    (b"/f\\x00g 0 100644 1 0 0 0 0.0 - - -\n", 2, "path contains a NUL"),
    (b"/f 0 100644 1 0 0 0 0.0 - - - a\\x00b=c\n", 2, "xattr name contains a NUL"),
]


@pytest.mark.parametrize(
    ("body", "line", "message"), SHOULD_FAIL + MANGLED, ids=[m for _, _, m in SHOULD_FAIL + MANGLED]
)
def test_should_fail(body: bytes, line: int, message: str) -> None:
    with pytest.raises(DumpError, match=f"^dump:{line}: .*{message}"):
        parse_dump(ROOT + body)


def test_root_must_come_first() -> None:
    with pytest.raises(DumpError, match="dump:1: root node not present"):
        parse_dump(b"/f 0 100644 1 0 0 0 0.0 - - -\n")
    with pytest.raises(DumpError, match="dump:1: root must be a directory"):
        parse_dump(b"/ 0 100644 1 0 0 0 0.0 - - -\n")
    with pytest.raises(DumpError, match="no root directory"):
        parse_dump(b"")


def test_hard_link_cycle() -> None:
    text = ROOT + b"/a 0 @100644 1 0 0 0 0.0 /b - -\n/b 0 @100644 1 0 0 0 0.0 /a - -\n"
    with pytest.raises(DumpError, match="cycle"):
        parse_dump(text)


names = st.binary(min_size=1, max_size=12).filter(
    lambda n: b"/" not in n and b"\0" not in n and n not in (b".", b"..")
)
nul_free = st.binary(max_size=20).filter(lambda b: b"\0" not in b)
xattr_lists = st.dictionaries(
    st.binary(min_size=1, max_size=20).filter(lambda b: b"\0" not in b), st.binary(max_size=30), max_size=4
)


@st.composite
def dumps(draw: st.DrawFn) -> list[DumpEntry]:
    entries = [
        DumpEntry(b"/", 0, 0o40000 | draw(st.integers(0, 0o7777)), 2, xattrs=tuple(draw(xattr_lists).items()))
    ]
    dirs = [b""]
    files: list[bytes] = []
    for name in draw(st.lists(names, max_size=8, unique=True)):
        parent = draw(st.sampled_from(dirs))
        path = parent + b"/" + name
        kind = draw(st.sampled_from(["dir", "reg", "ext", "lnk", "dev", "fifo", "hard"]))
        common = DumpEntry(
            path,
            0,
            0,
            nlink=draw(st.integers(0, 2**32 - 1)),
            uid=draw(st.integers(0, 2**32 - 1)),
            gid=draw(st.integers(0, 70000)),
            mtime_sec=draw(st.integers(0, 2**63 - 1)),
            mtime_nsec=draw(st.integers(0, 999_999_999)),
            xattrs=tuple(draw(xattr_lists).items()),
        )
        perm = draw(st.integers(0, 0o7777))
        if kind == "hard" and files:
            entries.append(
                DumpEntry(path, 0, stat.S_IFREG | perm, payload=draw(st.sampled_from(files)), hardlink=True)
            )
            continue
        if kind == "dir":
            entries.append(replace(common, size=0, mode=stat.S_IFDIR | perm))
            dirs.append(path)
            continue
        if kind == "lnk":
            target = draw(nul_free.filter(bool))
            entries.append(replace(common, size=len(target), mode=stat.S_IFLNK | perm, payload=target))
        elif kind == "dev":
            entries.append(
                replace(common, size=0, mode=stat.S_IFCHR | perm, rdev=draw(st.integers(0, 2**32 - 1)))
            )
        elif kind == "fifo":
            entries.append(replace(common, size=0, mode=stat.S_IFIFO | perm))
        elif kind == "ext":
            entries.append(
                replace(
                    common,
                    size=draw(st.integers(1, 2**40)),
                    mode=stat.S_IFREG | perm,
                    payload=draw(st.one_of(st.none(), nul_free)),
                    digest=draw(st.one_of(st.none(), st.binary(min_size=32, max_size=32))),
                )
            )
        else:
            content = draw(st.binary(min_size=1, max_size=50))
            entries.append(replace(common, size=len(content), mode=stat.S_IFREG | perm, content=content))
        files.append(path)
    return entries


@settings(max_examples=200, deadline=None)
@given(dumps())
def test_round_trip(entries: list[DumpEntry]) -> None:
    text = format_dump(entries)
    assert parse_dump(text, strict=True) == entries
