"""Several training processes on one machine (`--gpus 0,1`, `--gpus cpu,cpu`).

`oaecmlr run` spawns one worker per `--gpus` entry (each runs `train_process`) and supervises
them: it relays rank 0's events to the console, and when a worker dies it stops the others at once
and ends the run with a failure event naming the rank. Under torchrun, torchrun supervises the
workers instead (`oaecmlr.engine.launch.run_under_torchrun`).
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
from oaecmlr.engine.process import train_process
from oaecmlr.engine.session import Listener
from oaecmlr.errors import RunFailed
from oaecmlr.store.events import EventTail, EventWriter, read_events
from oaecmlr.store.runs import RunDir, load_run_config
from oaecmlr.store.schema import Failure

GRACE_S = 5.0  # how long the others may take to exit on their own after a worker died


def run_workers(run: RunDir, devices: list[str], resume: bool, listener: Listener | None) -> None:
    """Spawn one worker per device, relay events, and fail the run cleanly if any worker dies."""
    world = len(devices)
    tail = EventTail(run.events)
    tail.read_new()  # only relay what this launch writes
    context = mp.get_context("spawn")
    port = free_port()
    workers = [context.Process(target=_spawned_worker, args=(rank, world, str(run.path), devices, resume, port))
               for rank in range(world)]
    for worker in workers:
        worker.start()
    run.write_status("starting", supervisor=os.getpid(), workers=[w.pid for w in workers], host=socket.gethostname())
    signals: list[int] = []

    def forward(signum, _frame):
        # Ctrl-C reaches every worker from the terminal; a SIGTERM to this process goes to rank 0,
        # which decides, and the others follow its stop. A second one stops rank 0 at once.
        signals.append(signum)
        if signum == signal.SIGTERM and workers[0].is_alive():
            os.kill(workers[0].pid, signal.SIGTERM)

    previous = {sig: signal.signal(sig, forward) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        dead = _watch(workers, tail, listener, lambda: len(signals) >= 2)
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    for event in tail.read_new():
        if listener:
            listener(event)
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
    else:
        reason = f"worker rank {rank} {_describe(code)}; stopped all {world} workers"
        writer = EventWriter(run.events)
        writer.write(Failure(error=reason, rank=rank))
        writer.close()
    run.write_status("failed", error=reason)
    raise RunFailed(reason)


def _spawned_worker(rank: int, world: int, run_path: str, devices: list[str], resume: bool, port: int) -> None:
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


def _watch(workers, tail: EventTail, listener: Listener | None, stop_now) -> tuple[int, int] | str | None:
    """Relay events until all workers exit; return (rank, exit code) of the first that failed, or
    "stopped at once" when rank 0 ended after a second stop signal."""
    while True:
        for event in tail.read_new():
            if listener:
                listener(event)
        codes = [w.exitcode for w in workers]
        if stop_now() and codes[0] is not None:
            return "stopped at once"
        failed = [(rank, code) for rank, code in enumerate(codes) if code not in (None, 0)]
        if failed:  # a killed worker is the cause rather than a peer that failed because of it
            return min(failed, key=lambda rc: (rc[1] > 0, rc[0]))
        if all(code == 0 for code in codes):
            return None
        time.sleep(0.2)


def _stop_all(workers) -> None:
    deadline = time.time() + GRACE_S
    while time.time() < deadline and any(w.is_alive() for w in workers):
        time.sleep(0.1)
    for worker in workers:
        if worker.is_alive():
            worker.kill()
    for worker in workers:
        worker.join(timeout=10)


def _describe(code: int) -> str:
    if code < 0:
        try:
            return f"was killed by {signal.Signals(-code).name}"
        except ValueError:
            return f"was killed by signal {-code}"
    return f"exited with code {code}"
