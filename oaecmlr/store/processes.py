"""Which process is a run's own, and a console that can go away.

A pid alone names whatever process has it now: a recycled pid, or whatever a hostile status.json
says (-1 is every process, 0 the caller's own group). So a training process records its identity
in status.json (its start time and command line, `identity`), and a pid is signalled only when
`not_the_run_process` finds no reason against it: a valid pid of this host, the same start time
and command line, and the run's events.jsonl open in that process. Linux reads /proc; elsewhere
psutil (the `tui` extra) when installed; without either nothing is signalled and the STOP file
that the run polls does the job. Stdlib only.
"""

from __future__ import annotations

import os
import signal
import socket
from pathlib import Path
from typing import Any

PID_LIMIT = 2**22  # Linux's PID_MAX_LIMIT; other systems stay below it
PROC = Path("/proc")


def valid_pid(value: Any) -> int | None:
    """`value` when it can name one process (an int, not a bool, in 1..PID_LIMIT), else None."""
    if isinstance(value, int) and not isinstance(value, bool) and 0 < value <= PID_LIMIT:
        return value
    return None


def identity(pid: int) -> dict[str, Any] | None:
    """{"start": ..., "cmdline": [...]} of a live process of this host; None when it is gone or
    this system cannot say (no /proc, no psutil)."""
    if PROC.joinpath("self", "stat").exists():
        try:
            stat = PROC.joinpath(str(pid), "stat").read_text()
            raw = PROC.joinpath(str(pid), "cmdline").read_bytes()[:65536]
            boot = PROC.joinpath("sys", "kernel", "random", "boot_id").read_text().strip()
        except OSError:
            return None
        ticks = stat.rpartition(")")[2].split()[19]  # field 22, starttime: clock ticks after boot
        return {"start": f"{boot}/{ticks}", "cmdline": [a.decode(errors="replace") for a in raw.split(b"\0")[:-1]]}
    try:
        import psutil
    except ImportError:
        return None
    try:
        process = psutil.Process(pid)
        return {"start": f"psutil/{process.create_time()!r}", "cmdline": process.cmdline()}
    except psutil.Error:
        return None


def holds_open(pid: int, file: Path) -> bool:
    """Whether process `pid` has `file` open (False when that cannot be read: another user's)."""
    target = os.path.realpath(file)
    if PROC.joinpath("self", "fd").is_dir():
        try:
            fds = list(PROC.joinpath(str(pid), "fd").iterdir())
        except OSError:
            return False
        for fd in fds:
            try:
                if os.readlink(fd) == target:
                    return True
            except OSError:
                continue
        return False
    try:
        import psutil

        return any(os.path.realpath(f.path) == target for f in psutil.Process(pid).open_files())
    except (ImportError, Exception):  # psutil.Error, or an OS that hides open files
        return False


def not_the_run_process(status: dict[str, Any], events: Path) -> str | None:
    """None when the pid that status.json names is provably the run's own training process (the
    one that writes `events`); otherwise why it is not, or cannot be shown to be, one phrase."""
    raw, host = status.get("pid"), status.get("host")
    pid = valid_pid(raw)
    if pid is None:
        return f"status.json names pid {raw!r}, which is not a process id"
    if host != socket.gethostname():
        return f"it runs on host {host!r}, not this one"
    recorded = status.get("process")
    if not isinstance(recorded, dict):
        return "status.json does not record which process it is"
    now = identity(pid)
    if now is None:
        return f"pid {pid} is gone, or this system cannot tell which process it is"
    if now != recorded:
        return f"pid {pid} is another process now (its start time or command line differs)"
    if not holds_open(pid, events):
        return f"pid {pid} does not have the run's events.jsonl open"
    return None


def recycled(status: dict[str, Any], pid: int) -> bool:
    """Whether live pid `pid` is provably not the process status.json recorded (another process
    took its pid); False when nothing was recorded or this system cannot tell."""
    recorded = status.get("process")
    now = identity(pid) if isinstance(recorded, dict) else None
    return now is not None and now != recorded


def exit_text(code: int) -> str:
    """How a child process ended, from its exit code as Popen and multiprocessing give it (-N: signal N)."""
    if code < 0:
        try:
            return f"was killed by {signal.Signals(-code).name}"
        except ValueError:
            return f"was killed by signal {-code}"
    return f"exited with code {code}"


def detach_console(path: Path) -> None:
    """Point this process's stdout and stderr at `path` (appended), so that nothing it prints later
    fails on a closed pipe or a hung-up terminal. What Python still buffers for them follows."""
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        for target in (1, 2):  # the descriptors themselves: C libraries write there too
            os.dup2(fd, target)
    finally:
        os.close(fd)
