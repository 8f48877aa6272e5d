"""The device table: one 128-byte slot per extra (blob) device."""

from __future__ import annotations

from typing import NamedTuple

import construct as cs

from .codec import FixedCodec

# struct erofs_deviceslot
DeviceSlot = cs.Struct(
    "tag" / cs.Bytes(64),  # NUL-terminated identifier (mkfs: digest or path)
    "blocks_lo" / cs.Int32ul,  # device size in blocks
    "uniaddr_lo" / cs.Int32ul,  # first block of this device in the unified address space
    "blocks_hi" / cs.Int16ul,  # 48BIT only
    "uniaddr_hi" / cs.Int16ul,  # 48BIT only
    "reserved" / cs.Bytes(52),
)


class DeviceSlotRec(NamedTuple):
    tag: bytes
    blocks_lo: int
    uniaddr_lo: int
    blocks_hi: int
    uniaddr_hi: int
    reserved: bytes


DEVICE_SLOT = FixedCodec(DeviceSlot, DeviceSlotRec)


def device_id_mask(extra_devices: int) -> int:
    """The kernel masks chunk-index device ids with roundup_pow_of_two(n + 1) - 1."""
    n = extra_devices + 1
    return (1 << (n - 1).bit_length()) - 1
