"""`erofsgen mount IMAGE MOUNTPOINT`: mount an image read-only with its blob devices.

The devices are found (and checked) before anything is mounted: a blob that is missing, shorter
than the device table says, or with --verify does not hash to its tag is an error naming it,
and nothing is mounted. See erofsgen.blobs.mount for how (file-backed, or loop devices).
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from ..blobs.devices import devices_inside, find_devices
from ..blobs.mount import MOUNT_METHOD_ENV, mount_image
from ..errors import InvalidInputError
from ..reader.names import escape_name
from . import EXIT_OK
from .common import add_blob_store_option, add_device_option


def register(subparsers: Any) -> None:
    """Add the `mount` sub-command."""
    parser = subparsers.add_parser(
        "mount",
        help="mount an image read-only with its blob devices",
        description="Mount IMAGE read-only as EROFS at MOUNTPOINT (needs root), its extra devices "
        "given with --device or found by tag with --blob-store, checked before mounting. Without "
        "either, the devices must lie inside the image (flat mode), or the mount is refused. Regular files "
        "are mounted without loop devices where the kernel can (Linux 6.12+); elsewhere, or with "
        f"--loop or {MOUNT_METHOD_ENV}=loop, through read-only loop devices that detach "
        "themselves at unmount. Undo with `erofsgen umount`.",
    )
    parser.add_argument("image", metavar="IMAGE", help="EROFS image")
    parser.add_argument("mountpoint", metavar="MOUNTPOINT", help="an existing directory")
    add_blob_store_option(parser)
    add_device_option(parser)
    parser.add_argument(
        "--verify",
        action="store_true",
        help="hash every blob first and refuse one that does not match its tag",
    )
    parser.add_argument(
        "--loop", action="store_true", help="mount through loop devices even where files work"
    )
    parser.add_argument(
        "--objects",
        action="append",
        metavar="DIR",
        help="IMAGE is a composefs image: mount it under overlayfs with DIR (repeatable) as its "
        "data-only object layers (Linux 6.7+)",
    )
    parser.add_argument(
        "--require-verity",
        action="store_true",
        help="with --objects: every object's fs-verity digest must match the image (verity=require)",
    )
    parser.add_argument(
        "--digest", metavar="HEX", help="with --objects: the image's own fs-verity digest, checked first"
    )
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    """Resolve and check the devices, then mount."""
    if args.objects:
        from ..composefs.mount import mount_composefs

        mount_composefs(
            args.image, args.mountpoint, args.objects, verity=args.require_verity, expected_digest=args.digest
        )
        return EXIT_OK
    if args.require_verity or args.digest:
        raise InvalidInputError("--require-verity and --digest go with --objects (a composefs image)")
    devices: list[Path] = []
    if args.blob_store or args.device:
        found = find_devices(args.image, args.blob_store, args.device, verify=args.verify)
        devices = [loc.path for loc in found if loc.path is not None]
    elif not devices_inside(args.image):
        # The kernel would read them from the image anyway (flat mode), i.e. the wrong blocks.
        raise InvalidInputError(
            "the image's extra devices are not inside it; give them with --blob-store or --device",
            escape_name(args.image),
        )
    mount_image(args.image, args.mountpoint, devices, loop=True if args.loop else None)
    return EXIT_OK
