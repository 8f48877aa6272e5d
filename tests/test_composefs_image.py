"""composefs images byte-identical to mkcomposefs 1.0.8, pinned by the image's fs-verity digest.

The expected digests were produced by composefs's mkcomposefs 1.0.8 from the same dumps
(tests/composefs_cases.py); empty and simple are also the published vectors (composefs-rs pins
the same digests). Each image is also read back (own reader, and the kernel where it can mount).
"""

from __future__ import annotations

import hashlib
import io
import os
import stat
from pathlib import Path

import pytest

from erofsgen.composefs.dump import read_dump
from erofsgen.composefs.image import image_bytes, write_image
from erofsgen.errors import InvalidInputError
from erofsgen.reader import open_image
from erofsgen.verity import fsverity_digest

from .composefs_cases import CASES, ROOT, SIMPLE
from .support.kernel import MountImage

DIGESTS = {
    "empty-v0": "8f589e8f57ecb88823736b0d857ddca1e1068a23e264fad164b28f7038eb3682",
    "empty-v1": "14a26c957c84f6eb774b91205476adc13196c7c33b9dd97d08d43725ecb90b63",
    "simple-v0": "9f3f5620ee0c54708516467d0d58741e7963047c7106b245d94c298259d0fa01",
    "simple-v1": "ad6db6427568a1e4fdc772cbab7b6063f5eb4b33cb62982a740ba9213e5962b5",
    "special_v1": "b1c78c25db8638be5b9b483472d32ee9624d8d32ded626a91cd536116e8df97c",
    "special_v1-auto": "b1c78c25db8638be5b9b483472d32ee9624d8d32ded626a91cd536116e8df97c",
    "special_v1-v0": "ca8f91c7a310308bb5737cf1ab1d06395f83a2d9266423bfe5fe2b5f2c4e4218",
    "hardlinks": "81a12da200d0594a36f1b95dc5a87f0b7dc0190ef0b591ac857f0accbec405e5",
    "whiteouts-v0": "271b298f3b90c086ba30460e8ff063e534c83511d891221e907a9f5126f95d35",
    "whiteouts-auto": "8ad4c5df55ef8944d7fbf2a646cc073110cd3e6f3f091d67819aa1fa948abcbe",
    "xattrs": "e5244b6a9a33f5ca6e18fba590ad6b7db8af4c667c7f26eef0209753dc67fe50",
    "shapes": "e88d9b9c3411bc999163854bfd341960122cb008dfa00572438fcf7cc6793c2d",
    "extended": "49f1c7fe0a3af4486a409360041b5c3c57784acb3af4e49ace64a17b820a6184",
}

# Published sha256 of the whole image (composefs-and-blobs.md §1.15).
SHA256 = {
    "empty-v0": "c3dc5b0fc4afb0693a95e017fe5815e1f88f204d485df617541b5ea659aefb8b",
    "empty-v1": "18e13c704e2aae7f84be9fda89fdc4c5001c184d279b90a93434e872e5e7c190",
    "simple-v0": "850f94a6374fc4a920e8bc65d10bac1d1e2f3dd7b5c203d351e3ed74c08398aa",
    "simple-v1": "c2ef36f4493efe3d15c85789b2ead2b0ece9917ef663339484c8ae35927bc1a1",
}


def build(case: str) -> bytes:
    text, lo, hi = CASES[case]
    return image_bytes(read_dump(text.encode())[1], min_version=lo, max_version=hi)


@pytest.mark.parametrize("case", sorted(DIGESTS))
def test_digest_matches_mkcomposefs(case: str) -> None:
    image = build(case)
    assert len(image) % 4096 == 0
    assert fsverity_digest(image).hex() == DIGESTS[case]


@pytest.mark.parametrize("case", sorted(SHA256))
def test_published_sha256(case: str) -> None:
    image = build(case)
    assert len(image) == 16384
    assert hashlib.sha256(image).hexdigest() == SHA256[case]


def test_write_image_streams_the_same_bytes() -> None:
    root = read_dump(SIMPLE.encode())[1]
    out = io.BytesIO()
    digest = write_image(root, out)
    assert out.getvalue() == image_bytes(root)
    assert digest == fsverity_digest(out.getvalue())
    assert write_image(root) == digest  # measuring only


def test_header_and_superblock_fields() -> None:
    image = build("whiteouts-auto")
    assert image[:16] == bytes.fromhex("9a6278d0010000000000000001000000")
    sb = image[1024:1152]
    assert int.from_bytes(sb[8:12], "little") == 6  # MTIME | XATTR_FILTER
    assert int.from_bytes(sb[14:16], "little") == 36  # root nid
    assert int.from_bytes(sb[24:32], "little") == 10  # build time: the smallest mtime
    xattrs = build("xattrs")
    assert int.from_bytes(xattrs[8:12], "little") == 1  # an ACL somewhere: HAS_ACL


def test_reads_back_like_the_dump(tmp_path: Path) -> None:
    path = tmp_path / "img"
    path.write_bytes(build("special_v1"))
    with open_image(path) as img:
        names = img.listdir("/")
        assert len(names) == 6 + 256  # the entries and the whiteout stubs 00..ff
        assert img.read_bytes("/inline") == b"FOOBAR\nINAFILE\n"
        assert img.xattrs("/")["trusted.overlay.opaque"] == b"y"
        assert img.xattrs("/")["trusted.overlay.overlay.opaque"] == b"x"  # version 1 marker
        wh = img.stat("/whiteout")
        assert stat.S_ISREG(wh.mode) and wh.size == 0
        assert img.xattrs("/whiteout")["trusted.overlay.overlay.whiteout"] == b""
        assert img.xattrs("/escaped-xattr")["trusted.overlay.overlay.redirect"] == b"/foo\n"
        assert stat.S_ISCHR(img.stat("/00").mode)
        assert img.stat("/blockdev").size == 0


def test_external_file_and_hard_links(tmp_path: Path) -> None:
    path = tmp_path / "img"
    path.write_bytes(build("hardlinks"))
    with open_image(path) as img:
        st = img.stat("/a/file")
        assert st.size == 100000
        xattrs = img.xattrs("/a/file")
        digest = bytes((7 + k) & 0xFF for k in range(32))
        assert xattrs["trusted.overlay.metacopy"] == b"\x00\x24\x00\x01" + digest
        assert (
            xattrs["trusted.overlay.redirect"] == ("/" + digest.hex()[:2] + "/" + digest.hex()[2:]).encode()
        )
        assert img.lookup("/a/link") == img.lookup("/a/file") == img.lookup("/d")
        assert img.lookup("/c") == img.lookup("/b")
        assert img.stat("/b").nlink == 3  # taken from the dump, not counted


def test_rejects_what_mkcomposefs_cannot_write() -> None:
    too_big = ROOT + "/bigfile 9500000000000000 100777 1 0 0 0 0.0 - - -\n"
    with pytest.raises(InvalidInputError, match="too large"):
        image_bytes(read_dump(too_big.encode())[1])
    # libcomposefs counts each cloned node's xattrs from zero, so replacing a whiteout's own
    # user.overlay.whiteout underflows its estimate and the next addition is refused.
    crowded = ROOT + "/w 0 20644 1 0 0 0 0.0 - - - user.overlay.whiteout=" + "y" * 50 + "\n"
    with pytest.raises(InvalidInputError, match="no room for xattr"):
        image_bytes(read_dump(crowded.encode())[1])
    with pytest.raises(InvalidInputError, match="format versions"):
        image_bytes(read_dump(ROOT.encode())[1], min_version=2, max_version=2)


def test_kernel_mounts_the_image(tmp_path: Path, kernel_mount: MountImage) -> None:
    path = tmp_path / "img"
    path.write_bytes(build("shapes"))
    with kernel_mount(path) as mnt:
        names = set(os.listdir(mnt))
        assert {"big", "half", "-sorts-before-dot", "long-link", "huge"} <= names
        assert len(os.listdir(mnt / "big")) == 190
        for n in (1, 64, 2048, 2049, 4095, 4096, 4097, 5000):
            assert (mnt / f"inline{n}").read_bytes() == b"c" * n
        assert os.readlink(mnt / "long-link") == "t" * 3000
        assert os.readlink(mnt / "longest-link") == "v" * 4095
        assert os.stat(mnt / "huge").st_size == 2**44 + 1
        assert os.getxattr(mnt / "huge", "trusted.overlay.redirect").startswith(b"/")
