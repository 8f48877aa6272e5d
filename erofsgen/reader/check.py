"""Check an image against the rules of the Linux kernel and fsck.erofs; report every problem.

The walk starts at the root and visits each reachable inode once: its core, xattr body (shared
ids and entries, the bloom filter), data mapping (inline tails, block runs, chunk arrays,
compressed indexes and pcluster bounds) and, for directories, every block (nameoffs, name
lengths and characters, bytewise order within and across blocks, file types, "." and "..").
With `data=True` every extent is also decompressed.

Severity. Problems are what the kernel or fsck.erofs refuses, or what makes the tree
inconsistent (a directory reached twice). Link counts are **warnings**: the kernel trusts the
stored value and fsck never checks it, so a wrong count changes only what stat reports (and
packing a subtree whose files have links outside it legitimately produces such counts). The
same holds for `inos`, and for rules only some kernels enforce (block size above 4 KiB, a
FLAT_PLAIN inode without a start block).

Nothing here can loop or grow without bound on a hostile image: every inode and directory is
visited once, each directory and inode reports at most `PER_OBJECT_LIMIT` problems, and the
whole check stops after `limit` problems.
"""

from __future__ import annotations

import enum
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass

from ..errors import CorruptImageError, ErofsgenError, InvalidInputError, UnsupportedFeatureError
from ..format.constants import (
    EROFS_MAX_BLKSZBITS,
    EROFS_MIN_BLKSZBITS,
    EROFS_NULL_ADDR,
    EROFS_PATH_MAX,
    EROFS_SUPER_OFFSET,
    EROFS_XATTR_LONG_PREFIX_MASK,
    DataLayout,
    FeatureCompat,
    FeatureIncompat,
    FileType,
)
from ..format.dirent import file_type_of_mode
from ..format.superblock import checksum_length, sb_checksum, sb_size
from ..format.xattr import is_long_prefix_index, xattr_filter_bit
from . import dirs, xattrs
from .data import InodeData
from .datamap import check_bounds, iter_chunk_entries, map_uncompressed
from .image import Image, open_image
from .inode import InodeInfo
from .names import escape_name
from .packed import packed_file
from .storage import SourceLike, Storage
from .superblock import MAX_BLKSZBITS, PAGE_SIZE, read_raw_superblock
from .walk import walk_dirs
from .zmap import Extent, ZMap

DEFAULT_LIMIT = 1000
PER_OBJECT_LIMIT = 32
_PIECE = 1 << 20
_SPECIAL = (FileType.CHRDEV, FileType.BLKDEV, FileType.FIFO, FileType.SOCK)
_KNOWN_INCOMPAT = 0x1FF  # every bit some kernel knows (up to METABOX)
_NAMED_UNSUPPORTED = FeatureIncompat.BIT48 | FeatureIncompat.METABOX


class Severity(enum.Enum):
    """How bad a finding is: errors fail the check, warnings are only reported."""

    ERROR = "error"
    WARNING = "warning"


@dataclass(frozen=True)
class Problem:
    """One finding: what is wrong and where (any of area, nid, path, offset may be unknown)."""

    message: str
    area: str | None = None
    nid: int | None = None
    offset: int | None = None
    path: str | None = None  # the first path that reaches the inode, escaped for display
    severity: Severity = Severity.ERROR

    @property
    def is_warning(self) -> bool:
        """Whether this is only a warning."""
        return self.severity == Severity.WARNING

    def __str__(self) -> str:
        where = [self.area] if self.area else []
        if self.nid is not None:
            where.append(f"nid {self.nid}")
        if self.path is not None:
            where.append(self.path)
        if self.offset is not None:
            where.append(f"@{self.offset:#x}")
        text = f"{' '.join(where)}: {self.message}" if where else self.message
        return f"warning: {text}" if self.is_warning else text


class _TooMany(Exception):
    pass


def _bare_message(exc: ErofsgenError) -> str:
    """The message of a reader error without the location prefix it adds itself."""
    text = str(exc)
    if isinstance(exc, CorruptImageError):
        where = [w for w in (exc.area, None if exc.nid is None else f"nid {exc.nid}") if w]
        if exc.offset is not None:
            where.append(f"offset {exc.offset:#x}")
        prefix = f"{' '.join(where)}: " if where else ""
        if text.startswith(prefix):
            return text[len(prefix) :]
    if text.startswith("nid ") and ": " in text:
        return text.split(": ", 1)[1]
    return text


@dataclass(frozen=True)
class _Entry:
    name: bytes
    nid: int
    file_type: int
    offset: int | None  # absolute offset of the dirent, when the block has one


class _Checker:
    def __init__(self, image: Image, *, data: bool, limit: int) -> None:
        self.image = image
        self.sb = image.superblock
        self.storage = image.storage
        self.bs = self.sb.block_size
        self.data = data
        self.limit = limit
        self.problems: list[Problem] = []
        self.paths: dict[int, bytes] = {}
        self.inodes: dict[int, InodeInfo | None] = {}
        self.parent: dict[int, int] = {}
        self.links: Counter[int] = Counter()
        self.subdirs: dict[int, int] = {}
        self.missing_devices: set[int] = set()
        self._budget = PER_OBJECT_LIMIT

    # -- reporting ------------------------------------------------------------------------

    def report(
        self,
        message: str,
        *,
        area: str,
        nid: int | None = None,
        offset: int | None = None,
        warning: bool = False,
    ) -> None:
        if len(self.problems) >= self.limit:
            raise _TooMany
        self._budget -= 1
        path = escape_name(self.paths[nid]) if nid is not None and nid in self.paths else None
        severity = Severity.WARNING if warning else Severity.ERROR
        self.problems.append(Problem(message, area, nid, offset, path, severity))

    def fail(self, exc: ErofsgenError, *, area: str, nid: int | None = None) -> None:
        offset = exc.offset if isinstance(exc, CorruptImageError) else None
        if isinstance(exc, CorruptImageError) and exc.area:
            area = exc.area
        self.report(_bare_message(exc), area=area, nid=nid, offset=offset)

    def exhausted(self) -> bool:
        return self._budget <= 0

    def run(self) -> list[Problem]:
        try:
            for stage in (self.check_superblock, self.check_packed_inode, self.walk, self.check_links):
                try:
                    stage()
                except ErofsgenError as exc:  # whatever the stage itself did not expect
                    self.fail(exc, area="check")
        except _TooMany:
            self.problems.append(Problem(f"stopped after {self.limit} problems", area="check"))
        return self.problems

    # -- superblock -----------------------------------------------------------------------

    def check_superblock(self) -> None:
        sb, size = self.sb, self.storage.primary_size
        if sb.checksum_verified is False:
            end = EROFS_SUPER_OFFSET + checksum_length(self.bs)
            computed = sb_checksum(self.storage.read(0, end, area="superblock"), self.bs)
            self.report(
                f"checksum {sb.checksum:#010x} does not match the computed {computed:#010x}",
                area="superblock",
                offset=EROFS_SUPER_OFFSET + 4,
            )
        if sb.blkszbits > EROFS_MAX_BLKSZBITS:
            self.report(
                f"block size {self.bs} is larger than the 4 KiB page of most machines",
                area="superblock",
                warning=True,
            )
        if sb.blocks * self.bs > size:
            self.report(
                f"the superblock counts {sb.blocks} blocks but the image has {size} bytes (truncated?)",
                area="superblock",
            )
        for name, blk in (("meta_blkaddr", sb.meta_blkaddr), ("xattr_blkaddr", sb.xattr_blkaddr)):
            if blk * self.bs >= size:
                self.report(f"{name} {blk} lies beyond the image", area="superblock")
        self.check_devices()
        for k, prefix in enumerate(sb.long_prefixes):
            if prefix.prefix is None:
                self.report(f"long prefix {k} has unknown base index {prefix.base_index}", area="superblock")

    def check_devices(self) -> None:
        sb = self.sb
        if not sb.devices:
            return
        table = sb.devt_slotoff * 128
        if table < EROFS_SUPER_OFFSET + sb.sb_size:
            self.report(f"device table at {table:#x} overlaps the superblock", area="device table")
        for slot in sb.devices:
            if self.storage.given_devices:
                have = self.storage.device_size(slot.index + 1)
                if have < slot.blocks * self.bs:
                    self.report(
                        f"device {slot.index + 1} has {have} bytes, its slot says {slot.blocks} blocks",
                        area="device table",
                        offset=slot.offset,
                    )

    def check_packed_inode(self) -> None:
        """The packed inode (fragments) is outside the tree: check it and count it, as mkfs does."""
        nid = self.sb.packed_nid
        if not self.sb.has(FeatureIncompat.FRAGMENTS) or not nid:
            return
        info = self.check_inode(nid)
        if info is not None and info.file_type != FileType.REG_FILE:
            self.report("the packed inode is not a regular file", area="superblock", nid=nid)

    # -- the walk -------------------------------------------------------------------------

    def walk(self) -> None:
        root = self.sb.root_nid
        self.paths[root] = b"/"
        info = self.check_inode(root)
        if info is None:
            return
        if not info.is_dir:
            self.report("the root inode is not a directory", area="superblock", nid=root)
            return
        self.parent[root] = root
        for visit in walk_dirs(self.list_dir, root, breadth_first=True, strict=False):
            visit.descend = self.check_dir(visit.nid, *visit.entries)
        self.check_inode_count()

    def list_dir(self, nid: int) -> tuple[list[_Entry], bool]:
        """The entries of a directory (problems reported) and whether all blocks parsed."""
        info = self.inodes[nid]
        assert info is not None
        self._budget = PER_OBJECT_LIMIT
        return self.read_entries(info)

    def check_inode_count(self) -> None:
        found = sum(1 for info in self.inodes.values() if info is not None)
        if found != self.sb.inos:
            self.report(
                f"inos is {self.sb.inos} but {found} inodes are reachable", area="superblock", warning=True
            )

    def check_links(self) -> None:
        for nid, count in sorted(self.links.items()):
            info = self.inodes.get(nid)
            if info is not None and info.nlink != count:
                self.report(
                    f"link count {info.nlink}, but {count} directory entries name it",
                    area="inode",
                    nid=nid,
                    warning=True,
                )
        for nid, nsub in sorted(self.subdirs.items()):
            info = self.inodes.get(nid)
            if info is not None and info.nlink != 2 + nsub:
                self.report(
                    f"directory link count {info.nlink}, expected 2 + {nsub} subdirectories",
                    area="inode",
                    nid=nid,
                    warning=True,
                )

    # -- inodes ---------------------------------------------------------------------------

    def check_inode(self, nid: int) -> InodeInfo | None:
        """Decode and check the inode once; None when it cannot be decoded."""
        self._budget = PER_OBJECT_LIMIT
        try:
            info = self.image.inode(nid)
        except ErofsgenError as exc:
            self.inodes[nid] = None
            self.fail(exc, area="inode", nid=nid)
            return None
        self.inodes[nid] = info
        for area, check in (
            ("inode", self.check_core),
            ("xattr", self.check_xattrs),
            ("data", self.check_data),
        ):
            try:
                check(info)
            except ErofsgenError as exc:
                self.fail(exc, area=area, nid=nid)
        return info

    def check_core(self, info: InodeInfo) -> None:
        nid = info.nid
        sb_end = EROFS_SUPER_OFFSET + self.sb.sb_size
        if info.offset < sb_end and info.inode_end > EROFS_SUPER_OFFSET:
            self.report("inode overlaps the superblock", area="inode", nid=nid, offset=info.offset)
        if info.inode_end > self.storage.primary_size:
            self.report("inode and xattr body run past the image", area="inode", nid=nid, offset=info.offset)
        if info.file_type in _SPECIAL:
            if info.size:
                self.report(f"{info.file_type.name} inode with i_size {info.size}", area="inode", nid=nid)
            if info.layout != DataLayout.FLAT_PLAIN:
                msg = f"{info.file_type.name} inode with layout {info.layout.name}"
                self.report(msg, area="inode", nid=nid, warning=True)
        elif info.file_type == FileType.SYMLINK and not 0 < info.size < EROFS_PATH_MAX:
            self.report(f"symlink target of {info.size} bytes", area="inode", nid=nid)
        if info.layout == DataLayout.CHUNK_BASED and not self.sb.has(FeatureIncompat.CHUNKED_FILE):
            msg = "chunk-based inode without the CHUNKED_FILE feature"
            self.report(msg, area="inode", nid=nid, warning=True)

    def check_xattrs(self, info: InodeInfo) -> None:
        if not info.xattr_icount:
            return
        body = xattrs.read_body(self.storage, self.sb, info)
        if body is None:
            return
        records = list(body.inline)
        for xid in body.shared_ids:
            try:
                records.append(xattrs.read_shared(self.storage, self.sb, xid, info.nid))
            except ErofsgenError as exc:
                self.report(f"shared xattr id {xid}: {_bare_message(exc)}", area="xattr", nid=info.nid)
        for rec in records:
            if rec.name is None and (rec.name_index or rec.suffix or rec.value):
                msg = f"entry with unknown prefix index {rec.name_index} (hidden by the kernel)"
                self.report(msg, area="xattr", nid=info.nid, offset=rec.offset, warning=True)
        self.check_filter(info, body.header.h_name_filter, records)

    def check_filter(self, info: InodeInfo, name_filter: int, records: list[xattrs.XattrRecord]) -> None:
        """A bloom bit set for a present name makes the kernel's getxattr miss it."""
        sb = self.sb
        if not sb.feature_compat & FeatureCompat.XATTR_FILTER or sb.xattr_filter_reserved:
            return
        for rec in records:
            if rec.name is None:
                continue
            index, suffix = rec.name_index, rec.suffix
            if is_long_prefix_index(index):
                prefix = sb.long_prefixes[index & EROFS_XATTR_LONG_PREFIX_MASK]
                index, suffix = prefix.base_index, prefix.infix + suffix
            bit = xattr_filter_bit(index, suffix)
            if name_filter >> bit & 1:
                self.report(
                    f"bloom filter bit {bit} marks the present xattr {escape_name(rec.name)} absent",
                    area="xattr",
                    nid=info.nid,
                    offset=info.xattr_offset,
                )

    # -- data -----------------------------------------------------------------------------

    def check_data(self, info: InodeInfo) -> None:
        if info.file_type in _SPECIAL or not info.size:
            return
        if info.compressed:
            self.check_compressed(info)
        elif info.layout == DataLayout.CHUNK_BASED:
            self.check_chunks(info)
        else:
            self.check_flat(info)

    def check_flat(self, info: InodeInfo) -> None:
        nid = info.nid
        if info.layout == DataLayout.FLAT_INLINE and info.inline_offset is not None:
            off, size = info.inline_offset, info.inline_size
            if off % self.bs + size > self.bs:
                self.report("inline data crosses a block boundary", area="inline data", nid=nid, offset=off)
            elif off + size > self.storage.primary_size:
                self.report("inline data runs past the image", area="inline data", nid=nid, offset=off)
        elif info.startblk == EROFS_NULL_ADDR:
            msg = "FLAT_PLAIN data without a start block (reads as zeros only on 6.15+ kernels)"
            self.report(msg, area="data", nid=nid, warning=True)
            return
        check_bounds(self.storage, self.sb, info)
        if self.data:
            self.read_segments(info)

    def read_segments(self, info: InodeInfo) -> None:
        """Map (and with data=True read) every uncompressed segment; holes are not read."""
        pos = 0
        while pos < info.size and not self.exhausted():
            seg = map_uncompressed(self.storage, self.sb, info, pos)
            if seg.end <= pos:
                raise CorruptImageError("mapping makes no progress", nid=info.nid, area="data")
            if self.data and seg.device is not None:
                for start in range(0, seg.length, _PIECE):
                    count = min(_PIECE, seg.length - start)
                    self.storage.read(
                        seg.physical + start, count, area="data", nid=info.nid, device=seg.device
                    )
            pos = seg.end

    def check_chunks(self, info: InodeInfo) -> None:
        assert info.chunk_array_offset is not None and info.chunk_format is not None
        assert info.chunkbits is not None
        check_bounds(self.storage, self.sb, info)
        ndev = self.sb.extra_devices if self.sb.has(FeatureIncompat.DEVICE_TABLE) else 0
        chunk = 1 << info.chunkbits
        for i, off, device_id, blkaddr in iter_chunk_entries(self.storage, info):
            if self.exhausted():
                return
            if blkaddr == EROFS_NULL_ADDR:
                continue
            if device_id > ndev:
                msg = f"chunk {i}: device id {device_id}, but the image has {ndev} extra devices"
                self.report(msg, area="chunk index", nid=info.nid, offset=off)
                continue
            length = min(chunk, info.size - i * chunk)
            self.check_run(info.nid, device_id, blkaddr, length, f"chunk {i}", off)
        if self.data:
            self.read_segments(info)

    def check_run(self, nid: int, device_id: int, blkaddr: int, length: int, what: str, off: int) -> None:
        """Blocks [blkaddr, blkaddr + ceil(length / bs)) of a device must exist."""
        try:
            device, phys = self.storage.locate(device_id, blkaddr, nid=nid)
        except InvalidInputError:
            if device_id not in self.missing_devices:
                self.missing_devices.add(device_id)
                msg = f"data on device {device_id} not checked: pass the extra devices"
                self.report(msg, area="data", nid=nid, warning=True)
            return
        end = phys + -(-length // self.bs) * self.bs
        have = self.storage.device_size(device)
        if end > have:
            where = "the image" if device == 0 else f"device {device}"
            msg = f"{what}: blocks {blkaddr}.. end at {end:#x}, beyond {where} ({have:#x} bytes)"
            self.report(msg, area="data", nid=nid, offset=off)

    def check_compressed(self, info: InodeInfo) -> None:
        zmap = ZMap(self.storage, self.sb, info)
        data = InodeData(self.storage, self.sb, info) if self.data else None
        pos = 0
        while pos < info.size and not self.exhausted():
            ext = zmap.extent_at(pos)
            found = len(self.problems)
            self.check_pcluster(info, ext)
            if data is not None and len(self.problems) == found:  # not the same fault twice
                try:
                    step = _PIECE if ext.fragment else ext.length  # a fragment may be as long as the file
                    for start in range(ext.logical, ext.end, step):
                        data.read(start, min(step, ext.end - start))
                except ErofsgenError as exc:
                    self.fail(exc, area="pcluster", nid=info.nid)
            pos = ext.end

    def check_pcluster(self, info: InodeInfo, ext: Extent) -> None:
        if ext.fragment:
            packed = packed_file(self.storage, self.sb)
            if ext.physical + ext.length > packed.size:
                msg = (
                    f"fragment of extent [{ext.logical}, +{ext.length}) at packed-inode offset "
                    f"{ext.physical:#x} runs past the packed inode ({packed.size} bytes)"
                )
                self.report(msg, area="fragment", nid=info.nid, offset=ext.physical)
            return
        if ext.inline:
            if ext.physical + ext.plen > self.storage.primary_size:
                msg = f"inline pcluster of {ext.plen} bytes runs past the image"
                self.report(msg, area="pcluster", nid=info.nid, offset=ext.physical)
            return
        what = f"pcluster of extent [{ext.logical}, +{ext.length})"
        self.check_run(info.nid, 0, ext.physical // self.bs, ext.plen, what, ext.physical)

    # -- directories ----------------------------------------------------------------------

    def check_dir(self, nid: int, entries: list[_Entry], complete: bool) -> list[tuple[bytes, int]]:
        """Check one directory's entries; returns the subdirectories to visit."""
        info = self.inodes[nid]
        assert info is not None
        self.check_dots(info, entries, complete)
        children: list[tuple[bytes, int]] = []
        nsub = 0
        base = self.paths[nid].rstrip(b"/")
        for e in entries:
            if e.name in (b".", b".."):
                continue
            first = e.nid not in self.inodes
            if first:
                self.paths[e.nid] = base + b"/" + e.name
                child = self.check_inode(e.nid)
                self._budget = PER_OBJECT_LIMIT
            else:
                child = self.inodes[e.nid]
            if child is None:
                continue
            self.check_file_type(nid, e, child)
            if not child.is_dir:
                self.links[e.nid] += 1
                continue
            nsub += 1
            if first:
                self.parent[e.nid] = nid
                children.append((e.name, e.nid))
            else:
                shown = escape_name(base + b"/" + e.name)
                msg = f"{shown} names a directory reached before (hard-linked directory or loop)"
                self.report(msg, area="directory", nid=nid, offset=e.offset)
        if complete:
            self.subdirs[nid] = nsub
        return children

    def check_file_type(self, dir_nid: int, e: _Entry, child: InodeInfo) -> None:
        want = file_type_of_mode(child.mode)
        if e.file_type != want and e.file_type < dirs.FT_MAX:
            msg = f"entry {escape_name(e.name)}: file_type {e.file_type}, but the inode is {want.name}"
            self.report(msg, area="directory", nid=dir_nid, offset=e.offset)

    def check_dots(self, info: InodeInfo, entries: list[_Entry], complete: bool) -> None:
        nid = info.nid
        for name, want in ((b".", nid), (b"..", self.parent[nid])):
            found = [e for e in entries if e.name == name]
            shown = name.decode()
            if len(found) > 1:
                self.report(f"{len(found)} '{shown}' entries", area="directory", nid=nid)
            elif not found and complete:
                self.report(f"no '{shown}' entry", area="directory", nid=nid)
            elif found and found[0].nid != want:
                msg = f"'{shown}' points to nid {found[0].nid}, expected {want}"
                self.report(msg, area="directory", nid=nid, offset=found[0].offset)
            if found and found[0].file_type != FileType.DIR:
                msg = f"'{shown}' has file_type {found[0].file_type}, expected {int(FileType.DIR)}"
                self.report(msg, area="directory", nid=nid, offset=found[0].offset)

    def read_entries(self, info: InodeInfo) -> tuple[list[_Entry], bool]:
        """Every entry of the directory in on-disk order, and whether all blocks parsed."""
        nid = info.nid
        try:
            data = InodeData(self.storage, self.sb, info)
        except ErofsgenError as exc:
            self.fail(exc, area="directory", nid=nid)
            return [], False
        entries: list[_Entry] = []
        complete = True
        prev: bytes | None = None
        for blkno in range(-(-info.size // self.bs)):
            if self.exhausted():
                self.report("further problems in this directory not checked", area="directory", nid=nid)
                return entries, False
            start = blkno * self.bs
            try:
                block = data.read(start, min(self.bs, info.size - start))
                base = self.block_offset(info, start)
            except ErofsgenError as exc:
                self.fail(exc, area="directory", nid=nid)
                return entries, False
            found, problems = dirs.scan_block(block, self.bs)
            for rel, message, _refused in problems:
                offset = None if base is None else base + rel
                self.report(f"block {blkno}: {message}", area="directory", nid=nid, offset=offset)
                complete = False
            for name, child, ftype, rel in found:
                offset = None if base is None else base + rel
                if prev is not None and not prev < name:
                    msg = f"block {blkno}: {escape_name(name)} after {escape_name(prev)}: wrong dirent order"
                    self.report(msg, area="directory", nid=nid, offset=offset)
                prev = name
                entries.append(_Entry(name, child, ftype, offset))
        return entries, complete

    def block_offset(self, info: InodeInfo, start: int) -> int | None:
        """Absolute offset of directory byte `start` in the primary image, if it lives there."""
        if info.compressed:
            return None
        seg = map_uncompressed(self.storage, self.sb, info, start)
        if seg.device != 0:
            return None
        return seg.physical + (start - seg.logical)


# -------------------------------------------------------------------------------- entry points


def check_image(image: Image, *, data: bool = False, limit: int = DEFAULT_LIMIT) -> list[Problem]:
    """Every problem (and warning) found in an opened image; an empty list means clean.

    `data=True` also decompresses every extent and reads every data block.
    """
    return _Checker(image, data=data, limit=limit).run()


def superblock_problems(source: SourceLike) -> list[Problem]:
    """Problems of the raw superblock fields the reader refuses at open (magic, sizes, features).

    Raises InvalidInputError for a file that is not an EROFS image at all (too short, bad
    magic): that is one finding, and nothing else is worth reporting. Raises
    UnsupportedFeatureError when the superblock is sound but uses 48BIT or METABOX,
    which this reader cannot check.
    """
    storage = Storage(source)
    try:
        rec = read_raw_superblock(storage)
    finally:
        storage.close()
    found: list[str] = []
    if not EROFS_MIN_BLKSZBITS <= rec.blkszbits <= MAX_BLKSZBITS:
        found.append(f"blkszbits {rec.blkszbits} out of range")
    if rec.dirblkbits:
        found.append(f"dirblkbits {rec.dirblkbits} must be 0")
    if sb_size(rec.sb_extslots) > PAGE_SIZE - EROFS_SUPER_OFFSET:
        found.append(f"sb_extslots {rec.sb_extslots} too large")
    if rec.feature_incompat & ~_KNOWN_INCOMPAT:
        found.append(f"unknown incompat feature bits {rec.feature_incompat & ~_KNOWN_INCOMPAT:#x}")
    if not found and rec.feature_incompat & _NAMED_UNSUPPORTED:
        raise UnsupportedFeatureError(
            f"image uses incompat features {rec.feature_incompat & _NAMED_UNSUPPORTED:#x} "
            "(48BIT/METABOX), which cannot be checked"
        )
    return [Problem(message, area="superblock", offset=EROFS_SUPER_OFFSET) for message in found]


def check_source(
    source: SourceLike,
    devices: Sequence[SourceLike] = (),
    *,
    data: bool = False,
    limit: int = DEFAULT_LIMIT,
) -> list[Problem]:
    """Open `source` (with its extra devices) and check it; a superblock that cannot be opened
    is reported as problems.

    Raises InvalidInputError when the file cannot be opened, is not an EROFS image or the wrong
    number of devices is given, and UnsupportedFeatureError for features this reader does not implement.
    """
    raw = superblock_problems(source)
    if raw:
        return raw
    try:
        image = open_image(source, devices, strict_checksum=False)
    except CorruptImageError as exc:
        return [Problem(_bare_message(exc), area=exc.area or "superblock", offset=exc.offset)]
    except UnsupportedFeatureError as exc:  # e.g. unknown algorithms: the kernel refuses them too
        return [Problem(str(exc), area="superblock")]
    with image:
        return check_image(image, data=data, limit=limit)


def summarize(problems: Sequence[Problem]) -> str:
    """'N problems, M warnings'."""
    errors = sum(1 for p in problems if not p.is_warning)
    warnings = len(problems) - errors
    return f"{errors} problem{'s' * (errors != 1)}, {warnings} warning{'s' * (warnings != 1)}"


__all__ = [
    "DEFAULT_LIMIT",
    "Problem",
    "Severity",
    "check_image",
    "check_source",
    "summarize",
    "superblock_problems",
]
