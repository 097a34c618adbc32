"""CPU and resident memory of a run's processes through psutil (`pip install psutil`, in the `tui`
extra), when it is there. No Textual here: the app's worker thread calls `ProcessProbe.line` every
few seconds for the watched run and posts the line.

The processes are named by the run's status.json: `pid` (the training process, rank 0 with
several workers), and with several workers the supervisor's `supervisor` and `workers`; the line
sums them all. They are measured only on this host, while the run is running and its processes are
alive (as `oaecmlr.store.runs.live_state` decides liveness: by pid).
"""

from __future__ import annotations

import socket
import time
from collections.abc import Callable

MISSING = "CPU/RAM: install psutil"


def run_pids(status: dict) -> tuple[int, ...]:
    """The pids status.json names for a run, each once, in order."""
    pids = [status.get("pid"), status.get("supervisor")]
    workers = status.get("workers")
    if isinstance(workers, list):
        pids += workers
    return tuple(dict.fromkeys(p for p in pids if isinstance(p, int) and not isinstance(p, bool) and p > 0))


class ProcessProbe:
    """CPU % (over the time since the previous call, as `top`: 100 % is one core) and resident
    memory of a run's processes. Keeps each process's CPU time between calls; never raises."""

    def __init__(self, clock: Callable[[], float] = time.monotonic, host: str | None = None):
        self.clock = clock
        self.host = host or socket.gethostname()
        self._last: dict[int, tuple[float, float, float]] = {}  # pid -> (create time, CPU seconds, clock)

    def line(self, status: dict, state: str) -> str:
        try:
            import psutil
        except ImportError:
            return MISSING
        try:
            return self._line(psutil, status, state)
        except Exception as exc:  # psutil raises its own errors (no /proc, no permission)
            return f"CPU/RAM: not available ({type(exc).__name__}: {exc})"

    __call__ = line

    def _line(self, psutil, status: dict, state: str) -> str:
        if state not in ("running", "starting"):
            self._last.clear()
            return f"CPU/RAM: run {state}"
        host = status.get("host")
        if host != self.host:
            return f"CPU/RAM: the run is on {host}" if host else "CPU/RAM: no host in status.json"
        pids = run_pids(status)
        if not pids:
            return "CPU/RAM: no pid in status.json"
        now = self.clock()
        cpu, rss, alive, measured = 0.0, 0, 0, 0
        seen = {}
        for pid in pids:
            try:
                process = psutil.Process(pid)
                with process.oneshot():
                    created = process.create_time()  # with the pid, names the process across calls
                    if process.status() == psutil.STATUS_ZOMBIE:
                        continue
                    times = process.cpu_times()
                    memory = process.memory_info()
            except (psutil.NoSuchProcess, psutil.AccessDenied):
                continue
            seconds = times.user + times.system
            alive += 1
            rss += memory.rss
            previous = self._last.get(pid)
            if previous is not None and previous[0] == created and now > previous[2]:
                cpu += 100 * max(0.0, seconds - previous[1]) / (now - previous[2])
                measured += 1
            seen[pid] = (created, seconds, now)
        self._last = seen
        if not alive:
            return "CPU/RAM: process gone"
        count = f" ({alive} processes)" if alive > 1 else ""
        cpu_text = f"{cpu:.0f}%" if measured else "-"
        return f"run CPU {cpu_text}  RAM {rss / 2**30:.2f} GiB{count}"
