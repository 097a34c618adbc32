"""One training process, however it was started: the single process of `oaecmlr run`, a worker
spawned by `--gpus 0,1`, or a worker started by torchrun. Rank 0 owns the run folder: events,
log, status, checkpoints; the other ranks compute and follow rank 0's decisions (stops, failures).
"""

from __future__ import annotations

import os
import signal
import traceback

import torch

from oaecmlr.config import Config
from oaecmlr.engine.distributed import SINGLE, Dist
from oaecmlr.engine.loop import Loop
from oaecmlr.engine.placement import place_images
from oaecmlr.engine.rundata import RunData, load_run_data
from oaecmlr.engine.session import Listener, RunSession, StopRequested
from oaecmlr.engine.supervised import SupervisedLoop, training_classes
from oaecmlr.engine.usl import UnsupervisedLoop
from oaecmlr.errors import OaecmlrError, RunFailed
from oaecmlr.store.runs import RunDir
from oaecmlr.store.schema import Failure, Loading


def train_process(run: RunDir, config: Config, dist: Dist, device: torch.device, resume: bool,
                  listener: Listener | None = None) -> dict | None:
    """Train (or resume) `run` in this process; returns the best evaluation, None after a stop.

    Failures: rank 0 writes the failure event and status and raises RunFailed with the one-line
    reason (an unexpected error's traceback goes to log.txt); other ranks re-raise what they hit.
    """
    session = RunSession(run, listener) if dist.is_main else None
    if session:
        session.install_signal_handlers()
        session.set_status("running", world_size=dist.world_size)
    else:  # SIGINT/SIGTERM reach every worker; rank 0 decides, the others follow its stop
        signal.signal(signal.SIGINT, signal.SIG_IGN)
    if config.run.threads:
        torch.set_num_threads(config.run.threads)
    elif device.type == "cpu" and dist.world_size > 1:
        torch.set_num_threads(max(1, (os.cpu_count() or 1) // dist.world_size))
    try:
        # Rank 0 decodes and caches the images first; the others then read its cache.
        data = load_run_data(config.data, decoding_progress(session)) if dist.is_main else None
        dist.barrier()
        data = place_images(data or load_run_data(config.data), device, config.data.image_cache,
                            config.data.device_reserve_gb)
        return build_loop(config, run, data, device, session, dist).run_loop(resume)
    except StopRequested:
        return None
    except Exception as exc:
        if session:
            raise record_failure(session, exc) from None
        raise
    finally:
        if session:
            session.close()


def build_loop(config: Config, run: RunDir, data: RunData, device: torch.device, session: RunSession | None,
               dist: Dist = SINGLE) -> Loop:
    if config.run.kind == "supervised":
        classes = int(training_classes(data.train.pids).max()) + 1
        return SupervisedLoop(config, run, data, device, session, dist, num_classes=classes)
    return UnsupervisedLoop(config, run, data, device, session, dist)


def decoding_progress(session: RunSession | None):
    """Image decoding shown on the console (not written to events: `start` stays the first event)."""
    if session is None:
        return None
    session.log.info("loading data")
    last: dict[str, int] = {}

    def report(split: str, done: int, total: int) -> None:
        step = max(1, total // 20)
        if done == total or done - last.get(split, -step) >= step:
            last[split] = done
            session.show(Loading(split=split, done=done, total=total))

    return report


def record_failure(session: RunSession, exc: Exception) -> RunFailed:
    """Write the failure event (unless the loop already did) and return the error for the user."""
    if isinstance(exc, RunFailed):
        return exc
    if isinstance(exc, OaecmlrError):
        message = str(exc)
    else:  # unexpected: keep the traceback in the log, one line for the user
        session.log.error("unexpected error\n%s", traceback.format_exc())
        message = f"{type(exc).__name__}: {exc} (traceback in {session.run.log})"
    session.emit(Failure(error=message))
    session.set_status("failed", error=message)
    return RunFailed(message)
