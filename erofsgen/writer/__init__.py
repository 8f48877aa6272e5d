"""The image writer: validate a tree, decide each inode's stored form, plan, emit atomically.

Modules: validate (what can be stored), datastage + stored (each inode's stored form, read at
most once), policy (producer-specific layout choices), plan + placement + xattrs + dirs (the
layout), header (planned areas and the metadata writer), emit + copier + filecopy + digest +
writeback (the bytes).
"""

from __future__ import annotations

import contextlib
import errno
import os
import uuid
from collections.abc import Iterator
from dataclasses import dataclass

from ..errors import ImageWriteError, InvalidInputError
from ..model import Directory, gc_paused
from .chunks import ChunkSession, chunk_session
from .datastage import DataStage, stage_for
from .emit import Emitter
from .options import InodeFormat, ProgressCallback, WriteOptions
from .output import atomic_output, builds_in_place
from .plan import Layout, begin_plan, finish_plan, plan_image

__all__ = [
    "ImageSummary",
    "InodeFormat",
    "Layout",
    "WriteOptions",
    "cutting_ahead",
    "plan_image",
    "write_image",
]


@dataclass(frozen=True, slots=True)
class ImageSummary:
    """What was written."""

    path: str
    inodes: int
    blocks: int
    block_size: int
    uuid: uuid.UUID
    root_nid: int
    build_time_ns: int

    @property
    def size(self) -> int:
        return self.blocks * self.block_size


def write_image(
    root: Directory,
    output: str | os.PathLike[str],
    options: WriteOptions | None = None,
    *,
    progress: ProgressCallback | None = None,
    sync: bool = True,
    stage: DataStage | None = None,
) -> ImageSummary:
    """Write `root` as an EROFS image at `output`.

    A regular file is written to a temporary file beside `output`, synced (unless `sync` is
    false) and renamed into place, so an error or an interrupt leaves neither a partial image
    nor the temporary file, and the old image stays as it was; so the directory must be
    writable (an existing image in a read-only directory is refused, not overwritten in place).
    A symlink's target is replaced, not the link. A block or character device or
    a FIFO is written in place instead, from offset 0, once the image is complete. A failure to
    write (a full disk, a read-only file system) is an ImageWriteError naming `output`.

    `stage` is one from `cutting_ahead(options)` (with the same options) that the directory
    scan of `root` fed; it stays the caller's to close.
    """
    if not isinstance(root, Directory):
        raise InvalidInputError(f"the root of an image must be a Directory, not {type(root).__name__}")
    if not isinstance(output, str | os.PathLike):
        raise InvalidInputError(f"the output must be a path, not {type(output).__name__}")
    if options is None:
        options = WriteOptions()
    elif not isinstance(options, WriteOptions):
        raise InvalidInputError(f"options must be WriteOptions, not {type(options).__name__}")
    if options.blob_device is not None and _same_file(options.blob_device, output):
        raise InvalidInputError("the blob device cannot be the image itself", os.fspath(output))
    if options.tar_index is not None and _same_file(options.tar_index, output):
        raise InvalidInputError("the image cannot be written over the archive it indexes", os.fspath(output))
    if stage is not None:
        if not isinstance(stage, DataStage):
            raise InvalidInputError(f"stage must come from cutting_ahead(), not {type(stage).__name__}")
        if stage.options is not options:
            raise InvalidInputError("the data stage was made for other options")
        if stage.served:
            raise InvalidInputError("a data stage serves one image; it has served one already")
        stage.served = True
    # The stage's workers and spool live until the data is in the image; a chunk session holds
    # its stores' locks until then too.
    with gc_paused(), chunk_session(options) as chunks, _stage(stage, options, chunks) as stage:
        draft = begin_plan(root, options, stage)
        layout: Layout | None = None
        try:
            # Opened before the layout is final: the early files are copied while it is planned.
            # A blob device is renamed into place just before the image, once both are complete.
            # An image synced where it is built has its data written back as it is finished.
            writeback = sync and builds_in_place(output)
            with (
                atomic_output(output, sync=sync) as fd,
                _blob_device(options, sync) as blob_fd,
                Emitter(fd, options, progress, writeback=writeback) as emitter,
            ):
                emitter.start(draft)
                layout = finish_plan(draft, emitter.write_streamed)
                if chunks is not None:
                    target = options.blob_device
                    chunks.start_copy(fd if blob_fd < 0 else blob_fd, os.fspath(target or output))
                image_uuid = emitter.emit(layout)
            if chunks is not None:
                chunks.save_cache()
        except ImageWriteError as exc:
            raise _with_size(exc, layout, output) from exc.__cause__
    assert layout is not None
    return ImageSummary(
        path=os.fspath(output),
        inodes=len(layout.inodes),
        blocks=layout.blocks,
        block_size=options.block_size,
        uuid=image_uuid,
        root_nid=layout.root.nid,
        build_time_ns=layout.build_time_ns,
    )


@contextlib.contextmanager
def cutting_ahead(options: WriteOptions) -> Iterator[DataStage | None]:
    """A data stage that starts compressing files as a directory scan finds them (pass its
    `cut_ahead` as `tree_from_directory`'s `on_file`, then the stage to `write_image`), or None
    when `options` do not compress files one by one (no compression, fragments, dedupe)."""
    if not isinstance(options, WriteOptions):
        raise InvalidInputError(f"options must be WriteOptions, not {type(options).__name__}")
    if options.compression is None or options.fragment_mode or options.dedupe:
        yield None
        return
    with stage_for(options, None) as stage:
        yield stage


def _stage(
    stage: DataStage | None, options: WriteOptions, chunks: ChunkSession | None
) -> contextlib.AbstractContextManager[DataStage]:
    """The caller's stage (left open), else a new one for this image."""
    if stage is not None:
        return contextlib.nullcontext(stage)
    return stage_for(options, chunks)


def _same_file(a: str | os.PathLike[str], b: str | os.PathLike[str]) -> bool:
    """Whether two output paths end at the same file (through symlinks, or as one existing file)."""
    if os.path.realpath(a) == os.path.realpath(b):
        return True
    try:
        return os.path.samefile(a, b)
    except OSError:
        return False


def _blob_device(options: WriteOptions, sync: bool) -> contextlib.AbstractContextManager[int]:
    """The `--blobdev` file, written like the image (atomically), or -1 without one."""
    if options.blob_device is None:
        return contextlib.nullcontext(-1)
    return atomic_output(options.blob_device, sync=sync)


def _with_size(
    exc: ImageWriteError, layout: Layout | None, output: str | os.PathLike[str]
) -> ImageWriteError:
    """A lack of room for the image says how much the image needs, once that is known."""
    if exc.errno not in (errno.ENOSPC, errno.EDQUOT) or layout is None or "the image needs" in str(exc):
        return exc
    if exc.filename != os.fspath(output):
        return exc  # a blob device or store ran out of room, not the image
    size = layout.blocks * layout.options.block_size
    return ImageWriteError(f"{exc.strerror} (the image needs {size} bytes)", exc.filename, exc.errno)
