"""Run the real command line in a child process that stops at a known point, to signal it there.

Waiting for a side effect and hoping the child is still busy is a race a loaded machine loses.
Instead the child replaces one `os` function with a wrapper that, on its first call from the
main thread, reports on a pipe and sleeps; the parent waits for that report (bounded) and then
knows the command is in the middle of its work. The sleep is what the signal interrupts. Calls
from worker threads pass straight through: a worker stalled for minutes is not what a signal
meets in a real run, and the main thread's cleanup rightly waits for its workers to stop.
"""

from __future__ import annotations

import os
import select
import subprocess
import sys
from collections.abc import Callable, Sequence
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
READY_TIMEOUT = 120  # seconds; generous, the machine may be busy

_CHILD = """
import os, runpy, sys, threading, time
ready, name = int(sys.argv[1]), sys.argv[2]
del sys.argv[1:3]
real = getattr(os, name)
def paused(*args, **kwargs):
    if threading.current_thread() is not threading.main_thread():
        return real(*args, **kwargs)
    setattr(os, name, real)
    os.write(ready, b"!")
    os.close(ready)
    time.sleep(600)
    return real(*args, **kwargs)
setattr(os, name, paused)
runpy.run_module("erofsgen", run_name="__main__", alter_sys=True)
"""


class PausedCommand:
    """`python -m erofsgen ARGS` that pauses in the main thread's first call of `os.<pause_at>`."""

    def __init__(
        self,
        pause_at: str,
        args: Sequence[str],
        *,
        stdout: int | None = None,
        preexec_fn: Callable[[], object] | None = None,
    ) -> None:
        read_end, write_end = os.pipe()
        try:
            self.proc = subprocess.Popen(
                [sys.executable, "-c", _CHILD, str(write_end), pause_at, *args],
                cwd=REPO,
                pass_fds=(write_end,),
                stdout=stdout,
                stderr=subprocess.PIPE,
                preexec_fn=preexec_fn,
            )
        finally:
            os.close(write_end)
        self.ready = read_end

    def wait_paused(self) -> None:
        """Return once the child sits in the paused call; fail if it ends or never gets there."""
        try:
            readable, _, _ = select.select([self.ready], [], [], READY_TIMEOUT)
            assert readable, f"the child never reached the pause point in {READY_TIMEOUT} s"
            assert os.read(self.ready, 1) == b"!", "the child ended before the pause point"
        finally:
            os.close(self.ready)

    def finish(self) -> tuple[int, str]:
        """Exit status and stderr, killing the child if it does not end in time."""
        try:
            _, err = self.proc.communicate(timeout=READY_TIMEOUT)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.communicate()
            raise
        return self.proc.returncode, err.decode(errors="replace")


def open_temporary_files(pid: int, directory: Path) -> list[str]:
    """Files in `directory` that process `pid` holds open: named temporaries, and unnamed
    (O_TMPFILE) ones, which /proc shows as `DIRECTORY/#INODE (deleted)`."""
    found = []
    fds = Path(f"/proc/{pid}/fd")
    for fd in fds.iterdir():
        try:
            target = os.readlink(fd)
        except OSError:
            continue  # closed meanwhile
        if os.path.dirname(target) == str(directory):
            found.append(target)
    return found
