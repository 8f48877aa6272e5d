"""Loop-mounting EROFS images with the running kernel, the reference reader."""

from __future__ import annotations

import contextlib
import functools
import os
import platform
import re
import shutil
import subprocess
import tempfile
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Protocol

_TIMEOUT = 120  # seconds for any one losetup/mount/umount call


class MountImage(Protocol):
    """The signature of `mounted_image`, as handed out by the `kernel_mount` fixture."""

    def __call__(
        self, image: Path, devices: Sequence[Path] = (), *, options: str = ""
    ) -> contextlib.AbstractContextManager[Path]: ...


class MountError(RuntimeError):
    """Attaching or mounting an image failed; the message carries the kernel's log lines."""


class CleanupError(RuntimeError):
    """Something could not be unmounted or detached."""


def kernel_release() -> str:
    return platform.release()


def _erofs_available() -> bool:
    try:
        if "erofs" in Path("/proc/filesystems").read_text().split():
            return True
    except OSError:
        return False
    # Not registered yet: mount autoloads the module if modprobe can find it.
    modprobe = shutil.which("modprobe")
    if modprobe is None:
        return False
    probe = subprocess.run(
        [modprobe, "-n", "-q", "erofs"], capture_output=True, timeout=_TIMEOUT, check=False
    )
    return probe.returncode == 0


@functools.cache
def mount_unavailable_reason() -> str | None:
    """Why EROFS images cannot be loop-mounted here, or None if they can."""
    if os.geteuid() != 0:
        return "kernel mounts need root"
    missing = [tool for tool in ("losetup", "mount", "umount") if shutil.which(tool) is None]
    if missing:
        return f"missing tools: {', '.join(missing)}"
    if not Path("/dev/loop-control").exists():
        return "no /dev/loop-control (loop driver absent)"
    if not _erofs_available():
        return f"kernel {kernel_release()} has no erofs filesystem (not built in, not loadable)"
    return None


def can_mount_erofs() -> bool:
    return mount_unavailable_reason() is None


def _run(*cmd: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        cmd, capture_output=True, text=True, errors="replace", timeout=_TIMEOUT, check=False
    )


def _kernel_log_tail(lines: int = 8) -> str:
    # Reading the log is best effort: it explains *why* the kernel refused an image.
    log = _run("dmesg")
    if log.returncode != 0:
        return "(kernel log unavailable)"
    hits = [line for line in log.stdout.splitlines() if "erofs" in line.lower()]
    return "\n".join(hits[-lines:]) or "(no erofs lines in the kernel log)"


def attach_loop(path: Path) -> str:
    """Attach `path` read-only to a free loop device and return the device path."""
    res = _run("losetup", "-f", "--show", "-r", str(path))
    if res.returncode != 0:
        raise MountError(f"losetup -f --show -r {path} failed: {res.stderr.strip()}")
    return res.stdout.strip()


def loop_devices_of(path: Path) -> list[str]:
    """Loop devices currently backed by `path` (from `losetup -j`)."""
    res = _run("losetup", "-j", str(path))
    return [line.split(":", 1)[0] for line in res.stdout.splitlines() if line.strip()]


def _unescape_mountinfo(field: str) -> str:
    return re.sub(r"\\([0-7]{3})", lambda m: chr(int(m.group(1), 8)), field)


def is_mounted(mountpoint: Path) -> bool:
    target = os.path.realpath(mountpoint)
    with open("/proc/self/mountinfo") as f:
        return any(_unescape_mountinfo(line.split()[4]) == target for line in f)


def _mount(loops: Sequence[str], mountpoint: Path, options: str) -> None:
    opts = ",".join(["ro", *(f"device={dev}" for dev in loops[1:]), *([options] if options else [])])
    res = _run("mount", "-t", "erofs", "-o", opts, loops[0], str(mountpoint))
    if res.returncode != 0:
        raise MountError(
            f"mount -t erofs -o {opts} {loops[0]} {mountpoint} failed: {res.stderr.strip()}\n"
            f"kernel log:\n{_kernel_log_tail()}"
        )


def _unmount(mountpoint: Path) -> str | None:
    # A reader that just finished may hold the mount for a moment: retry before giving up.
    err = ""
    for delay in (0.0, 0.1, 0.5, 1.0, 2.0):
        time.sleep(delay)
        res = _run("umount", str(mountpoint))
        if res.returncode == 0 or not is_mounted(mountpoint):
            return None
        err = res.stderr.strip()
    _run("umount", "-l", str(mountpoint))  # detach it from the tree at least
    return f"umount {mountpoint}: {err} (lazily unmounted)"


def _detach(dev: str) -> str | None:
    err = ""
    for delay in (0.0, 0.1, 0.5, 1.0):
        time.sleep(delay)
        res = _run("losetup", "-d", dev)
        if res.returncode == 0:
            return None
        err = res.stderr.strip()
    return f"losetup -d {dev}: {err}"


def _cleanup(mountpoint: Path, loops: Sequence[str]) -> None:
    errors: list[str] = []
    if is_mounted(mountpoint):
        errors.append(_unmount(mountpoint) or "")
    errors += [_detach(dev) or "" for dev in loops]
    with contextlib.suppress(OSError):
        mountpoint.rmdir()
    errors = [e for e in errors if e]
    if errors:
        raise CleanupError("; ".join(errors))


@contextlib.contextmanager
def mounted_image(image: Path, devices: Sequence[Path] = (), *, options: str = "") -> Iterator[Path]:
    """Mount `image` (plus extra `devices`, in order) read-only as EROFS; yield the mountpoint.

    Every loop device attached is detached again and the mount undone, whatever happens in
    between: a failed attach, a refused mount or an exception in the body.
    """
    loops: list[str] = []
    mountpoint = Path(tempfile.mkdtemp(prefix="erofsgen-mnt-"))
    try:
        for path in (image, *devices):
            loops.append(attach_loop(path))
        _mount(loops, mountpoint, options)
        yield mountpoint
    finally:
        _cleanup(mountpoint, loops)
