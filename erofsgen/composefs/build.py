"""mkcomposefs as a function: a source (directory or dump file) to an image and its digest."""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import BinaryIO

from ..errors import InvalidInputError
from .dump import read_dump
from .image import emit, lay_out
from .layout import Layout
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
    try:
        return _load_source(source, options, data)
    except OSError as exc:
        if isinstance(exc.filename, bytes):  # the scan works on bytes paths; errors show text
            exc.filename = os.fsdecode(exc.filename)
        raise


def _load_source(source: str, options: MkcomposefsOptions, data: bytes | None) -> CfsNode:
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
    source: str | os.PathLike[str],
    output: str | os.PathLike[str] | BinaryIO | None,
    options: MkcomposefsOptions = MkcomposefsOptions(),
    *,
    sync: bool = True,
) -> bytes:
    """Write the composefs image of SOURCE, as `mkcomposefs [options] SOURCE IMAGE` does; returns
    the image's fs-verity digest.

    `output` is a path (written as `pack` writes images: whole or not at all, synced unless
    `sync` is false), an open binary file, or None to only compute the digest
    (`--print-digest-only`). The tree is scanned, the objects stored and the layout checked
    before any byte is written.
    """
    if not isinstance(source, (str, os.PathLike)):
        raise InvalidInputError(f"SOURCE must be a path, not {type(source).__name__}")
    writable = callable(getattr(output, "write", None))
    if not (output is None or isinstance(output, (str, os.PathLike)) or writable):
        raise InvalidInputError(f"output must be a path, a binary file or None, not {type(output).__name__}")
    if not isinstance(options, MkcomposefsOptions):
        raise InvalidInputError(f"options must be MkcomposefsOptions, not {type(options).__name__}")
    if not isinstance(sync, bool):
        raise InvalidInputError(f"sync must be bool, not {type(sync).__name__}")
    # No name for the tree: lay_out can free it once rewritten.
    layout = lay_out(
        load_source(os.fspath(source), options),
        min_version=options.min_version,
        max_version=options.max_version,
    )
    return write_layout(layout, output, sync=sync)


def write_layout(
    layout: Layout, output: str | os.PathLike[str] | BinaryIO | None, *, sync: bool = True
) -> bytes:
    """The bytes of a laid-out image to `output` (as in `mkcomposefs`); returns its digest."""
    if output is None:
        return emit(layout)[1]
    if not isinstance(output, (str, os.PathLike)):
        return emit(layout, output.write)[1]
    from ..writer.output import atomic_output  # only for a path

    with atomic_output(output, sync=sync) as fd, open(fd, "wb", closefd=False) as out:
        digest = emit(layout, out.write)[1]
    return digest
