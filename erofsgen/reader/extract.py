"""Recreate an image's tree on the local filesystem, safely.

Nothing is written outside the destination whatever names the image holds: every name is one
checked path component, every file is created relative to a directory file descriptor with
O_NOFOLLOW/O_EXCL, and intermediate directories are reopened component by component without
following symlinks. Attributes go on in the order that keeps them: data, owner (chown clears
setuid bits and capabilities), xattrs, mode, times; directories get xattrs (a default ACL would
otherwise leak into their children), mode and times last, bottom-up.
"""

from __future__ import annotations

import errno
import os
import stat
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from ..errors import CorruptImageError, InvalidInputError
from ..format.constants import FileType
from .datamap import map_uncompressed
from .inode import InodeInfo

if TYPE_CHECKING:
    from .image import Image

COPY_CHUNK = 1 << 20
_DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
_FILE_FLAGS = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC
_PRIVILEGED_XATTRS = (b"trusted.", b"security.")
_SETTABLE_XATTRS = (b"user.", b"system.posix_acl_access", b"system.posix_acl_default")


@dataclass
class ExtractResult:
    """What `extract` created, and what it had to leave out (with reasons)."""

    directories: int = 0
    files: int = 0
    symlinks: int = 0
    specials: int = 0  # devices, fifos, sockets
    hardlinks: int = 0
    skipped: list[str] = field(default_factory=list)  # "path: what was not applied and why"


def check_name(name: bytes, nid: int) -> None:
    """Refuse a directory entry name that is not one safe path component."""
    if name in (b"", b".", b"..") or b"/" in name or b"\0" in name:
        raise CorruptImageError(f"unsafe entry name {name!r}", nid=nid, area="directory")


class _Extractor:
    def __init__(self, image: Image, root_fd: int) -> None:
        self.image = image
        self.root_fd = root_fd
        self.privileged = os.geteuid() == 0
        self.result = ExtractResult()
        self.first_path: dict[int, bytes] = {}  # nid -> path (relative to root) of its first link
        self.finish_dirs: list[tuple[bytes, InodeInfo]] = []

    # -- helpers --------------------------------------------------------------------------

    def open_dir(self, rel: bytes) -> int:
        fd = os.dup(self.root_fd)
        for part in rel.split(b"/") if rel else []:
            try:
                nfd = os.open(part, _DIR_FLAGS, dir_fd=fd)
            finally:
                os.close(fd)
            fd = nfd
        return fd

    def skip(self, rel: bytes, what: str) -> None:
        self.result.skipped.append(f"{os.fsdecode(rel) or '.'}: {what}")

    def chown(self, info: InodeInfo, target: int | bytes, dir_fd: int | None = None) -> None:
        if not self.privileged:
            return
        if isinstance(target, int):
            os.fchown(target, info.uid, info.gid)
        else:
            os.chown(target, info.uid, info.gid, dir_fd=dir_fd, follow_symlinks=False)

    def set_xattrs(self, info: InodeInfo, target: int | bytes, rel: bytes) -> None:
        """Apply xattrs through an fd, or an lsetxattr path for symlinks and special files."""
        for name, value in self.image.xattrs_nid(info.nid).items():
            if name.startswith(_PRIVILEGED_XATTRS) and not self.privileged:
                self.skip(rel, f"xattr {os.fsdecode(name)} needs privileges")
                continue
            if not name.startswith(_PRIVILEGED_XATTRS + _SETTABLE_XATTRS):
                self.skip(rel, f"xattr {os.fsdecode(name)}: namespace cannot be set")
                continue
            try:
                if isinstance(target, int):
                    os.setxattr(target, name, value)
                else:
                    os.setxattr(target, name, value, follow_symlinks=False)
            except OSError as exc:
                self.skip(rel, f"xattr {os.fsdecode(name)}: {exc.strerror}")

    @staticmethod
    def times(info: InodeInfo) -> tuple[int, int]:
        return info.mtime_ns, info.mtime_ns  # the kernel reports atime = mtime

    # -- entries --------------------------------------------------------------------------

    def run(self, top_nid: int) -> ExtractResult:
        top = self.image.inode(top_nid)
        fd = os.dup(self.root_fd)
        try:
            self.chown(top, fd)
        finally:
            os.close(fd)
        self.finish_dirs.append((b"", top))
        stack = [(b"", top_nid)]
        seen = {top_nid}
        while stack:
            rel, nid = stack.pop()
            dfd = self.open_dir(rel)
            try:
                stack.extend(self.fill_dir(dfd, rel, nid, seen))
            finally:
                os.close(dfd)
        self.finish()
        return self.result

    def fill_dir(self, dfd: int, rel: bytes, nid: int, seen: set[int]) -> list[tuple[bytes, int]]:
        """Create the entries of one directory; returns its subdirectories to descend into."""
        subdirs = []
        names: set[bytes] = set()
        for entry in self.image.scandir_nid(nid):
            check_name(entry.name, nid)
            if entry.name in names:
                raise CorruptImageError(f"duplicate entry name {entry.name!r}", nid=nid, area="directory")
            names.add(entry.name)
            crel = rel + b"/" + entry.name if rel else entry.name
            info = self.image.inode(entry.nid)
            if not info.is_dir:
                self.make_entry(dfd, entry.name, info, crel)
                continue
            if entry.nid in seen:
                raise CorruptImageError("directory reached twice", nid=entry.nid, area="directory")
            seen.add(entry.nid)
            self.make_dir(dfd, entry.name, info, crel)
            subdirs.append((crel, entry.nid))
        return subdirs

    def make_dir(self, dfd: int, name: bytes, info: InodeInfo, rel: bytes) -> None:
        os.mkdir(name, 0o700, dir_fd=dfd)
        fd = os.open(name, _DIR_FLAGS, dir_fd=dfd)
        try:
            self.chown(info, fd)
        finally:
            os.close(fd)
        self.finish_dirs.append((rel, info))
        self.result.directories += 1

    def finish(self) -> None:
        """xattrs, mode and times of directories, deepest first (their children are done)."""
        for rel, info in reversed(self.finish_dirs):
            fd = self.open_dir(rel)
            try:
                self.set_xattrs(info, fd, rel)
                os.fchmod(fd, stat.S_IMODE(info.mode))
                os.utime(fd, ns=self.times(info))
            finally:
                os.close(fd)

    def make_entry(self, dfd: int, name: bytes, info: InodeInfo, rel: bytes) -> None:
        first = self.first_path.get(info.nid)
        if first is not None:
            os.link(first, name, src_dir_fd=self.root_fd, dst_dir_fd=dfd, follow_symlinks=False)
            self.result.hardlinks += 1
            return
        if info.file_type == FileType.REG_FILE:
            self.make_file(dfd, name, info, rel)
        elif info.file_type == FileType.SYMLINK:
            self.make_symlink(dfd, name, info, rel)
        elif not self.make_special(dfd, name, info, rel):
            return
        self.first_path[info.nid] = rel

    def make_file(self, dfd: int, name: bytes, info: InodeInfo, rel: bytes) -> None:
        fd = os.open(name, _FILE_FLAGS, 0o600, dir_fd=dfd)
        try:
            self.copy_data(info, fd)
            self.chown(info, fd)
            self.set_xattrs(info, fd, rel)
            os.fchmod(fd, stat.S_IMODE(info.mode))
            os.utime(fd, ns=self.times(info))
        finally:
            os.close(fd)
        self.result.files += 1

    def copy_data(self, info: InodeInfo, fd: int) -> None:
        """Copy in bounded chunks; holes of the mapping are skipped unread (a sparse file may
        claim terabytes) and all-zero chunks become holes too."""
        with self.image.open_nid(info.nid) as src:
            pos = 0
            while pos < info.size:
                hole_end = self.hole_end(info, pos)
                if hole_end > pos:
                    pos = src.seek(hole_end)
                    continue
                chunk = src.read(COPY_CHUNK)
                if not chunk:
                    break
                if chunk.count(0) != len(chunk):
                    os.lseek(fd, pos, os.SEEK_SET)
                    view = memoryview(chunk)
                    while view:
                        view = view[os.write(fd, view) :]
                pos += len(chunk)
        os.ftruncate(fd, info.size)

    def hole_end(self, info: InodeInfo, pos: int) -> int:
        """End of the mapping hole holding `pos`, or `pos` itself when data is stored there."""
        if info.compressed:
            return pos
        seg = map_uncompressed(self.image.storage, self.image.superblock, info, pos)
        return seg.end if seg.device is None else pos

    def make_symlink(self, dfd: int, name: bytes, info: InodeInfo, rel: bytes) -> None:
        target = self.image.readlink_nid(info.nid)
        if not target or b"\0" in target:
            raise CorruptImageError(f"symlink target {target!r} is not a path", nid=info.nid, area="symlink")
        os.symlink(target, name, dir_fd=dfd)
        self.path_attrs(dfd, name, info, rel, chmod=False)
        self.result.symlinks += 1

    def make_special(self, dfd: int, name: bytes, info: InodeInfo, rel: bytes) -> bool:
        kind = stat.S_IFMT(info.mode)
        try:
            if info.file_type == FileType.FIFO:
                os.mkfifo(name, 0o600, dir_fd=dfd)
            else:
                dev = info.rdev if info.file_type in (FileType.CHRDEV, FileType.BLKDEV) else 0
                os.mknod(name, kind | 0o600, dev, dir_fd=dfd)
        except PermissionError as exc:
            if exc.errno not in (errno.EPERM, errno.EACCES):
                raise
            self.skip(rel, f"{info.file_type.name.lower()} not created: {exc.strerror}")
            return False
        self.path_attrs(dfd, name, info, rel, chmod=True)
        self.result.specials += 1
        return True

    def path_attrs(self, dfd: int, name: bytes, info: InodeInfo, rel: bytes, *, chmod: bool) -> None:
        """Attributes of an entry we cannot open (symlink, device, fifo, socket) by name."""
        self.chown(info, name, dir_fd=dfd)
        self.set_xattrs(info, b"/proc/self/fd/%d/%s" % (dfd, name), rel)
        if chmod:
            os.chmod(name, stat.S_IMODE(info.mode), dir_fd=dfd)
        os.utime(name, ns=self.times(info), dir_fd=dfd, follow_symlinks=False)


def _prepare_dir(dest: bytes) -> None:
    try:
        st = os.lstat(dest)
    except FileNotFoundError:
        os.mkdir(dest, 0o700)
        return
    if not stat.S_ISDIR(st.st_mode):
        raise InvalidInputError("destination exists and is not a directory", os.fsdecode(dest))
    if os.listdir(dest):
        raise InvalidInputError("destination directory is not empty", os.fsdecode(dest))


def extract_tree(image: Image, dest: str | bytes, nid: int) -> ExtractResult:
    """Recreate the inode `nid` (a whole tree if a directory) at `dest`.

    A directory goes to `dest`, which must not exist or be an empty directory (it then takes
    the image directory's mode, owner, times and xattrs). Anything else is created as `dest`,
    which must not exist. Owners are set only when running as root; xattrs in namespaces the
    user may not set (trusted./security. unless root) and device nodes that cannot be created
    are listed in `ExtractResult.skipped` instead of failing the extraction.
    """
    dest_b = os.fsencode(dest)
    info = image.inode(nid)
    if info.is_dir:
        _prepare_dir(dest_b)
        root_fd = os.open(dest_b, _DIR_FLAGS)
        try:
            return _Extractor(image, root_fd).run(nid)
        finally:
            os.close(root_fd)
    if os.path.lexists(dest_b):
        raise InvalidInputError("destination already exists", os.fsdecode(dest_b))
    parent, name = os.path.split(os.path.abspath(dest_b))
    parent_fd = os.open(parent, _DIR_FLAGS)
    try:
        ext = _Extractor(image, parent_fd)
        ext.make_entry(parent_fd, name, info, name)
        return ext.result
    finally:
        os.close(parent_fd)
