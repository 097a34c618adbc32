"""Children that must not outlive their parent: the workers of `--gpus cpu,cpu` and a sweep's runs.

On Linux, prctl(PR_SET_PDEATHSIG) has the kernel send the signal when the parent dies, even by
SIGKILL; elsewhere a daemon thread polls the parent pid once a second. The signal is SIGTERM,
which a run already handles as a graceful stop with a checkpoint; `parent_died` lets that handler
say why it came, and tell the kernel's repeats (one per thread of this process, and again as each
thread of the parent exits) from a second stop.
"""

from __future__ import annotations

import ctypes
import os
import signal
import sys
import threading
import time
from pathlib import Path

PR_SET_PDEATHSIG = 1
POLL_S = 1.0
_watched: int | None = None


def die_with_parent(parent_pid: int, sig: int = signal.SIGTERM) -> None:
    """Receive `sig` when process `parent_pid` (which must be this process's parent) dies."""
    global _watched
    _watched = parent_pid
    if not _kernel_watch(sig):
        threading.Thread(target=_poll, args=(parent_pid, sig), name="parent-watch", daemon=True).start()
    if os.getppid() != parent_pid:  # it died before the watch began
        os.kill(os.getpid(), sig)


def parent_died() -> int | None:
    """The pid of the watched parent once it has died or is dying, else None. The kernel signals
    when the parent's thread that started this process exits: with other threads of the parent still
    exiting, this process is first handed to one of them (getppid() is unchanged), so on Linux the
    parent's own state says it too (Z: its main thread is gone, X or no entry: it is gone)."""
    if _watched is None:
        return None
    if os.getppid() != _watched:
        return _watched
    try:
        state = Path(f"/proc/{_watched}/stat").read_text().rpartition(")")[2].split()[0]
    except OSError:
        return _watched if Path("/proc/self/stat").exists() else None
    return _watched if state in ("Z", "X") else None


def _kernel_watch(sig: int) -> bool:
    if not sys.platform.startswith("linux"):
        return False
    try:
        return ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, int(sig), 0, 0, 0) == 0
    except (OSError, AttributeError):
        return False


def _poll(parent_pid: int, sig: int) -> None:
    while os.getppid() == parent_pid:
        time.sleep(POLL_S)
    os.kill(os.getpid(), sig)
