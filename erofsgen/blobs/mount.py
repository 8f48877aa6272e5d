"""Mounting an EROFS image with its extra (blob) devices, read-only, and unmounting it.

Linux 6.12+ mounts a regular-file image without a loop device, and then every `device=` may be
a regular file too (erofs-format.md §5). util-linux `mount` always puts a loop device under a
file, so this module calls the kernel itself, through the new mount API: fsopen("erofs"), one
fsconfig per option, fsmount, move_mount. Unlike mount(2)'s one-page option string this has no
limit on the number of devices, and the fs context hands back the kernel's own error messages.
Each device is passed as `/proc/self/fd/N` of a descriptor held open until the mount exists,
which keeps every value under fsconfig's 255 bytes.

Where file-backed mounts are missing (older kernels, or a block device as the image), every
regular file is attached to a read-only, self-detaching loop device (loop.py) and mounted with
mount(2); the loop devices go away at unmount, or at once if the mount fails.
"""

from __future__ import annotations

import contextlib
import ctypes
import errno
import os
import re
import stat
from collections.abc import Sequence
from dataclasses import dataclass

from ..errors import ErofsgenError, InvalidInputError
from ..reader.names import escape_name
from .loop import LoopDevice, LoopError, attach_loop

PathLike = str | os.PathLike[str]

# EROFSGEN_MOUNT=loop makes mount_image use loop devices even where file-backed mounts work.
MOUNT_METHOD_ENV = "EROFSGEN_MOUNT"

# Syscall numbers of the new mount API: the same on every architecture but alpha (x86_64,
# aarch64, riscv64, ...), as syscalls added since Linux 5.1 are numbered in one table.
SYS_MOVE_MOUNT = 429
SYS_FSOPEN = 430
SYS_FSCONFIG = 431
SYS_FSMOUNT = 432
FSOPEN_CLOEXEC = 0x1
FSCONFIG_SET_FLAG = 0
FSCONFIG_SET_STRING = 1
FSCONFIG_CMD_CREATE = 6
FSMOUNT_CLOEXEC = 0x1
MOUNT_ATTR_RDONLY = 0x1
MOVE_MOUNT_F_EMPTY_PATH = 0x4
AT_FDCWD = -100
MS_RDONLY = 0x1
FSCONFIG_VALUE_MAX = 255  # longer string values fail with EINVAL
MOUNT_DATA_MAX = 4095  # mount(2) copies one page of options, NUL included

# A file-backed mount failing with these means "not possible here": try loop devices instead.
_FALLBACK = {errno.ENOTBLK, errno.EINVAL, errno.ENOSYS, errno.EOPNOTSUPP}

_libc = ctypes.CDLL(None, use_errno=True)


class MountError(ErofsgenError):
    """The kernel refused a mount or unmount; `errno` is its error number, `kernel_messages`
    what it logged about it (from the fs context or /dev/kmsg), maybe nothing."""

    def __init__(self, message: str, code: int | None = None, kernel_messages: Sequence[str] = ()) -> None:
        super().__init__(message)
        self.errno = code
        self.kernel_messages = tuple(kernel_messages)


class KernelLog:
    """The erofs lines the kernel logs from now on (/dev/kmsg, root only; best effort).

    EROFS reports why it refuses an image with printk, not into the fs context, so these lines
    are what makes a failed mount's message say more than "Invalid argument".
    """

    def __init__(self) -> None:
        try:
            self._fd: int | None = os.open("/dev/kmsg", os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
            os.lseek(self._fd, 0, os.SEEK_END)  # only what comes after this point
        except OSError:
            self._fd = None

    def erofs_lines(self) -> list[str]:
        """The new records that mention erofs, oldest first; each record is read once."""
        lines: list[str] = []
        while self._fd is not None:
            try:
                record = os.read(self._fd, 8192)
            except BlockingIOError:
                break
            except OSError as exc:
                if exc.errno == errno.EPIPE:
                    continue  # records overwritten before we read them: go on with the next
                break
            # "priority,sequence,timestamp,flags;message\n continuation lines"
            message = record.decode("utf-8", "replace").partition(";")[2].split("\n", 1)[0]
            if "erofs" in message:
                lines.append(message)
        return lines

    def close(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None


@dataclass(frozen=True)
class MountInfo:
    """One line of /proc/self/mountinfo, the fields we need."""

    mountpoint: str
    fstype: str
    source: str
    options: str


def mounts() -> list[MountInfo]:
    """The mounts of this process's namespace, in mount order (last = on top)."""
    found = []
    with open("/proc/self/mountinfo", "rb") as file:
        for raw in file:
            fields = os.fsdecode(raw).split()
            sep = fields.index("-")
            found.append(
                MountInfo(_unescape(fields[4]), fields[sep + 1], _unescape(fields[sep + 2]), fields[5])
            )
    return found


def mount_at(mountpoint: PathLike) -> MountInfo | None:
    """The topmost mount at `mountpoint` (resolved), or None when nothing is mounted there."""
    target = os.path.realpath(mountpoint)
    on_top = [m for m in mounts() if m.mountpoint == target]
    return on_top[-1] if on_top else None


def _unescape(field: str) -> str:
    # mountinfo writes space, tab, newline and backslash as \ooo octal escapes.
    return re.sub(r"\\([0-7]{3})", lambda m: chr(int(m.group(1), 8)), field)


def mount_image(
    image: PathLike, mountpoint: PathLike, devices: Sequence[PathLike] = (), *, loop: bool | None = None
) -> None:
    """Mount `image` read-only at `mountpoint`, with its extra `devices` in device-table order.

    File-backed (no loop devices) where the kernel can; otherwise, or with `loop=True` (or
    EROFSGEN_MOUNT=loop in the environment when `loop` is None), through read-only loop
    devices that detach themselves at unmount. Nothing stays mounted or attached on failure.
    Raises InvalidInputError for a mountpoint that is not a directory, MountError (with the
    kernel's messages where it gives any) when the mount fails.
    """
    if not os.path.isdir(mountpoint):
        raise InvalidInputError("mount point is not a directory", escape_name(os.fspath(mountpoint)))
    if loop is None:
        loop = os.environ.get(MOUNT_METHOD_ENV) == "loop"
    log = KernelLog()
    try:
        first: MountError | None = None
        if not loop:
            try:
                _mount_file_backed(image, mountpoint, devices, log)
                return
            except MountError as exc:
                if not _worth_a_loop(exc):
                    raise
                first = exc
        try:
            _mount_with_loops(image, mountpoint, devices, log)
        except LoopError as exc:
            if first is None:
                raise MountError(str(exc), exc.errno) from exc
            raise MountError(f"{first}; with loop devices: {exc}", exc.errno) from exc
        except MountError as exc:
            if first is None:
                raise
            raise MountError(f"{first}; with loop devices: {exc}", exc.errno, exc.kernel_messages) from exc
    finally:
        log.close()


def _worth_a_loop(exc: MountError) -> bool:
    """Whether a failed file-backed mount may work through loop devices.

    ENOTBLK (no file-backed mounts: the source must be a block device), ENOSYS, EOPNOTSUPP; and
    EINVAL unless EROFS said what is wrong with the image, which loop devices would not change.
    """
    if exc.errno == errno.EINVAL:
        return not any("erofs (" in line for line in exc.kernel_messages)
    return exc.errno in _FALLBACK


def umount_image(mountpoint: PathLike) -> None:
    """Unmount the EROFS file system (or composefs overlay) at `mountpoint`; loop devices detach.

    Raises InvalidInputError when nothing, or something other than EROFS, is mounted there,
    MountError when the kernel refuses (e.g. EBUSY: files still open in it).
    """
    shown = escape_name(os.fspath(mountpoint))
    if not os.path.exists(mountpoint):
        raise InvalidInputError("no such directory", shown)
    info = mount_at(mountpoint)
    if info is None:
        raise InvalidInputError("not a mount point", shown)
    composefs = info.fstype == "overlay" and info.source == "composefs"  # erofsgen mount --objects
    if info.fstype != "erofs" and not composefs:
        raise InvalidInputError(f"not an EROFS mount ({info.fstype} is mounted there)", shown)
    if _libc.umount2(os.fsencode(info.mountpoint), 0) != 0:
        code = ctypes.get_errno()
        hint = " (files or directories in it are in use)" if code == errno.EBUSY else ""
        raise MountError(f"{shown}: cannot unmount: {os.strerror(code)}{hint}", code)


# -- file-backed, through the new mount API ---------------------------------------------------


def syscall(number: int, *args: object) -> int:
    """A raw system call (the new mount API has no libc wrappers here); OSError on failure."""
    result = int(_libc.syscall(ctypes.c_long(number), *args))
    if result < 0:
        code = ctypes.get_errno()
        raise OSError(code, os.strerror(code))
    return result


def fs_open(fstype: bytes) -> int:
    """A new file system context (fsopen) of `fstype`."""
    return syscall(SYS_FSOPEN, fstype, ctypes.c_uint(FSOPEN_CLOEXEC))


def fs_config(fs_fd: int, key: bytes | None, value: bytes | None, cmd: int = FSCONFIG_SET_STRING) -> None:
    """One fsconfig call on the context `fs_fd`."""
    syscall(SYS_FSCONFIG, ctypes.c_int(fs_fd), ctypes.c_uint(cmd), key, value, ctypes.c_int(0))


def fs_mount_readonly(fs_fd: int) -> int:
    """The created context as a detached read-only mount (fsmount); close it to drop it."""
    return syscall(
        SYS_FSMOUNT, ctypes.c_int(fs_fd), ctypes.c_uint(FSMOUNT_CLOEXEC), ctypes.c_uint(MOUNT_ATTR_RDONLY)
    )


def attach_mount(mount_fd: int, mountpoint: PathLike) -> None:
    """Attach the detached mount `mount_fd` at `mountpoint` (move_mount)."""
    syscall(
        SYS_MOVE_MOUNT,
        ctypes.c_int(mount_fd),
        b"",
        ctypes.c_int(AT_FDCWD),
        os.fsencode(mountpoint),
        ctypes.c_uint(MOVE_MOUNT_F_EMPTY_PATH),
    )


def _fs_messages(fs_fd: int) -> list[str]:
    """The messages the kernel logged into an fs context ("e erofs: ..."), oldest first."""
    messages: list[str] = []
    while True:
        try:
            raw = os.read(fs_fd, 1024)
        except OSError:
            return messages  # ENODATA: no more
        messages.append(raw.decode("utf-8", "replace").rstrip("\n"))


def _fd_path(fd: int) -> str:
    return f"/proc/self/fd/{fd}"


def _mount_file_backed(
    image: PathLike, mountpoint: PathLike, devices: Sequence[PathLike], log: KernelLog
) -> None:
    with contextlib.ExitStack() as held:
        fds = [_open_readonly(path) for path in (image, *devices)]
        for fd in fds:
            held.callback(os.close, fd)
        source = os.fsencode(os.path.abspath(image))
        if len(source) > FSCONFIG_VALUE_MAX:
            source = os.fsencode(_fd_path(fds[0]))
        try:
            fs_fd = fs_open(b"erofs")
        except OSError as exc:
            raise MountError(f"cannot mount EROFS: fsopen: {exc.strerror}", exc.errno) from exc
        held.callback(os.close, fs_fd)
        try:
            _configure(fs_fd, source, [os.fsencode(_fd_path(fd)) for fd in fds[1:]])
            mount_fd = fs_mount_readonly(fs_fd)
        except OSError as exc:
            messages = _fs_messages(fs_fd) + log.erofs_lines()
            raise _mount_error(image, mountpoint, exc, messages) from exc
        held.callback(os.close, mount_fd)  # closing a mount never attached drops it
        try:
            attach_mount(mount_fd, mountpoint)
        except OSError as exc:
            raise _mount_error(image, mountpoint, exc, log.erofs_lines()) from exc


def _configure(fs_fd: int, source: bytes, devices: list[bytes]) -> None:
    fs_config(fs_fd, b"ro", None, FSCONFIG_SET_FLAG)
    fs_config(fs_fd, b"source", source)
    for device in devices:
        fs_config(fs_fd, b"device", device)
    fs_config(fs_fd, None, None, FSCONFIG_CMD_CREATE)


def _open_readonly(path: PathLike) -> int:
    try:
        return os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    except OSError as exc:
        raise InvalidInputError(f"cannot open: {exc.strerror}", escape_name(os.fspath(path))) from exc


def _stat(path: PathLike) -> os.stat_result:
    try:
        return os.stat(path)
    except OSError as exc:
        raise InvalidInputError(f"cannot open: {exc.strerror}", escape_name(os.fspath(path))) from exc


def _mount_error(image: PathLike, mountpoint: PathLike, exc: OSError, messages: list[str]) -> MountError:
    # fs context lines start with "e ", "w " or "i " (error, warning, info).
    said = [m[2:] if m[:2] in ("e ", "w ", "i ") else m for m in messages]
    detail = f" (kernel: {'; '.join(said)})" if said else " (the kernel log, dmesg, may say why)"
    text = f"cannot mount {escape_name(os.fspath(image))} on {escape_name(os.fspath(mountpoint))}"
    return MountError(f"{text}: {exc.strerror}{detail}", exc.errno, said)


# -- through loop devices and mount(2) --------------------------------------------------------


def _mount_with_loops(
    image: PathLike, mountpoint: PathLike, devices: Sequence[PathLike], log: KernelLog
) -> None:
    with contextlib.ExitStack() as held:
        paths = []
        for path in (image, *devices):
            if stat.S_ISBLK(_stat(path).st_mode):
                paths.append(os.fspath(path))
            else:
                loop: LoopDevice = held.enter_context(attach_loop(path))
                paths.append(loop.path)
        options = os.fsencode(",".join(f"device={p}" for p in paths[1:]))
        if len(options) > MOUNT_DATA_MAX:
            raise MountError(
                f"{len(devices)} devices need {len(options)} bytes of mount options, more than "
                f"mount(2) takes ({MOUNT_DATA_MAX}); this kernel cannot mount them from files",
                errno.E2BIG,
            )
        if _libc.mount(
            os.fsencode(paths[0]), os.fsencode(mountpoint), b"erofs", ctypes.c_ulong(MS_RDONLY), options
        ):
            code = ctypes.get_errno()
            raise _mount_error(image, mountpoint, OSError(code, os.strerror(code)), log.erofs_lines())
        # Leaving the block closes the loop devices: the mount now holds them alone.
