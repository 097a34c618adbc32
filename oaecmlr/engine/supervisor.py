"""The supervisor of several training processes on one machine (`--gpus 0,1`, `--gpus cpu,cpu`).

`oaecmlr run` spawns one worker per `--gpus` entry (each runs `train_process`) and supervises
them: it relays rank 0's events to the console, and when a worker dies it stops the others at once
and ends the run with a failure event naming the rank. The workers die with the supervisor (a
SIGTERM on its death: rank 0 stops gracefully, the others follow), and a lost console (SIGHUP, a
closed pipe) never ends the run. Under torchrun, torchrun supervises the workers instead
(`oaecmlr.engine.launch.run_under_torchrun`).
"""

from __future__ import annotations

import os
import signal
import socket
import sys
import time
import traceback
from pathlib import Path

import torch
import torch.multiprocessing as mp

from oaecmlr.engine.distributed import Dist, free_port, init_group, leave_group
from oaecmlr.engine.parent_death import die_with_parent, parent_died
from oaecmlr.engine.recorder import Listener
from oaecmlr.engine.train_process import train_process
from oaecmlr.errors import RunFailed
from oaecmlr.store.events import EventTail, read_events
from oaecmlr.store.processes import detach_console, exit_text, identity
from oaecmlr.store.runs import RunDir, load_run_config, record_death
from oaecmlr.store.schema import Event, Failure, Stopping

GRACE_S = 5.0  # how long the others may take to exit on their own after a worker died


class Relay:
    """Rank 0's events on the supervisor's console, until the console is lost: then the supervisor's
    output goes to log.txt, and the run's CONSOLE_LOST file tells rank 0, which writes the `warning`
    event at its next safe point. A file, not a signal: rank 0 may ignore SIGHUP (under nohup) or
    not have its handlers yet."""

    def __init__(self, run: RunDir, listener: Listener | None):
        self.run, self.listener = run, listener

    def show(self, event: Event) -> None:
        listener = self.listener
        if listener is not None:
            try:
                listener(event)
            except OSError as exc:
                self.lose(exc.strerror or type(exc).__name__)

    def lose(self, why: str) -> None:
        """Called from a signal handler too."""
        if self.listener is None:
            return
        self.listener = None
        for step in (lambda: detach_console(self.run.log), lambda: self.run.note_console_lost(why)):
            try:
                step()
            except OSError:  # a full disk: training goes on without the note
                pass


def run_workers(run: RunDir, devices: list[str], resume: bool, listener: Listener | None) -> None:
    """Spawn one worker per device, relay events, and fail the run cleanly if any worker dies."""
    world = len(devices)
    tail = EventTail(run.events)
    tail.read_new()  # only relay what this launch writes
    run.console_lost.unlink(missing_ok=True)  # an earlier launch's
    context = mp.get_context("spawn")
    port = free_port()
    workers = [context.Process(target=_spawned_worker,
                               args=(rank, world, str(run.path), devices, resume, port, os.getpid()))
               for rank in range(world)]
    for worker in workers:
        worker.start()
    run.write_status("starting", supervisor=os.getpid(), workers=[w.pid for w in workers], host=socket.gethostname(),
                     pid=os.getpid(), process=identity(os.getpid()))
    relay = Relay(run, listener)
    signals: list[int] = []
    orphaned: list[int] = []

    def forward(signum, _frame):
        # Ctrl-C reaches every worker from the terminal; a SIGTERM to this process goes to rank 0,
        # which decides, and the others follow its stop. A second one stops rank 0 at once. When
        # this process's own parent died (a sweep), the kernel repeats the SIGTERM once per thread.
        if parent_died() is not None:
            if orphaned:
                return
            orphaned.append(signum)
        signals.append(signum)
        if len(signals) == 1:
            relay.show(Stopping(signal=signal.Signals(signum).name))
        if signum == signal.SIGTERM and workers[0].is_alive():
            os.kill(workers[0].pid, signal.SIGTERM)

    previous = {sig: signal.signal(sig, forward) for sig in (signal.SIGINT, signal.SIGTERM)}
    if signal.getsignal(signal.SIGHUP) is not signal.SIG_IGN:
        previous[signal.SIGHUP] = signal.signal(signal.SIGHUP, lambda _signum, _frame: relay.lose("SIGHUP"))
    try:
        dead = _watch(workers, tail, relay, lambda: len(signals) >= 2)
    except BaseException:  # the supervisor itself fails: rank 0 stops gracefully, the others follow
        if workers[0].is_alive():
            os.kill(workers[0].pid, signal.SIGTERM)
        _stop_all(workers, grace_s=60.0)
        raise
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
        run.console_lost.unlink(missing_ok=True)  # lost after rank 0's last safe point: nobody reads it
    for event in tail.read_new():
        relay.show(event)
    if dead is None:
        return
    if dead == "stopped at once":  # rank 0 wrote its stop; the others may wait in a collective: end them
        _stop_all(workers)
        return
    rank, code = dead
    _stop_all(workers)
    events = read_events(run.events, warn=lambda message: None)
    if rank == 0 and code > 0 and events and isinstance(events[-1], Failure):
        reason = events[-1].error  # rank 0 failed for a reason of its own and said so
        run.write_status("failed", error=reason)
    else:
        reason = f"worker rank {rank} {exit_text(code)}; stopped all {world} workers"
        record_death(run, reason, rank=rank)
    raise RunFailed(reason)


def _spawned_worker(rank: int, world: int, run_path: str, devices: list[str], resume: bool, port: int,
                    supervisor: int) -> None:
    die_with_parent(supervisor)
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    run = RunDir(Path(run_path))
    config = load_run_config(run)
    try:
        device = init_group(torch.device(devices[rank]), rank, world, config.train.dist_timeout)
        train_process(run, config, Dist(rank, world, rank, device=device), device, resume)
    except RunFailed:  # rank 0 wrote the failure event (and any traceback to log.txt)
        sys.exit(1)
    except Exception:  # keep every other rank's traceback beside the log, not on the terminal
        with open(run.path / f"worker{rank}.err", "a") as f:
            f.write(traceback.format_exc())
        sys.exit(1)
    finally:
        leave_group()


def _watch(workers, tail: EventTail, relay: Relay, stop_now) -> tuple[int, int] | str | None:
    """Relay events until all workers exit; return (rank, exit code) of the first that failed, or
    "stopped at once" when rank 0 ended after a second stop signal."""
    while True:
        for event in tail.read_new():
            relay.show(event)
        codes = [w.exitcode for w in workers]
        if stop_now() and codes[0] is not None:
            return "stopped at once"
        failed = [(rank, code) for rank, code in enumerate(codes) if code not in (None, 0)]
        if failed:  # a killed worker is the cause rather than a peer that failed because of it
            return min(failed, key=lambda rc: (rc[1] > 0, rc[0]))
        if all(code == 0 for code in codes):
            return None
        time.sleep(0.2)


def _stop_all(workers, grace_s: float = GRACE_S) -> None:
    deadline = time.time() + grace_s
    while time.time() < deadline and any(w.is_alive() for w in workers):
        time.sleep(0.1)
    for worker in workers:
        if worker.is_alive():
            worker.kill()
    for worker in workers:
        worker.join(timeout=10)
