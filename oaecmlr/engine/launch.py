"""Starting, resuming and detaching runs: the one place that turns a Config into a running loop.

`start_run` checks the inputs before anything is written, creates the run folder with its resolved
config.toml, then trains in this process or, with `detach`, in a background process that survives
the terminal. `resume_run` continues a run from its last checkpoint.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import traceback
from datetime import datetime
from pathlib import Path

import torch

from oaecmlr.data.records import DatasetError
from oaecmlr.engine.config import Config, ConfigError, config_from_dict, read_toml, to_toml
from oaecmlr.engine.devices import parse_gpus
from oaecmlr.engine.distributed import SINGLE, Dist
from oaecmlr.engine.loop import init_checkpoint
from oaecmlr.engine.placement import place_images
from oaecmlr.engine.rundata import load_run_data, load_splits
from oaecmlr.engine.session import Listener, RunFailed, RunSession, StopRequested
from oaecmlr.engine.state import load_model_weights
from oaecmlr.engine.supervised import SupervisedLoop, training_classes
from oaecmlr.engine.usl import UnsupervisedLoop
from oaecmlr.engine.workers import torchrun_env
from oaecmlr.store.checkpoint import CheckpointError
from oaecmlr.store.runs import RunDir, create_run, find_run, live_state, run_dir

KNOWN_ERRORS = (ConfigError, DatasetError, CheckpointError, RunFailed)


def default_name(config: Config, preset: str | None) -> str:
    stem = preset or config.data.dataset
    prefix = "pretrain-" if config.run.kind == "supervised" else ""
    return f"{prefix}{stem}-{datetime.now().strftime('%Y%m%d-%H%M%S')}"


def check_inputs(config: Config) -> None:
    """Everything that can be checked before the run folder exists: devices, data layout, --init."""
    parse_gpus(config.run.gpus)
    if config.data.dataset != "synthetic":
        splits = load_splits(config.data)
        for split in ("train", "query", "gallery"):
            if not splits.split(split):
                raise DatasetError(f"the {split} split of {config.data.dataset} under {splits.root} is empty")
    if config.model.pretrained and not Path(config.model.pretrained).is_file():
        raise ConfigError(f"--pretrained file not found: {config.model.pretrained}")
    if config.model.init:
        path = init_checkpoint(config.model.init)
        if not path.is_file():
            raise ConfigError(f"--init: no checkpoint at {config.model.init} (give a run folder or a .pt file)")
        load_model_weights(path, config.model.arch)  # refuses another architecture before anything is written


def prepare_run(config: Config, name: str | None = None, runs_dir: str | None = None,
                preset: str | None = None) -> RunDir:
    """Resolve paths, check the inputs, then create the run folder with its config.toml."""
    if config.model.init and not Path(config.model.init).exists():
        config.model.init = str(run_dir(config.model.init, runs_dir).path)  # a run name
    for attr in ("pretrained", "init"):
        value = getattr(config.model, attr)
        if value:
            setattr(config.model, attr, str(Path(value).resolve()))
    if config.data.root:
        config.data.root = str(Path(config.data.root).resolve())
    check_inputs(config)
    run = create_run(name or default_name(config, preset), runs_dir)
    run.config.write_text(to_toml(config))
    return run


def start_run(config: Config, name: str | None = None, runs_dir: str | None = None, preset: str | None = None,
              listener: Listener | None = None, detach: bool = False) -> RunDir:
    if torchrun_env():
        return run_under_torchrun(lambda: prepare_run(config, name, runs_dir, preset), config, False, listener)
    run = prepare_run(config, name, runs_dir, preset)
    if detach:
        spawn_detached(run, resume=False)
    else:
        execute(run, config, resume=False, listener=listener)
    return run


def resume_run(name: str, runs_dir: str | None = None, listener: Listener | None = None,
               epochs: int | None = None, detach: bool = False) -> RunDir:
    if torchrun_env():
        config = load_run_config(find_run(name, runs_dir))
        return run_under_torchrun(lambda: prepare_resume(name, runs_dir, epochs), config, True, listener)
    run = prepare_resume(name, runs_dir, epochs)
    if detach:
        spawn_detached(run, resume=True)
    else:
        execute(run, load_run_config(run), resume=True, listener=listener)
    return run


def prepare_resume(name: str, runs_dir: str | None, epochs: int | None) -> RunDir:
    run = find_run(name, runs_dir)
    status = run.read_status()
    if live_state(status, None) == "running":
        raise ConfigError(f"run {run.name} is still running (pid {status.get('pid')} on {status.get('host')}); "
                          f"stop it first with `oaecmlr stop {run.name}`")
    if epochs is not None:
        config = load_run_config(run)
        config.run.epochs = epochs
        run.config.write_text(to_toml(config))
    run.stop_request.unlink(missing_ok=True)
    return run


def run_under_torchrun(prepare, config: Config, resume: bool, listener: Listener | None = None) -> RunDir:
    """A worker started by torchrun: rank 0 prepares the run folder, every rank trains.

    `--gpus` only chooses CUDA (GPU LOCAL_RANK) or CPU (gloo) here; torchrun sets the worker count.
    """
    from oaecmlr.engine.workers import init_group, train_worker

    rank, world, local_rank = torchrun_env()
    cuda = "cpu" not in config.run.gpus
    if cuda and not torch.cuda.is_available():
        raise ConfigError("torchrun worker: --gpus asks for CUDA but none is visible; pass --gpus cpu for gloo")
    device = torch.device(f"cuda:{local_rank}") if cuda else torch.device("cpu")
    init_group(device, rank, world, config.train.dist_timeout)
    dist = Dist(rank, world, local_rank)
    try:
        prepared = (None, None)
        if dist.is_main:
            try:
                prepared = (str(prepare().path), None)
            except KNOWN_ERRORS as exc:
                prepared = (None, str(exc))
        path, error = dist.broadcast_object(prepared)
        if error:
            raise RunFailed(error)
        run = RunDir(Path(path))
        train_worker(run, load_run_config(run), dist, device, resume, listener if dist.is_main else None)
        return run
    finally:
        import torch.distributed as tdist

        if tdist.is_initialized():
            tdist.destroy_process_group()


def load_run_config(run: RunDir) -> Config:
    return config_from_dict(read_toml(run.config))


def execute(run: RunDir, config: Config, resume: bool, listener: Listener | None = None) -> dict | None:
    """Train in this process (or supervise several workers). Known problems end the run with a
    failure event and a RunFailed."""
    devices = parse_gpus(config.run.gpus)
    if len(devices) > 1:
        from oaecmlr.engine.workers import run_workers

        return run_workers(run, config, devices, resume, listener)
    session = RunSession(run, listener)
    session.install_signal_handlers()
    try:
        if config.run.threads:
            torch.set_num_threads(config.run.threads)
        session.set_status("running", world_size=1)
        device = torch.device(devices[0])
        data = place_images(load_run_data(config.data, loading_progress(session)), device,
                            config.data.image_cache, config.data.device_reserve_gb)
        return build_loop(config, run, data, device, session).run_loop(resume)
    except StopRequested:
        return None
    except Exception as exc:
        raise record_failure(session, exc) from None
    finally:
        session.close()


def loading_progress(session: RunSession):
    """Show image decoding to the console (not written to events: `start` stays the first event)."""
    session.log.info("loading data")
    last: dict[str, int] = {}

    def report(split: str, done: int, total: int) -> None:
        step = max(1, total // 20)
        if session.listener and (done == total or done - last.get(split, -step) >= step):
            last[split] = done
            session.listener({"event": "loading", "split": split, "done": done, "total": total})

    return report


def build_loop(config: Config, run: RunDir, data, device: torch.device, session: RunSession | None,
               dist: Dist = SINGLE):
    if config.run.kind == "supervised":
        classes = int(training_classes(data.train.pids).max()) + 1
        return SupervisedLoop(config, run, data, device, session, dist, num_classes=classes)
    return UnsupervisedLoop(config, run, data, device, session, dist)


def record_failure(session: RunSession, exc: Exception) -> RunFailed:
    """Write the failure event (unless the loop already did) and return the error for the user."""
    if isinstance(exc, RunFailed):
        return exc
    if isinstance(exc, KNOWN_ERRORS):
        message = str(exc)
    else:  # unexpected: keep the traceback in the log, one line for the user
        session.log.error("unexpected error\n%s", traceback.format_exc())
        message = f"{type(exc).__name__}: {exc} (traceback in {session.run.log})"
    session.emit("failure", error=message)
    session.set_status("failed", error=message)
    return RunFailed(message)


def spawn_detached(run: RunDir, resume: bool) -> int:
    """Train in a background process of its own session (closing the terminal does not stop it)."""
    command = [sys.executable, "-m", "oaecmlr.engine.launch", str(run.path)] + (["--resume"] if resume else [])
    with open(run.path / "stdout.txt", "ab") as out:
        process = subprocess.Popen(command, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                   start_new_session=True, env={**os.environ, "PYTHONUNBUFFERED": "1"})
    if run.read_status().get("state") not in ("running", "finished", "failed", "stopped"):  # the child may be first
        run.write_status("starting", pid=process.pid, host=socket.gethostname())
    return process.pid


def _main(argv: list[str]) -> int:
    run = RunDir(Path(argv[0]).resolve())
    try:
        execute(run, load_run_config(run), resume="--resume" in argv)
    except RunFailed as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(_main(sys.argv[1:]))
