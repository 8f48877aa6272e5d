"""Open-time checks: magic, block size, checksum, refused features, i_format bits, devices."""

from __future__ import annotations

import io
from typing import Any

import pytest

import erofsgen
from erofsgen.errors import CorruptImageError, InvalidInputError, UnsupportedFeatureError
from erofsgen.format.constants import CompressionAlgorithm, FeatureCompat, FeatureIncompat
from erofsgen.format.superblock import CHECKSUM_OFFSET, SUPERBLOCK, sb_checksum
from tests.test_reader_zmap import BS, NID, build_image, standard_extents

SB = 1024


def image_with(**fields: Any) -> bytes:
    """The hand-built compressed image with superblock fields replaced."""
    img = bytearray(build_image(standard_extents(big=False)))
    rec = SUPERBLOCK.unpack(img, SB)._replace(**fields)
    img[SB : SB + SUPERBLOCK.size] = SUPERBLOCK.pack(rec)
    return bytes(img)


def open_bytes(data: bytes, *, strict_checksum: bool = True) -> erofsgen.Image:
    return erofsgen.open_image(io.BytesIO(data), strict_checksum=strict_checksum)


def test_good_image_decodes() -> None:
    with open_bytes(build_image(standard_extents(big=False))) as img:
        sb = img.superblock
        assert sb.block_size == BS and sb.checksum_verified is None
        assert sb.feature_incompat & FeatureIncompat.ZERO_PADDING
        assert sb.available_compr_algs == 1 << CompressionAlgorithm.LZ4
        assert sb.volume_name == "test" and sb.uuid.int == 0


@pytest.mark.parametrize(
    "fields,match",
    [
        ({"blkszbits": 8}, "blkszbits"),
        ({"blkszbits": 17}, "blkszbits"),
        ({"dirblkbits": 1}, "dirblkbits"),
        ({"sb_extslots": 200}, "sb_extslots"),
    ],
)
def test_corrupt_superblocks(fields: dict[str, int], match: str) -> None:
    with pytest.raises(CorruptImageError, match=match):
        open_bytes(image_with(**fields))


@pytest.mark.parametrize(
    "bit,match",
    [
        (FeatureIncompat.BIT48, "48BIT"),
        (FeatureIncompat.METABOX, "METABOX"),
        (0x4000, "unknown incompat"),
    ],
)
def test_refused_features_are_named(bit: int, match: str) -> None:
    with pytest.raises(UnsupportedFeatureError, match=match):
        open_bytes(image_with(feature_incompat=FeatureIncompat.ZERO_PADDING | bit))


def test_fragments_are_read() -> None:
    features = FeatureIncompat.ZERO_PADDING | FeatureIncompat.FRAGMENTS
    with open_bytes(image_with(feature_incompat=features)) as img:
        assert img.superblock.has(FeatureIncompat.FRAGMENTS)


def test_checksum_strict_and_lenient() -> None:
    img = bytearray(image_with(feature_compat=FeatureCompat.SB_CHKSUM))
    img[CHECKSUM_OFFSET : CHECKSUM_OFFSET + 4] = sb_checksum(img, BS).to_bytes(4, "little")
    with open_bytes(bytes(img)) as good:
        assert good.superblock.checksum_verified is True
    img[BS - 1] ^= 1  # the checksum covers the rest of block 0
    with pytest.raises(CorruptImageError, match="checksum"):
        open_bytes(bytes(img))
    with open_bytes(bytes(img), strict_checksum=False) as lenient:
        assert lenient.superblock.checksum_verified is False


def test_inode_format_bits() -> None:
    img = bytearray(build_image(standard_extents(big=False)))
    img[NID * 32] |= 0x10  # NLINK_1 / DOT_OMITTED
    with open_bytes(bytes(img)) as image, pytest.raises(UnsupportedFeatureError, match="48-bit"):
        image.inode(NID)
    img[NID * 32] = 0x0A  # layout 5
    with open_bytes(bytes(img)) as image, pytest.raises(UnsupportedFeatureError, match="layout"):
        image.inode(NID)
    img[NID * 32] = 0x06
    img[NID * 32 + 4 : NID * 32 + 6] = (0o170644).to_bytes(2, "little")  # no such file type
    with open_bytes(bytes(img)) as image, pytest.raises(CorruptImageError, match="i_mode"):
        image.inode(NID)
    with open_bytes(bytes(img)) as image, pytest.raises(CorruptImageError, match="outside"):
        image.inode(10**9)


def test_devices_given_without_a_table() -> None:
    with pytest.raises(InvalidInputError, match="has 0, 1 were given"):
        erofsgen.open_image(io.BytesIO(image_with()), devices=[io.BytesIO(b"")])


def test_tiny_and_missing_files() -> None:
    with pytest.raises(InvalidInputError, match="not an EROFS image"):
        open_bytes(b"\0" * 100)
    with pytest.raises(InvalidInputError, match="cannot open"):
        erofsgen.open_image("/nonexistent/image")
