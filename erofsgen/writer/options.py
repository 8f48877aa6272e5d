"""Options of the image writer, as one typed value."""

from __future__ import annotations

import os
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from enum import Enum
from typing import TYPE_CHECKING

from ..errors import InvalidInputError
from .codecs import CODECS, check_level

if TYPE_CHECKING:
    from .policy import LayoutPolicy


class InodeFormat(Enum):
    """Which inode core to use: the smallest that holds the inode, or one of them for all."""

    AUTO = "auto"
    COMPACT = "compact"  # -E force-inode-compact: extended only where compact cannot hold it
    EXTENDED = "extended"  # -E force-inode-extended


MAX_LONG_PREFIXES = 128  # e_name_index holds 0x80 | id in 8 bits
MAX_CHUNK_SHIFT = 31  # i_u's five format bits: a chunk is at most block size << 31 bytes
DEFAULT_BLOB_CHUNK_SIZE = 64 << 10
COMPRESSION_ALGORITHMS = tuple(CODECS)  # lz4, lz4hc, zstd, deflate, lzma
MAX_WORKERS = 256
MAX_PCLUSTER_SIZE = (
    1 << 20
)  # Z_EROFS_PCLUSTER_MAX_SIZE  # with a blob device or store but no chunk size given

# Called as progress(done, total) while data is emitted; units are bytes of file data.
ProgressCallback = Callable[[int, int], None]


@dataclass(frozen=True, slots=True)
class WriteOptions:
    """How to lay out an image. File times and owners are the tree's business, not this."""

    block_size: int = 4096
    # The superblock's time base (compact inodes take it as their mtime). None: the most common
    # mtime of the tree, which makes the most inodes compact and keeps the image reproducible.
    build_time_ns: int | None = None
    uuid: uuid.UUID | None = None  # None: derived from the image's content
    label: str = ""
    xattrs: bool = True  # False drops every xattr (mkfs -x -1)
    xattr_share_threshold: int = 2  # an xattr on more than this many inodes goes to the shared area
    xattr_prefixes: tuple[bytes, ...] = ()  # long name prefixes, e.g. b"trusted.overlay."
    # Also pick long prefixes where they make the image smaller (needs Linux 6.4, erofs-utils 1.7).
    auto_xattr_prefixes: bool = False
    inode_format: InodeFormat = InodeFormat.AUTO
    inline_data: bool = True  # False: -E noinline_data
    sb_checksum: bool = True  # False: -E nosbcrc
    # Regular files of a block or more become CHUNK_BASED with chunks of this many bytes (a power
    # of two, at least the block size), deduplicated, all-zero chunks as holes. None: not
    # chunked, unless a blob device or store is given (then 64 KiB).
    chunk_size: int | None = None
    blob_device: str | os.PathLike[str] | None = None  # every chunk in this one extra device
    # Content-addressed stores (specs/blob-store.md): chunks are reused from any of them and new
    # ones written to the first.
    blob_stores: tuple[str | os.PathLike[str], ...] = ()
    # Tar index mode (mkfs.erofs --tar=i): this uncompressed tar archive is extra device 1 and
    # every regular file's data is a chunk index into it (the tree from
    # tree_from_tar(..., index=True)); needs 512-byte blocks and no chunking or compression.
    tar_index: str | os.PathLike[str] | None = None
    # Regular files compressed with one of COMPRESSION_ALGORITHMS (None: none are), at this
    # level (None: the algorithm's default; lz4hc 0..12, 9; zstd 1..22, 3; deflate 0..9, 6;
    # lzma 0..9, 6; lz4 takes none), into pclusters of at most this many bytes (None: one
    # block; larger ones, "big pclusters", need Linux 5.13 and erofs-utils 1.3). zstd, deflate
    # and lzma need Linux 6.10, 6.6 and 5.16.
    compression: str | None = None
    compression_level: int | None = None
    pcluster_size: int | None = None
    compact_indexes: bool = True  # False: full 8-byte lcluster indexes (mkfs -E legacy-compress)
    # A compressed file's last pcluster inline after its index when it fits the inode's block
    # (mkfs -E ztailpacking; Linux 5.17, erofs-utils 1.5).
    ztailpacking: bool = False
    # The most file bytes one extent may hold (mkfs --max-extent-bytes); None: no cap but the
    # writer's own (a window of at most 1024 blocks).
    max_extent_bytes: int | None = None
    # With compression: file tails (mkfs -E fragments), or whole files (-E all-fragments), kept in
    # one compressed packed inode, identical ones once; identical pclusters stored once
    # (-E dedupe). All three need Linux 6.1 and erofs-utils 1.6.
    fragments: bool = False
    all_fragments: bool = False
    dedupe: bool = False
    # The packed inode's largest pcluster (mkfs -E fragments=SIZE); None: `pcluster_size`'s.
    packed_pcluster_size: int | None = None
    # Threads that read, hash and compress files before planning (None: 2). The image's bytes
    # do not depend on it.
    workers: int | None = None
    # The layout policy; None: erofsgen's default, made from the options above (policy.py).
    policy: LayoutPolicy | None = None

    def __post_init__(self) -> None:
        self._check_types()
        if self.block_size not in (512, 1024, 2048, 4096):
            raise InvalidInputError(f"block size {self.block_size} is not one of 512, 1024, 2048, 4096")
        if len(self.label.encode()) > 15:
            raise InvalidInputError(f"volume label {self.label!r} is longer than 15 bytes")
        if self.xattr_share_threshold < 0:
            raise InvalidInputError("xattr share threshold must not be negative")
        if len(set(self.xattr_prefixes)) != len(self.xattr_prefixes):
            raise InvalidInputError("a long xattr prefix is given twice")
        if len(self.xattr_prefixes) > MAX_LONG_PREFIXES:
            raise InvalidInputError(f"at most {MAX_LONG_PREFIXES} long xattr prefixes fit a 7-bit id")
        self._check_tar_index()
        self._check_chunks()
        self._check_compression()
        if self.workers is not None and not 1 <= self.workers <= MAX_WORKERS:
            raise InvalidInputError(f"workers {self.workers} is not from 1 to {MAX_WORKERS}")

    def _check_compression(self) -> None:
        algorithm, level, pcluster = self.compression, self.compression_level, self.pcluster_size
        extent = self.max_extent_bytes
        if algorithm is None:
            if level is not None or pcluster is not None or extent is not None:
                raise InvalidInputError(
                    "a compression level, pcluster size or extent limit needs a compression algorithm"
                )
            if self.fragments or self.all_fragments or self.dedupe:
                raise InvalidInputError("fragments, all-fragments and dedupe need a compression algorithm")
        packed = self.packed_pcluster_size
        if packed is not None and not (self.fragments or self.all_fragments):
            raise InvalidInputError("a pcluster size for the packed inode needs fragments or all-fragments")
        if algorithm is None:
            return
        if extent is not None and extent < self.block_size:
            # Shorter extents would put two heads in one lcluster, which the index cannot hold.
            raise InvalidInputError(f"max extent bytes {extent} is below the block size {self.block_size}")
        check_level(algorithm, level)
        for what, size in (("pcluster size", pcluster), ("the packed inode's pcluster size", packed)):
            if size is not None and (size <= 0 or size % self.block_size):
                raise InvalidInputError(
                    f"{what} {size} is not a multiple of the block size {self.block_size}"
                )
            if size is not None and size > MAX_PCLUSTER_SIZE:
                raise InvalidInputError(f"{what} {size} is over {MAX_PCLUSTER_SIZE} bytes")
        if self.chunk_size is not None:
            raise InvalidInputError("compressed files cannot be chunked too: give one of the two")
        if (self.fragments or self.all_fragments) and (self.xattr_prefixes or self.auto_xattr_prefixes):
            # Linux 6.4 to 6.16 read the prefix table from the packed inode when there is one.
            raise InvalidInputError("long xattr prefixes cannot be combined with fragments yet")

    def _check_tar_index(self) -> None:
        if self.tar_index is None:
            return
        if self.block_size != 512:
            raise InvalidInputError(
                f"tar index mode needs 512-byte blocks (the archive's own), not {self.block_size}"
            )
        if self.chunk_size is not None or self.blob_device is not None or self.blob_stores:
            raise InvalidInputError(
                "tar index mode cannot be combined with a chunk size, blob device or store"
            )
        if self.compression is not None:
            raise InvalidInputError("tar index mode leaves file data in the archive: it cannot be compressed")

    def _check_chunks(self) -> None:
        if self.blob_device is not None and self.blob_stores:
            raise InvalidInputError("a blob device and blob stores cannot be used together")
        if self.chunk_size is None and (self.blob_device is not None or self.blob_stores):
            object.__setattr__(self, "chunk_size", DEFAULT_BLOB_CHUNK_SIZE)
        size = self.chunk_size
        if size is None:
            return
        largest = self.block_size << MAX_CHUNK_SHIFT
        if size & (size - 1) or not self.block_size <= size <= largest:
            raise InvalidInputError(
                f"chunk size {size} must be a power of two from the block size {self.block_size} to {largest}"
            )

    def _check_types(self) -> None:
        """Refuse a value of the wrong type by name, before it fails somewhere deep in a build."""
        from .policy import LayoutPolicy

        expected: dict[str, tuple[type, ...]] = {
            "block_size": (int,),
            "build_time_ns": (int, type(None)),
            "uuid": (uuid.UUID, type(None)),
            "label": (str,),
            "xattrs": (bool,),
            "xattr_share_threshold": (int,),
            "xattr_prefixes": (tuple,),
            "auto_xattr_prefixes": (bool,),
            "inode_format": (InodeFormat,),
            "inline_data": (bool,),
            "sb_checksum": (bool,),
            "policy": (LayoutPolicy, type(None)),
            "chunk_size": (int, type(None)),
            "blob_device": (str, os.PathLike, type(None)),
            "blob_stores": (tuple,),
            "tar_index": (str, os.PathLike, type(None)),
            "compression": (str, type(None)),
            "compression_level": (int, type(None)),
            "pcluster_size": (int, type(None)),
            "compact_indexes": (bool,),
            "ztailpacking": (bool,),
            "max_extent_bytes": (int, type(None)),
            "fragments": (bool,),
            "all_fragments": (bool,),
            "dedupe": (bool,),
            "packed_pcluster_size": (int, type(None)),
            "workers": (int, type(None)),
        }
        for name, types in expected.items():
            value = getattr(self, name)
            # bool is an int to Python, never a size, a time or a threshold here.
            wrong_bool = isinstance(value, bool) and bool not in types
            if wrong_bool or not isinstance(value, types):
                wanted = " or ".join("None" if t is type(None) else t.__name__ for t in types)
                raise InvalidInputError(f"WriteOptions.{name} must be {wanted}, not {type(value).__name__}")
        if not all(isinstance(p, bytes) for p in self.xattr_prefixes):
            raise InvalidInputError("WriteOptions.xattr_prefixes must be a tuple of bytes")
        if not all(isinstance(p, str | os.PathLike) for p in self.blob_stores):
            raise InvalidInputError("WriteOptions.blob_stores must be a tuple of paths")

    @property
    def pcluster_bytes(self) -> int:
        """The largest pcluster of a file: the given size, or one block."""
        return self.pcluster_size or self.block_size

    @property
    def packed_pcluster_bytes(self) -> int:
        """The largest pcluster of the packed inode (fragments)."""
        return self.packed_pcluster_size or self.pcluster_bytes

    @property
    def max_pcluster_bytes(self) -> int:
        """The largest pcluster in the image: what its compression config records announce."""
        if self.fragment_mode:
            return max(self.pcluster_bytes, self.packed_pcluster_bytes)
        return self.pcluster_bytes

    @property
    def fragment_mode(self) -> int:
        """What goes to the packed inode: 0 nothing, 1 file tails, 2 whole files."""
        return 2 if self.all_fragments else 1 if self.fragments else 0

    @property
    def blkszbits(self) -> int:
        return self.block_size.bit_length() - 1
