"""One training process, however it was started: the single process of `oaecmlr run`, a worker
spawned by `--gpus 0,1`, or a worker started by torchrun. Rank 0 owns the run folder: events,
log, status, checkpoints; the other ranks compute and follow rank 0's decisions (stops, failures).
"""

from __future__ import annotations

import errno
import os
import shutil
import signal
import traceback

import torch

from oaecmlr.config import Config
from oaecmlr.engine.devices import configure_kernels
from oaecmlr.engine.distributed import SINGLE, Dist
from oaecmlr.engine.loop import Loop
from oaecmlr.engine.parent_death import parent_died
from oaecmlr.engine.placement import place_images
from oaecmlr.engine.recorder import Listener, RunRecorder, resume_note
from oaecmlr.engine.rundata import RunData, load_run_data
from oaecmlr.engine.supervised import SupervisedLoop, training_classes
from oaecmlr.engine.usl import UnsupervisedLoop
from oaecmlr.errors import EndedBySignal, OaecmlrError, RunFailed, StopNow, StopRequested
from oaecmlr.store.metrics import Best
from oaecmlr.store.runs import RunDir
from oaecmlr.store.schema import Failure, Loading, Stopped


def train_process(run: RunDir, config: Config, dist: Dist, device: torch.device, resume: bool,
                  listener: Listener | None = None) -> Best | None:
    """Train (or resume) `run` in this process; returns the best evaluation, None after a stop.

    Failures: rank 0 writes the failure event and status and raises RunFailed with the one-line
    reason (an unexpected error's traceback goes to log.txt); other ranks re-raise what they hit.
    """
    recorder = RunRecorder(run, listener) if dist.is_main else None
    if recorder:
        recorder.install_signal_handlers()
        recorder.set_status("running", world_size=dist.world_size)
    else:  # signals reach every worker; rank 0 decides, the others follow its stop
        follow_rank_zero()
    if config.run.threads:
        torch.set_num_threads(config.run.threads)
    elif device.type == "cpu" and dist.world_size > 1:
        torch.set_num_threads(max(1, (os.cpu_count() or 1) // dist.world_size))
    configure_kernels(device, config.train.deterministic)
    loop = None
    try:
        data = place_images(startup_data(config, dist, recorder), device, config.data.image_cache,
                            config.data.device_reserve_gb)
        loop = build_loop(config, run, data, device, recorder, dist)
        return loop.run_loop(resume)
    except StopRequested:
        return None
    except StopNow as stop:
        if recorder:
            epoch = loop.epoch_in_progress if loop is not None and loop.epoch_in_progress else 0
            recorder.emit(Stopped(epoch=epoch, reason=f"stopped at once by a second {stop}; {resume_note(run)}"))
            recorder.set_stopped()
        return None
    except BaseException as exc:  # an error, SystemExit, a fatal signal: the run records how it ended
        if recorder:
            raise record_failure(recorder, exc) from None
        raise
    finally:
        if recorder:
            recorder.close()


def startup_data(config: Config, dist: Dist, recorder: RunRecorder | None) -> RunData:
    """The run's images: the first worker of each machine (local rank 0) decodes them and writes the
    disk cache, the others then read that cache. The others wait on `wait_at_startup`'s gloo group,
    whose timeout is hours, not `train.dist_timeout`: a first MSMT17 run decodes 126,441 JPEGs,
    which can take longer than that on few cores, and an NCCL barrier would abort the waiting ranks."""
    first = dist.local_rank == 0
    data = load_run_data(config.data, decoding_progress(recorder)) if first else None
    dist.wait_at_startup()
    return data if first else load_run_data(config.data)


def follow_rank_zero() -> None:
    """Signals on a worker other than rank 0: Ctrl-C and a lost terminal reach every worker, and rank
    0 decides for all. A SIGTERM sent when the supervisor died (PR_SET_PDEATHSIG) waits for rank 0's
    stop too; any other SIGTERM ends the worker as before."""
    def on_sigterm(signum, _frame):
        if parent_died() is None:
            signal.signal(signum, signal.SIG_DFL)
            os.kill(os.getpid(), signum)

    for sig, handler in ((signal.SIGINT, signal.SIG_IGN), (signal.SIGHUP, signal.SIG_IGN),
                         (signal.SIGTERM, on_sigterm)):
        try:
            signal.signal(sig, handler)
        except ValueError:  # not the main thread
            pass


def build_loop(config: Config, run: RunDir, data: RunData, device: torch.device, recorder: RunRecorder | None,
               dist: Dist = SINGLE) -> Loop:
    if config.run.kind == "supervised":
        classes = int(training_classes(data.train.pids).max()) + 1
        return SupervisedLoop(config, run, data, device, recorder, dist, num_classes=classes)
    return UnsupervisedLoop(config, run, data, device, recorder, dist)


def decoding_progress(recorder: RunRecorder | None):
    """Image decoding shown on the console (not written to events: `start` stays the first event)."""
    if recorder is None:
        return None
    recorder.log.info("loading data")
    last: dict[str, int] = {}

    def report(split: str, done: int, total: int) -> None:
        step = max(1, total // 20)
        if done == total or done - last.get(split, -step) >= step:
            last[split] = done
            recorder.show(Loading(split=split, done=done, total=total))

    return report


def record_failure(recorder: RunRecorder, exc: BaseException) -> RunFailed:
    """Write the failure event and status (unless the loop already did, and as far as a full disk
    allows) and return the one-line error for the user."""
    if isinstance(exc, RunFailed):
        return exc
    if out_of_space(exc, recorder.run.path):
        message = f"no space left on device at {recorder.run.path}; free some space; {resume_note(recorder.run)}"
    elif isinstance(exc, EndedBySignal):
        message = f"the process received {exc}, which ends it; {resume_note(recorder.run)}"
    elif isinstance(exc, OaecmlrError):
        message = str(exc)
    else:  # unexpected: keep the traceback in the log, one line for the user
        recorder.log.error("unexpected error\n%s", traceback.format_exc())
        message = f"{type(exc).__name__}: {exc} (traceback in {recorder.run.log})"
    for write in (lambda: recorder.emit(Failure(error=message)), lambda: recorder.set_status("failed", error=message)):
        try:
            write()
        except OSError:
            pass  # the disk is full: the error still reaches the user
    return RunFailed(message)


LOW_SPACE = 64 * 2**20


def out_of_space(exc: BaseException, folder) -> bool:
    """A write that failed for lack of space: ENOSPC, or torch.save's own error on a full disk
    ("enforce fail at inline_container.cc", "unexpected pos") while the disk is (nearly) full."""
    if isinstance(exc, OSError) and exc.errno in (errno.ENOSPC, errno.EDQUOT):
        return True
    if isinstance(exc, RuntimeError) and ("inline_container" in str(exc) or "unexpected pos" in str(exc)):
        try:
            return shutil.disk_usage(folder).free < LOW_SPACE
        except OSError:
            return True
    return False
