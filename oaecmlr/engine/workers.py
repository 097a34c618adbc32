"""Several training processes on one machine (`--gpus 0,1`, `--gpus cpu,cpu`) or many (torchrun).

`oaecmlr run` spawns one worker per `--gpus` entry and supervises them: it relays rank 0's events
to the console, and when a worker dies it stops the others at once and ends the run with a
failure event naming the rank. Under torchrun the workers read the standard environment
(RANK, WORLD_SIZE, LOCAL_RANK, MASTER_ADDR, MASTER_PORT) and torchrun supervises them.
NCCL joins CUDA workers, gloo CPU workers; a collective that waits longer than
`train.dist_timeout` seconds fails its worker, so a hung peer cannot hang the run.
"""

from __future__ import annotations

import os
import signal
import socket
import sys
import time
import traceback
from datetime import timedelta
from pathlib import Path

import torch
import torch.distributed as tdist
import torch.multiprocessing as mp

from oaecmlr.engine.config import Config
from oaecmlr.engine.distributed import Dist
from oaecmlr.engine.session import Listener, RunFailed, RunSession, StopRequested
from oaecmlr.store.events import EventTail, EventWriter
from oaecmlr.store.runs import RunDir

GRACE_S = 5.0  # how long the others may take to exit on their own after a worker died


def torchrun_env() -> tuple[int, int, int] | None:
    """(rank, world size, local rank) when started by torchrun with more than one worker."""
    if "RANK" in os.environ and int(os.environ.get("WORLD_SIZE", "1")) > 1:
        return int(os.environ["RANK"]), int(os.environ["WORLD_SIZE"]), int(os.environ.get("LOCAL_RANK", "0"))
    return None


def init_group(device: torch.device, rank: int, world: int, timeout_s: float) -> None:
    backend = "nccl" if device.type == "cuda" else "gloo"
    if device.type == "cuda":
        torch.cuda.set_device(device)
    tdist.init_process_group(backend, rank=rank, world_size=world, timeout=timedelta(seconds=timeout_s),
                             device_id=device if device.type == "cuda" else None)


def train_worker(run: RunDir, config: Config, dist: Dist, device: torch.device, resume: bool,
                 listener: Listener | None = None) -> dict | None:
    """One worker's run; rank 0 owns the run folder (events, checkpoints, status)."""
    from oaecmlr.engine.launch import build_loop, loading_progress, record_failure
    from oaecmlr.engine.placement import place_images
    from oaecmlr.engine.rundata import load_run_data

    session = RunSession(run, listener) if dist.is_main else None
    if session:
        session.install_signal_handlers()
        session.set_status("running", world_size=dist.world_size)
    else:  # SIGINT/SIGTERM reach every worker; rank 0 decides, the others follow its stop
        signal.signal(signal.SIGINT, signal.SIG_IGN)
    if device.type == "cpu" and not config.run.threads:
        torch.set_num_threads(max(1, (os.cpu_count() or 1) // dist.world_size))
    try:
        # Rank 0 decodes and caches the images first; the others then read its cache.
        data = load_run_data(config.data, loading_progress(session)) if dist.is_main else None
        dist.barrier()
        data = place_images(data or load_run_data(config.data), device, config.data.image_cache,
                            config.data.device_reserve_gb)
        return build_loop(config, run, data, device, session, dist).run_loop(resume)
    except StopRequested:
        return None
    except Exception as exc:
        if session:
            record_failure(session, exc)
        raise
    finally:
        if session:
            session.close()


def _spawned_worker(rank: int, world: int, run_path: str, devices: list[str], resume: bool, port: int) -> None:
    from oaecmlr.engine.launch import load_run_config

    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    run = RunDir(Path(run_path))
    config = load_run_config(run)
    device = torch.device(devices[rank])
    try:
        init_group(device, rank, world, config.train.dist_timeout)
        train_worker(run, config, Dist(rank, world, rank), device, resume)
    except RunFailed:
        sys.exit(1)
    except Exception:  # rank 0 recorded it; keep every rank's traceback beside the log, not on the terminal
        with open(run.path / f"worker{rank}.err", "a") as f:
            f.write(traceback.format_exc())
        sys.exit(1)
    finally:
        if tdist.is_initialized():
            tdist.destroy_process_group()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def run_workers(run: RunDir, config: Config, devices: list[str], resume: bool, listener: Listener | None) -> None:
    """Spawn one worker per device, relay events, and fail the run cleanly if any worker dies."""
    world = len(devices)
    tail = EventTail(run.events)
    tail.read_new()  # only relay what this launch writes
    context = mp.get_context("spawn")
    port = _free_port()
    workers = [context.Process(target=_spawned_worker, args=(rank, world, str(run.path), devices, resume, port))
               for rank in range(world)]
    for worker in workers:
        worker.start()
    run.write_status("starting", supervisor=os.getpid(), workers=[w.pid for w in workers], host=socket.gethostname())
    previous = signal.signal(signal.SIGINT, signal.SIG_IGN)  # the workers get Ctrl-C and stop together
    try:
        dead = _watch(workers, tail, listener)
    finally:
        signal.signal(signal.SIGINT, previous)
    for event in tail.read_new():
        if listener:
            listener(event)
    if dead is None:
        return None
    rank, code = dead
    _stop_all(workers)
    last = _last_event(run)
    if rank == 0 and code > 0 and last and last.get("event") == "failure":
        reason = last.get("error")  # rank 0 failed for a reason of its own and said so
    else:
        reason = f"worker rank {rank} {_describe(code)}; stopped all {world} workers"
        writer = EventWriter(run.events)
        writer.write("failure", error=reason, rank=rank)
        writer.close()
    run.write_status("failed", error=reason)
    raise RunFailed(reason)


def _watch(workers, tail: EventTail, listener: Listener | None) -> tuple[int, int] | None:
    """Relay events until all workers exit; return (rank, exit code) of the first that failed."""
    while True:
        for event in tail.read_new():
            if listener:
                listener(event)
        codes = [w.exitcode for w in workers]
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


def _last_event(run: RunDir) -> dict | None:
    from oaecmlr.store.events import read_events

    events = read_events(run.events, warn=lambda message: None)
    return events[-1] if events else None
