"""Reading composefs images back: composefs-info's dump, and dump → image → dump round trips."""

from __future__ import annotations

import random
import stat
from dataclasses import replace
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from erofsgen.composefs.dump import DumpEntry, format_dump, read_dump
from erofsgen.composefs.image import image_bytes
from erofsgen.composefs.read import dump_entries, read_image
from erofsgen.errors import CorruptImageError, ErofsgenError

from .composefs_cases import CASES, SPECIAL_V1

# What composefs-info 1.0.8 `dump` prints for the special_v1 image (checked against it).
SPECIAL_V1_INFO = (
    "/ 4096 40555 2 0 0 0 1633950376.0 - - - trusted.foo1=bar-1 trusted.overlay.opaque=x"
    " user.foo2=bar-2 user.overlay.opaque=x\n"
    "/blockdev 0 60777 1 0 0 107690 1633950376.0 - - - trusted.bar=bar-2\n"
    "/chardev 0 20777 1 0 0 10769 1633950376.0 - - - trusted.foo=bar-2\n"
    "/escaped-xattr 0 100777 1 0 0 0 1633950376.0 - - - trusted.overlay.redirect=/foo\\n"
    " user.overlay.redirect=/foo\\n user.foo=bar-2\n"
    "/fifo 0 10777 1 0 0 0 1633950376.0 - - - trusted.bar=bar-2\n"
    "/inline 15 100777 1 0 0 0 1633950376.0 - FOOBAR\\nINAFILE\\n - user.foo=bar-2\n"
    "/whiteout 0 20777 1 0 0 0 1633950376.0 - - - trusted.foo=bar-2\n"
)


def dump_of(image: bytes) -> bytes:
    return format_dump(dump_entries(read_image(image)))


def test_dump_like_composefs_info() -> None:
    image = image_bytes(read_dump(SPECIAL_V1.encode())[1], min_version=1, max_version=1)
    assert dump_of(image).decode() == SPECIAL_V1_INFO


# mkcomposefs itself does not round-trip "shapes": a character device with a non-zero size
# gets an extended inode, but its size is not stored, so the read-back tree differs.
@pytest.mark.parametrize("case", sorted(set(CASES) - {"shapes"}))
def test_dump_turns_back_into_the_same_image(case: str) -> None:
    text, lo, hi = CASES[case]
    image = image_bytes(read_dump(text.encode())[1], min_version=lo, max_version=hi)
    again = image_bytes(read_dump(dump_of(image))[1], min_version=lo, max_version=hi)
    assert again == image


def test_hard_links_and_redirects_read_back() -> None:
    text, lo, hi = CASES["hardlinks"]
    image = image_bytes(read_dump(text.encode())[1], min_version=lo, max_version=hi)
    entries = {e.path: e for e in dump_entries(read_image(image))}
    assert entries[b"/a/link"].hardlink and entries[b"/a/link"].payload == b"/a/file"
    assert entries[b"/d"].hardlink and entries[b"/d"].payload == b"/a/file"
    assert entries[b"/a/file"].digest == bytes((7 + k) & 0xFF for k in range(32))
    assert entries[b"/a/file"].payload is not None and len(entries[b"/a/file"].payload) == 65


def test_short_redirect_reads_one_byte_too_far() -> None:
    """libcomposefs 1.0.8 reads a redirect one byte past its end; so does composefs-info here."""
    text = "/ 0 40755 2 0 0 0 0.0 - - -\n/f 10 100644 1 0 0 0 0.0 ab/cdef - -\n"
    image = image_bytes(read_dump(text.encode())[1])
    entries = {e.path: e for e in dump_entries(read_image(image))}
    # The two bytes after the value are the file's chunk map (0xffffffff); composefs-info 1.0.8
    # prints this very payload for this image.
    assert entries[b"/f"].payload == b"ab/cdef\xff\xff"


def test_not_a_composefs_image() -> None:
    with pytest.raises(CorruptImageError, match="wrong magic"):
        read_image(bytes(8192))
    image = bytearray(image_bytes(read_dump(b"/ 0 40755 2 0 0 0 0.0 - - -\n")[1]))
    image[1024] ^= 1
    with pytest.raises(CorruptImageError, match="superblock"):
        read_image(bytes(image))


names = st.binary(min_size=1, max_size=10).filter(
    lambda n: b"/" not in n and b"\0" not in n and n not in (b".", b"..")
)
# Names the reader treats specially (overlay markers) are left out: mkcomposefs does not
# round-trip them either.
xattr_names = st.sampled_from(
    [b"user.a", b"user.b", b"trusted.t", b"security.s", b"other.o", b"trusted.overlay.x"]
)
xattrs = st.dictionaries(xattr_names, st.binary(max_size=8), max_size=3)


@st.composite
def trees(draw: st.DrawFn) -> tuple[list[DumpEntry], int]:
    mtime = draw(st.sampled_from([0, 7]))
    entries = [DumpEntry(b"/", 0, 0o40755, 2, mtime_sec=mtime, xattrs=tuple(draw(xattrs).items()))]
    dirs: list[bytes] = [b""]
    files: list[bytes] = []
    for name in draw(st.lists(names, max_size=12, unique=True)):
        path = draw(st.sampled_from(dirs)) + b"/" + name
        kind = draw(st.sampled_from(["dir", "inline", "ext", "lnk", "chr", "whiteout", "fifo", "hard"]))
        sec = draw(st.sampled_from([mtime, mtime, 99]))
        common = DumpEntry(path, 0, 0, mtime_sec=sec, uid=draw(st.sampled_from([0, 70000])),
                           xattrs=tuple(draw(xattrs).items()))  # fmt: skip
        # The reader takes the first name met depth first as the inode's own, so a link must
        # come after its target in that order to read back as the same link (as with
        # mkcomposefs: otherwise the two names swap roles and the inode order changes).
        earlier = [f for f in files if f.split(b"/") < path.split(b"/")]
        if kind == "hard" and earlier:
            entries.append(
                DumpEntry(path, 0, 0o100644, payload=draw(st.sampled_from(earlier)), hardlink=True)
            )
            continue
        if kind == "dir":
            entries.append(_with(common, mode=0o40755))
            dirs.append(path)
            continue
        if kind == "inline":
            data = draw(st.binary(min_size=1, max_size=5000))
            entries.append(_with(common, mode=0o100644, size=len(data), content=data))
        elif kind == "ext":
            digest = draw(st.binary(min_size=32, max_size=32))
            payload = (digest.hex()[:2] + "/" + digest.hex()[2:]).encode()
            size = draw(st.integers(1, 2**40))
            entries.append(_with(common, mode=0o100644, size=size, payload=payload, digest=digest))
        elif kind == "lnk":
            target = draw(st.binary(min_size=1, max_size=4095).filter(lambda b: b"\0" not in b))
            entries.append(_with(common, mode=stat.S_IFLNK | 0o777, size=len(target), payload=target))
        elif kind == "chr":
            entries.append(_with(common, mode=stat.S_IFCHR | 0o600, rdev=draw(st.integers(1, 2**32 - 1))))
        elif kind == "whiteout":
            entries.append(_with(common, mode=stat.S_IFCHR | 0o600))
        else:
            entries.append(_with(common, mode=stat.S_IFIFO | 0o644))
        files.append(path)
    return entries, draw(st.sampled_from([0, 1]))


def _with(entry: DumpEntry, **changes: Any) -> DumpEntry:
    return replace(entry, **changes)


@settings(max_examples=80, deadline=None)
@given(trees())
def test_image_dump_image_round_trip(case: tuple[list[DumpEntry], int]) -> None:
    entries, version = case
    image = image_bytes(read_dump(format_dump(entries))[1], min_version=0, max_version=version)
    assert image_bytes(read_dump(dump_of(image))[1], min_version=0, max_version=version) == image


def test_damaged_images_raise_only_erofsgen_errors() -> None:
    """Random byte changes in the metadata: a dump or a CorruptImageError, never another error."""
    images = [
        image_bytes(read_dump(t.encode())[1], min_version=lo, max_version=hi) for t, lo, hi in CASES.values()
    ]
    rng = random.Random(7)
    outcomes = set()
    for _ in range(1500):
        image = bytearray(rng.choice(images))
        for _ in range(rng.choice([1, 3, 20])):
            image[rng.randrange(1024, min(len(image), 16384))] = rng.randrange(256)
        try:
            format_dump(dump_entries(read_image(bytes(image))))
            outcomes.add("read")
        except ErofsgenError:
            outcomes.add("refused")
    assert outcomes == {"read", "refused"}
