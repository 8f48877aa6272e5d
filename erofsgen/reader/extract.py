"""Recreate an image's tree on the local filesystem, safely.

Nothing is written outside the destination whatever names the image holds: every name is one
checked path component, every file is created relative to a directory file descriptor with
O_NOFOLLOW/O_EXCL, and intermediate directories are reopened component by component without
following symlinks; hard links are made relative to the first link's directory descriptor, so
no path is ever longer than one name (PATH_MAX does not apply). Attributes go on in the order
that keeps them: data, owner (chown clears setuid bits and capabilities), xattrs, mode, times;
directories get xattrs (a default ACL would otherwise leak into their children), mode and
times last, bottom-up. A file whose mode the umask leaves alone is created with it directly.

Speed: the walk is `reader.walk`, file data moves in the kernel (`Image.copy_nid`), each inode
is decoded once, and per file only the necessary system calls are made (no chown when the new
entry is owned right already). With `parallel`, plain files with uncompressed data are created
by a forked writer process from ready-made jobs while this one decodes the next directories
(see `_FileWriter`). An error of the destination (ENOSPC, EFBIG, EROFS, EACCES, ...) is an
OSError whose filename is the full path.
"""

from __future__ import annotations

import contextlib
import errno
import os
import pickle
import signal
import stat
import threading
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Protocol

from ..errors import CorruptImageError, InvalidInputError
from ..format.constants import FileType
from .data import Run
from .dirs import RawDirEntry
from .inode import InodeInfo
from .names import escape_name
from .walk import walk_dirs

_DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
_FILE_FLAGS = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC
_PRIVILEGED_XATTRS = (b"trusted.", b"security.")
_SETTABLE_XATTRS = (b"user.", b"system.posix_acl_access", b"system.posix_acl_default")
_DIR, _REG, _SYMLINK = FileType.DIR, FileType.REG_FILE, FileType.SYMLINK


class ImageSource(Protocol):
    """What extraction needs of an image; `Image` provides it."""

    def inode(self, nid: int) -> InodeInfo:
        """The decoded inode."""

    def scandir_nid(self, nid: int) -> Iterator[RawDirEntry]:
        """Entries of a directory without "." and ".."."""

    def xattrs_nid(self, nid: int) -> dict[bytes, bytes]:
        """Full xattr names and values."""

    def readlink_nid(self, nid: int) -> bytes:
        """A symlink's target."""

    def copy_nid(self, nid: int, fd: int) -> None:
        """Write the inode's data into the new file open at `fd`."""

    def copy_plan_nid(self, nid: int) -> list[Run] | None:
        """Data runs of an uncompressed inode for `copy_planned`; None if compressed."""

    def copy_planned(self, nid: int, size: int, segments: list[Run], fd: int) -> None:
        """Copy planned runs into the new file open at `fd`; system calls only."""


@dataclass
class ExtractResult:
    """What `extract` created, and what it had to leave out (with reasons)."""

    directories: int = 0
    files: int = 0
    symlinks: int = 0
    specials: int = 0  # devices, fifos, sockets
    hardlinks: int = 0
    skipped: list[str] = field(default_factory=list)  # "path: what was not applied and why", escaped


def check_name(name: bytes, nid: int) -> None:
    """Refuse a directory entry name that is not one safe path component."""
    if name in (b"", b".", b"..") or b"/" in name or b"\0" in name:
        raise CorruptImageError(f"unsafe entry name {escape_name(name)}", nid=nid, area="directory")


# A regular file for the writer: name, mode, (uid, gid) to set or None, mtime in ns, nid, size,
# data runs, and its path relative to the root (for messages).
_FileJob = tuple[bytes, int, "tuple[int, int] | None", int, int, int, list[Run], bytes]
_BATCH = 256  # jobs handed over at once: few messages, yet the writer starts early


class _FileWriter:
    """A forked process creating regular files from ready-made jobs while this one decodes.

    Creating a file is system calls (open, copy_file_range, fchown, utimensat, close); in a
    thread of this process each would wait for the GIL again, so a child process does them on
    the other core. Jobs arrive pickled on a pipe, in order, as (directory, files) batches; the
    child opens the directory below `root_fd` itself, component by component. It answers only
    `sync` requests, and reports the first error (with the path it happened on), after which it
    skips everything. It never returns into the caller's code: it ends with os._exit.
    """

    def __init__(self, image: ImageSource, open_dir: Callable[[bytes], int]) -> None:
        job_r, job_w = os.pipe()
        res_r, res_w = os.pipe()
        self.pid = os.fork()
        if self.pid == 0:  # pragma: no cover - the child (coverage does not follow forks)
            os.close(job_w)
            os.close(res_r)
            _child_main(image, open_dir, job_r, res_w)
        os.close(job_r)
        os.close(res_w)
        self.jobs = os.fdopen(job_w, "wb")
        self.results = os.fdopen(res_r, "rb")
        os.set_blocking(res_r, False)
        self.error: tuple[BaseException, bytes] | None = None
        self.partial = b""  # an unfinished line of the child's reports

    def submit(self, rel: bytes, jobs: list[_FileJob]) -> None:
        """Queue `jobs`, files to create in directory `rel` (relative to the root)."""
        try:
            pickle.dump((rel, jobs), self.jobs, pickle.HIGHEST_PROTOCOL)
            self.jobs.flush()
        except BrokenPipeError:  # the child is gone: say so as an error of the destination
            if self.error is None:
                self.error = (OSError(errno.EIO, "the writer process ended early"), rel)

    def poll(self) -> None:
        """Take in an error the child reported, without waiting."""
        try:
            data = os.read(self.results.fileno(), 1 << 16)
        except BlockingIOError:
            return
        self._take(data)

    def wait(self) -> None:
        """Return once every job queued so far is done (or skipped after an error)."""
        try:
            pickle.dump(None, self.jobs)
            self.jobs.flush()
        except BrokenPipeError:
            pass  # the child is gone: the read below sees its end and records it
        os.set_blocking(self.results.fileno(), True)
        try:
            while not self._take(os.read(self.results.fileno(), 1 << 16)):
                pass
        finally:
            os.set_blocking(self.results.fileno(), False)

    def _take(self, data: bytes) -> bool:
        """Record what the child said; whether it answered a sync (or ended)."""
        if not data:
            if self.error is None:
                self.error = (OSError(errno.EIO, "the writer process ended early"), b"")
            return True
        synced = False
        *lines, self.partial = (self.partial + data).split(b"\n")
        for line in lines:
            if line == b"sync":
                synced = True
            elif line and self.error is None:
                exc, rel = pickle.loads(bytes.fromhex(line.decode()))
                self.error = (exc, rel)
        return synced

    def close(self, *, finish: bool) -> None:
        """Finish the queued jobs and end the child (`finish`), or kill it at once."""
        finished = False
        try:
            if finish:
                self.wait()
                finished = True
        finally:
            if not finished:  # told so, or interrupted while waiting
                os.kill(self.pid, signal.SIGKILL)
            for f in (self.jobs, self.results):
                with contextlib.suppress(OSError):
                    f.close()
            os.waitpid(self.pid, 0)


def _child_main(image: ImageSource, open_dir: Callable[[bytes], int], job_r: int, res_w: int) -> None:
    """The writer process: run batches until the pipe closes, then _exit (never return)."""
    code = 0
    try:
        signal.signal(signal.SIGINT, signal.SIG_IGN)  # the parent stops us
        for signum in (signal.SIGTERM, signal.SIGHUP):
            signal.signal(signum, signal.SIG_DFL)
        failed = False
        with os.fdopen(job_r, "rb") as jobs:
            while True:
                try:
                    item = pickle.load(jobs)
                except EOFError:
                    break
                if item is None:
                    os.write(res_w, b"sync\n")
                elif not failed:
                    failed = _child_batch(image, open_dir, res_w, *item)
    except BaseException:
        code = 1
    finally:
        os._exit(code)


def _child_batch(
    image: ImageSource, open_dir: Callable[[bytes], int], res_w: int, rel: bytes, jobs: list[_FileJob]
) -> bool:
    """Create one batch of files; on an error report it and return True."""
    copy = image.copy_planned
    path = rel
    try:
        dfd = open_dir(rel)
        try:
            for job in jobs:
                name, mode, owner, mtime, nid, size, runs, path = job
                fd = os.open(name, _FILE_FLAGS, mode, dir_fd=dfd)
                try:
                    if size:
                        copy(nid, size, runs, fd)
                    if owner is not None:
                        os.fchown(fd, *owner)
                    os.utime(fd, ns=(mtime, mtime))  # the kernel reports atime = mtime
                finally:
                    os.close(fd)
        finally:
            os.close(dfd)
    except Exception as exc:  # handed to the parent
        try:
            blob = pickle.dumps((exc, path))
        except Exception:
            blob = pickle.dumps((CorruptImageError(str(exc)), path))
        os.write(res_w, blob.hex().encode() + b"\n")
        return True
    return False


class _Extractor:
    def __init__(self, image: ImageSource, root_fd: int, dest: bytes) -> None:
        self.image = image
        self.root_fd = root_fd
        self.dest = dest  # what root_fd is, for messages
        self.privileged = os.geteuid() == 0
        # A new file is owned by (euid, egid) unless its directory's group is another (setgid
        # directory, `grpid` mount): then the chown a file owned by us needs can be skipped.
        self.own = (os.geteuid(), os.getegid())
        self.parent_gid = os.fstat(root_fd).st_gid  # of the directory being filled
        self.writer: _FileWriter | None = None
        self.pending: list[_FileJob] = []  # files for the writer, of the directory being filled
        self.result = ExtractResult()
        # nid -> (directory, name) of its first link, relative to root_fd: linking through a
        # directory descriptor works however long the path (PATH_MAX does not apply).
        self.first_link: dict[int, tuple[bytes, bytes]] = {}
        self.finish_dirs: list[tuple[bytes, InodeInfo]] = []
        # Bits a file may be created with directly (saving an fchmod); None: always fchmod.
        self.direct_bits = _direct_mode_bits(root_fd)

    # -- helpers --------------------------------------------------------------------------

    def open_dir(self, rel: bytes) -> int:
        """A descriptor of directory `rel`, opened component by component (no symlinks)."""
        fd = os.dup(self.root_fd)
        for part in rel.split(b"/") if rel else []:
            try:
                nfd = os.open(part, _DIR_FLAGS, dir_fd=fd)
            finally:
                os.close(fd)
            fd = nfd
        return fd

    def dest_error(self, exc: OSError, rel: bytes) -> OSError:
        """`exc` naming the destination path it happened on (ENOSPC says which file)."""
        path = os.path.join(self.dest, rel) if rel else self.dest
        return OSError(exc.errno, exc.strerror, os.fsdecode(path))

    def skip(self, rel: bytes, what: str) -> None:
        self.result.skipped.append(f"{escape_name(rel) or '.'}: {what}")

    def set_xattrs(self, info: InodeInfo, target: int | bytes, rel: bytes) -> None:
        """Apply xattrs through an fd, or an lsetxattr path for symlinks and special files."""
        for name, value in self.image.xattrs_nid(info.nid).items():
            if name.startswith(_PRIVILEGED_XATTRS) and not self.privileged:
                self.skip(rel, f"xattr {escape_name(name)} needs privileges")
                continue
            if not name.startswith(_PRIVILEGED_XATTRS + _SETTABLE_XATTRS):
                self.skip(rel, f"xattr {escape_name(name)}: namespace cannot be set")
                continue
            try:
                if isinstance(target, int):
                    os.setxattr(target, name, value)
                else:
                    os.setxattr(target, name, value, follow_symlinks=False)
            except OSError as exc:
                self.skip(rel, f"xattr {escape_name(name)}: {exc.strerror}")

    # -- the tree -------------------------------------------------------------------------

    def run(self, top_nid: int, *, parallel: bool) -> ExtractResult:
        top = self.image.inode(top_nid)
        try:
            if self.privileged:
                os.fchown(self.root_fd, top.uid, top.gid)
        except OSError as exc:
            raise self.dest_error(exc, b"") from None
        self.finish_dirs.append((b"", top))
        # Forking is safe only without other threads (one might hold a lock the child needs).
        if parallel and threading.active_count() == 1:
            self.writer = _FileWriter(self.image, self.open_dir)
        try:
            self.fill_tree(top_nid)
        except BaseException:
            if self.writer is not None:  # its own error, if any, is moot now
                self.writer.close(finish=False)
            raise
        if self.writer is not None:
            self.writer.close(finish=True)
            self.check_writer()
        self.finish()
        return self.result

    def fill_tree(self, top_nid: int) -> None:
        """Create everything below the root but the directories' final attributes."""
        scandir, inode = self.image.scandir_nid, self.image.inode
        for visit in walk_dirs(lambda nid: list(scandir(nid)), top_nid, b""):
            try:
                dfd = self.open_dir(visit.path)
            except OSError as exc:
                raise self.dest_error(exc, visit.path) from None
            try:
                self.parent_gid = inode(visit.nid).gid if self.privileged else -1
                visit.descend = self.fill_dir(dfd, visit.path, visit.nid, visit.entries)
                self.flush(visit.path)
            finally:
                os.close(dfd)
            if self.writer is not None:
                self.writer.poll()
                self.check_writer()

    def flush(self, rel: bytes) -> None:
        """Hand the files collected for directory `rel` to the writer."""
        if self.pending:
            assert self.writer is not None
            self.writer.submit(rel, self.pending)
            self.pending = []

    def check_writer(self) -> None:
        """Raise the error the writer reported, if any."""
        failed = self.writer.error if self.writer is not None else None
        if failed is not None:
            exc, rel = failed
            if isinstance(exc, OSError):
                raise self.dest_error(exc, rel) from None
            raise exc

    def owner(self, info: InodeInfo) -> tuple[int, int] | None:
        """(uid, gid) a new entry of the directory being filled must be given, None if none."""
        if not self.privileged:
            return None
        owner = (info.uid, info.gid)
        return None if owner == self.own and self.parent_gid == owner[1] else owner

    def fill_dir(
        self, dfd: int, rel: bytes, nid: int, entries: Sequence[RawDirEntry]
    ) -> list[tuple[bytes, int]]:
        """Create the entries of one directory; returns its subdirectories to descend into."""
        subdirs = []
        names: set[bytes] = set()
        inode = self.image.inode
        for entry in entries:
            name = entry.name
            check_name(name, nid)
            if name in names:
                raise CorruptImageError(
                    f"duplicate entry name {escape_name(name)}", nid=nid, area="directory"
                )
            names.add(name)
            info = inode(entry.nid)
            crel = rel + b"/" + name if rel else name
            if info.file_type is _DIR:
                subdirs.append((name, entry.nid))
            try:
                if info.file_type is _DIR:
                    self.make_dir(dfd, name, info, crel)
                else:
                    self.make_entry(dfd, rel, name, info)
            except OSError as exc:
                raise self.dest_error(exc, crel) from None
            if len(self.pending) >= _BATCH:
                self.flush(rel)
        return subdirs

    def make_dir(self, dfd: int, name: bytes, info: InodeInfo, rel: bytes) -> None:
        os.mkdir(name, 0o700, dir_fd=dfd)  # opened up in finish(), once its children exist
        owner = self.owner(info)
        if owner is not None:
            os.chown(name, *owner, dir_fd=dfd, follow_symlinks=False)
        self.finish_dirs.append((rel, info))
        self.result.directories += 1

    def finish(self) -> None:
        """xattrs, mode and times of directories, deepest first (their children are done)."""
        for rel, info in reversed(self.finish_dirs):
            try:
                fd = self.open_dir(rel)
                try:
                    if info.xattr_icount:
                        self.set_xattrs(info, fd, rel)
                    os.fchmod(fd, stat.S_IMODE(info.mode))
                    os.utime(fd, ns=(info.mtime_ns, info.mtime_ns))
                finally:
                    os.close(fd)
            except OSError as exc:
                raise self.dest_error(exc, rel) from None

    # -- entries --------------------------------------------------------------------------

    def make_entry(self, dfd: int, parent: bytes, name: bytes, info: InodeInfo) -> None:
        """Create a non-directory `name` in `dfd` (directory `parent` relative to the root)."""
        first = self.first_link.get(info.nid)
        if first is not None:
            self.make_link(dfd, parent, name, first)
            return
        rel = parent + b"/" + name if parent else name
        if info.file_type is _REG:
            self.make_file(dfd, name, info, rel)
        elif info.file_type is _SYMLINK:
            self.make_symlink(dfd, name, info, rel)
        elif not self.make_special(dfd, name, info, rel):
            return
        self.first_link[info.nid] = (parent, name)  # whatever i_nlink says

    def make_link(self, dfd: int, parent: bytes, name: bytes, first: tuple[bytes, bytes]) -> None:
        if self.writer is not None:  # the first link must exist
            self.flush(parent)
            self.writer.wait()
            self.check_writer()
        src_dir, src_name = first
        src_fd = dfd if src_dir == parent else self.open_dir(src_dir)
        try:
            os.link(src_name, name, src_dir_fd=src_fd, dst_dir_fd=dfd, follow_symlinks=False)
        finally:
            if src_fd != dfd:
                os.close(src_fd)
        self.result.hardlinks += 1

    def make_file(self, dfd: int, name: bytes, info: InodeInfo, rel: bytes) -> None:
        mode = info.mode & 0o7777
        bits = self.direct_bits
        direct = bits is not None and not mode & ~bits and not info.xattr_icount
        owner = self.owner(info)
        if direct and self.writer is not None:
            runs = self.image.copy_plan_nid(info.nid) if info.size else []
            if runs is not None:  # uncompressed: the writer creates it
                self.pending.append((name, mode, owner, info.mtime_ns, info.nid, info.size, runs, rel))
                self.result.files += 1
                return
        fd = os.open(name, _FILE_FLAGS, mode if direct else 0o600, dir_fd=dfd)
        try:
            if info.size:
                self.image.copy_nid(info.nid, fd)
            if owner is not None:
                os.fchown(fd, *owner)  # before the mode: chown clears setuid bits
            if not direct:
                if info.xattr_icount:
                    self.set_xattrs(info, fd, rel)
                os.fchmod(fd, mode)
            mtime = info.mtime_ns
            os.utime(fd, ns=(mtime, mtime))  # the kernel reports atime = mtime
        finally:
            os.close(fd)
        self.result.files += 1

    def make_symlink(self, dfd: int, name: bytes, info: InodeInfo, rel: bytes) -> None:
        target = self.image.readlink_nid(info.nid)
        if not target or b"\0" in target:
            shown = escape_name(target)
            raise CorruptImageError(f"symlink target '{shown}' is not a path", nid=info.nid, area="symlink")
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
        owner = self.owner(info)
        if owner is not None:
            os.chown(name, *owner, dir_fd=dfd, follow_symlinks=False)
        if info.xattr_icount:
            self.set_xattrs(info, b"/proc/self/fd/%d/%s" % (dfd, name), rel)
        if chmod:
            os.chmod(name, stat.S_IMODE(info.mode), dir_fd=dfd)
        os.utime(name, ns=(info.mtime_ns, info.mtime_ns), dir_fd=dfd, follow_symlinks=False)


def _umask() -> int | None:
    """The process umask from /proc (os.umask would change it for every thread), if readable."""
    try:
        with open("/proc/self/status", "rb") as status:
            for line in status:
                if line.startswith(b"Umask:"):
                    return int(line.split()[1], 8)
    except (OSError, ValueError, IndexError):
        pass
    return None


def _direct_mode_bits(root_fd: int) -> int | None:
    """The permission bits a new file below `root_fd` gets exactly as asked for, if known.

    open(2) applies the umask, or a default ACL instead of it; a file whose mode has only
    bits outside both (and no setuid/setgid/sticky bit, no xattr such as an access ACL) needs
    no fchmod.
    """
    umask = _umask()
    if umask is None:
        return None
    try:
        os.getxattr(root_fd, "system.posix_acl_default")
    except OSError:
        return 0o777 & ~umask  # no default ACL (ENODATA), or none possible (ENOTSUP)
    return None  # a default ACL decides the modes: always fchmod


def _prepare_dir(dest: bytes) -> None:
    try:
        st = os.lstat(dest)
    except FileNotFoundError:
        os.mkdir(dest, 0o700)
        return
    if not stat.S_ISDIR(st.st_mode):
        raise InvalidInputError("destination exists and is not a directory", escape_name(dest))
    if os.listdir(dest):
        raise InvalidInputError("destination directory is not empty", escape_name(dest))


def extract_tree(image: ImageSource, dest: str | bytes, nid: int, *, parallel: bool = False) -> ExtractResult:
    """Recreate the inode `nid` (a whole tree if a directory) at `dest`.

    A directory goes to `dest`, which must not exist or be an empty directory (it then takes
    the image directory's mode, owner, times and xattrs). Anything else is created as `dest`,
    which must not exist. Owners are set only when running as root; xattrs in namespaces the
    user may not set (trusted./security. unless root) and device nodes that cannot be created
    are listed in `ExtractResult.skipped` instead of failing the extraction. Errors of the
    destination are OSErrors whose filename is the path that failed.
    """
    dest_b = os.fsencode(dest)
    info = image.inode(nid)
    if info.is_dir:
        _prepare_dir(dest_b)
        root_fd = os.open(dest_b, _DIR_FLAGS)
        try:
            return _Extractor(image, root_fd, dest_b).run(nid, parallel=parallel)
        finally:
            os.close(root_fd)
    if os.path.lexists(dest_b):
        raise InvalidInputError("destination already exists", escape_name(dest_b))
    parent, name = os.path.split(os.path.abspath(dest_b))
    parent_fd = os.open(parent, _DIR_FLAGS)
    try:
        ext = _Extractor(image, parent_fd, parent)
        try:
            ext.make_entry(parent_fd, b"", name, info)
        except OSError as exc:
            raise ext.dest_error(exc, name) from None
        return ext.result
    finally:
        os.close(parent_fd)
