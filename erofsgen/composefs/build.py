"""mkcomposefs as a function: a source (directory or dump file) to an image and its digest."""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import BinaryIO

from ..errors import InvalidInputError
from .dump import read_dump
from .image import write_image
from .scan import ScanOptions, external_files, scan_directory
from .store import fill_store
from .tree import CfsNode


@dataclass(frozen=True, slots=True)
class MkcomposefsOptions:
    """mkcomposefs 1.0.8's options (the scan options only apply to a directory source)."""

    from_file: bool = False
    digest_store: str | None = None
    use_epoch: bool = False
    skip_devices: bool = False
    skip_xattrs: bool = False
    user_xattrs: bool = False
    min_version: int = 0
    max_version: int = 1
    threads: int = 1


def load_source(source: str, options: MkcomposefsOptions, data: bytes | None = None) -> CfsNode:
    """The tree of SOURCE: a dump file (`data`, if already read) or a directory to scan."""
    if options.from_file:
        if data is None:
            with open(source, "rb") as f:
                data = f.read()
        return read_dump(data, source="stdin" if source == "-" else source)[1]
    if options.skip_xattrs and options.user_xattrs:
        raise InvalidInputError("--skip-xattrs and --user-xattrs exclude each other")
    scan = ScanOptions(
        options.use_epoch, options.skip_devices, options.skip_xattrs, options.user_xattrs, options.threads
    )
    root = scan_directory(source, scan)
    if options.digest_store is not None:
        top = os.fsencode(source)
        files = ((node.digest, path) for path, node in external_files(root, top) if node.digest is not None)
        fill_store(options.digest_store, files, options.threads)
    return root


def mkcomposefs(
    source: str, output: BinaryIO | None, options: MkcomposefsOptions = MkcomposefsOptions()
) -> bytes:
    """Write the composefs image of SOURCE to `output` (None: only measure); returns its digest."""
    root = load_source(source, options)
    return write_image(root, output, min_version=options.min_version, max_version=options.max_version)
