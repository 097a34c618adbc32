"""Starting, resuming and detaching runs: the one place that turns a Config into a running loop.

`start_run` checks the inputs before anything is written, creates the run folder with its resolved
config.toml, then trains in this process or, with `detach`, in a background process that survives
the terminal. `resume_run` continues a run from its last checkpoint.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
import traceback
from datetime import datetime
from pathlib import Path

import torch

from oaecmlr.data.records import DatasetError
from oaecmlr.engine.config import Config, ConfigError, config_from_dict, read_toml, to_toml
from oaecmlr.engine.devices import parse_gpus
from oaecmlr.engine.loop import init_checkpoint
from oaecmlr.engine.rundata import load_run_data, load_splits
from oaecmlr.engine.session import Listener, RunFailed, RunSession, StopRequested
from oaecmlr.engine.state import load_model_weights
from oaecmlr.engine.supervised import SupervisedLoop, training_classes
from oaecmlr.engine.usl import UnsupervisedLoop
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


def start_run(config: Config, name: str | None = None, runs_dir: str | None = None, preset: str | None = None,
              listener: Listener | None = None, detach: bool = False) -> RunDir:
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
    if detach:
        spawn_detached(run, resume=False)
    else:
        execute(run, config, resume=False, listener=listener)
    return run


def resume_run(name: str, runs_dir: str | None = None, listener: Listener | None = None,
               epochs: int | None = None, detach: bool = False) -> RunDir:
    run = find_run(name, runs_dir)
    status = run.read_status()
    if live_state(status, None) == "running":
        raise ConfigError(f"run {run.name} is still running (pid {status.get('pid')} on {status.get('host')}); "
                          f"stop it first with `oaecmlr stop {run.name}`")
    if not run.last.is_file():
        raise CheckpointError(f"run {run.name} has no last.pt to resume from (it stopped before finishing an epoch); "
                              "start it again with `oaecmlr run`")
    config = load_run_config(run)
    if epochs is not None:
        config.run.epochs = epochs
        run.config.write_text(to_toml(config))
    run.stop_request.unlink(missing_ok=True)
    if detach:
        spawn_detached(run, resume=True)
    else:
        execute(run, config, resume=True, listener=listener)
    return run


def load_run_config(run: RunDir) -> Config:
    return config_from_dict(read_toml(run.config))


def execute(run: RunDir, config: Config, resume: bool, listener: Listener | None = None) -> dict | None:
    """Train in this process. Known problems end the run with a failure event and a RunFailed."""
    session = RunSession(run, listener)
    session.install_signal_handlers()
    try:
        if config.run.threads:
            torch.set_num_threads(config.run.threads)
        devices = parse_gpus(config.run.gpus)
        if len(devices) > 1:
            from oaecmlr.engine.workers import run_workers  # multi-process training
            session.close()
            return run_workers(run, config, devices, resume, listener)
        device = torch.device(devices[0])
        if not resume:
            session.set_status("running", started=time.time())
        session.log.info("loading data for %s", config.data.dataset)
        data = load_run_data(config.data)
        if config.run.kind == "supervised":
            loop = SupervisedLoop(config, run, data, device, session,
                                  num_classes=int(training_classes(data.train.pids).max()) + 1)
        else:
            loop = UnsupervisedLoop(config, run, data, device, session)
        return loop.run_loop(resume)
    except StopRequested:
        return None
    except KNOWN_ERRORS as exc:
        _record_failure(session, exc)
        raise RunFailed(str(exc)) from None
    except Exception as exc:  # unexpected: keep the traceback in the log, one line for the user
        session.log.error("unexpected error\n%s", traceback.format_exc())
        _record_failure(session, exc)
        raise RunFailed(f"{type(exc).__name__}: {exc} (traceback in {run.log})") from None
    finally:
        session.close()


def _record_failure(session: RunSession, exc: Exception) -> None:
    if isinstance(exc, RunFailed):
        return  # the loop already wrote its failure event
    session.emit("failure", error=str(exc))
    session.set_status("failed", error=str(exc))


def spawn_detached(run: RunDir, resume: bool) -> int:
    """Train in a background process of its own session (closing the terminal does not stop it)."""
    command = [sys.executable, "-m", "oaecmlr.engine.launch", str(run.path)] + (["--resume"] if resume else [])
    with open(run.path / "stdout.txt", "ab") as out:
        process = subprocess.Popen(command, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                   start_new_session=True, env={**os.environ, "PYTHONUNBUFFERED": "1"})
    run.write_status("starting", pid=process.pid, host=os.uname().nodename)
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
