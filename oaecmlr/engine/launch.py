"""Starting, resuming and detaching runs: the one place that turns a checked Config into training.

`start_run` checks the inputs before anything is written, creates the run folder with its
resolved config.toml, then trains in this process (`train_process`), in supervised workers
(`run_workers`), or, with `detach`, in a background process that survives the terminal.
`resume_run` continues a run from its last checkpoint.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import warnings
from datetime import datetime
from pathlib import Path

import torch

from oaecmlr.config import Config, to_toml, validate
from oaecmlr.config.checks import check_image_memory, synthetic_images
from oaecmlr.data.cache import check_images
from oaecmlr.engine.checkpoint import load_model_weights
from oaecmlr.engine.devices import available_memory, parse_gpus, resolve_device
from oaecmlr.engine.distributed import Dist, init_group, leave_group, torchrun_env
from oaecmlr.engine.parent_death import die_with_parent
from oaecmlr.engine.recorder import Listener
from oaecmlr.engine.rundata import load_splits
from oaecmlr.engine.train_process import train_process
from oaecmlr.errors import ConfigError, DatasetError, OaecmlrError, RunFailed
from oaecmlr.models import build_model
from oaecmlr.store.metrics import Best
from oaecmlr.store.processes import identity
from oaecmlr.store.runs import (
    RunDir,
    check_resumable,
    checkpoint_file,
    clean_stale_temp_files,
    create_run,
    find_run,
    load_run_config,
    run_dir,
)


def default_name(config: Config, preset: str | None) -> str:
    stem = preset or config.data.dataset
    prefix = "pretrain-" if config.run.kind == "supervised" else ""
    return f"{prefix}{stem}-{datetime.now().strftime('%Y%m%d-%H%M%S')}"


def check_inputs(config: Config) -> None:
    """Everything that can be checked before the run folder exists: devices, --pretrained, data layout, --init."""
    parse_gpus(config.run.gpus)
    if config.model.pretrained:
        check_pretrained(config)
    if config.data.dataset == "synthetic":
        images = synthetic_images(config)
    else:
        splits = load_splits(config.data)
        for split in ("train", "query", "gallery"):
            if not splits.split(split):
                raise DatasetError(f"the {split} split of {config.data.dataset} under {splits.root} is empty")
        images = sum(len(splits.split(split)) for split in ("train", "query", "gallery"))
    check_image_memory(config, images, available_memory())
    if config.data.dataset != "synthetic":  # a file that is no image, named before any run folder exists
        for split in ("train", "query", "gallery"):
            check_images([r.path for r in splits.split(split)], config.data.height, config.data.width,
                         config.data.cache_dir or None, config.data.resize)
    if config.model.init:
        path = checkpoint_file(config.model.init)
        if not path.is_file():
            raise ConfigError(f"--init: no checkpoint at {config.model.init} (give a run folder or a .pt file)")
        load_model_weights(path, config.model.arch)  # refuses another architecture before anything is written
    elif not config.model.pretrained and config.data.dataset != "synthetic":
        warnings.warn(f"{config.model.arch} trains from scratch: no --pretrained weights were given, and the paper's "
                      f"recipes start from ImageNet weights (pass --pretrained FILE.pth)", stacklevel=2)


def check_pretrained(config: Config) -> None:
    """--pretrained must be a weights file that fits the model: it is loaded into one here (the torch
    random state left as it was), so a picture, a folder or a cut file is refused before any run folder."""
    path = Path(config.model.pretrained)
    if path.is_dir():
        raise ConfigError(f"--pretrained {path} is a folder; name the weights file (.pth) itself")
    if not path.is_file():
        raise ConfigError(f"--pretrained file not found: {path}")
    with torch.random.fork_rng(devices=[]):
        build_model(config.model.arch, path, config.model.pooling, config.model.last_stride)


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
              listener: Listener | None = None, detach: bool = False, with_parent: bool = False) -> RunDir:
    """Check, create and train a run; `detach`: in the background, and with `with_parent` a
    background run that stops (gracefully) when this process dies (a sweep's runs)."""
    if torchrun_env():
        return run_under_torchrun(lambda: prepare_run(config, name, runs_dir, preset), config, False, listener)
    run = prepare_run(config, name, runs_dir, preset)
    if detach:
        spawn_detached(run, resume=False, with_parent=with_parent)
    else:
        execute(run, config, resume=False, listener=listener)
    return run


def resume_run(name: str, runs_dir: str | None = None, listener: Listener | None = None,
               epochs: int | None = None, detach: bool = False, gpus: str | None = None,
               with_parent: bool = False) -> RunDir:
    if torchrun_env():
        config = checked_run_config(find_run(name, runs_dir))
        return run_under_torchrun(lambda: prepare_resume(name, runs_dir, epochs, gpus), config, True, listener)
    run = prepare_resume(name, runs_dir, epochs, gpus)
    if detach:
        spawn_detached(run, resume=True, with_parent=with_parent)
    else:
        execute(run, load_run_config(run), resume=True, listener=listener)
    return run


def prepare_resume(name: str, runs_dir: str | None, epochs: int | None, gpus: str | None = None) -> RunDir:
    """Check that `name` can be resumed (not running; a finished run only to more epochs), and set
    its new target and workers (a run resumes on any number of workers). A finished run's history
    stays as it is: training continues after its end."""
    run = find_run(name, runs_dir)
    check_resumable(run, epochs)
    config = checked_run_config(run)
    if epochs is not None:
        config.run.epochs = epochs
    if gpus is not None:
        config.run.gpus = gpus
    if epochs is not None or gpus is not None:
        validate(config)  # in range, and the batch must still split over the new number of workers
    check_inputs(config)  # the data, devices and --init as they are now, before anything is touched
    if epochs is not None or gpus is not None:
        run.config.write_text(to_toml(config))
    run.stop_request.unlink(missing_ok=True)
    run.console_lost.unlink(missing_ok=True)
    clean_stale_temp_files(run)
    return run


def checked_run_config(run: RunDir) -> Config:
    """A run's config.toml, checked exactly as `oaecmlr run` checks a new config (types, then
    `validate`: ranges, choices, the batch), so an edited file is refused in one line before
    anything of the run is touched."""
    try:
        config = load_run_config(run)
        validate(config)
    except ConfigError as exc:
        reason = str(exc).removeprefix("config.toml: ")
        raise ConfigError(f"{run.config}: {reason}; fix that line (resume keeps the run's settings) or start a new "
                          f"run with --init {run.name}") from None
    return config


def execute(run: RunDir, config: Config, resume: bool, listener: Listener | None = None) -> Best | None:
    """Train in this process, or supervise one worker per `--gpus` entry."""
    devices = parse_gpus(config.run.gpus)
    if len(devices) > 1:
        from oaecmlr.engine.supervisor import run_workers

        return run_workers(run, devices, resume, listener)
    return train_process(run, config, Dist(), resolve_device(devices[0]), resume, listener)


def run_under_torchrun(prepare, config: Config, resume: bool, listener: Listener | None = None) -> RunDir:
    """A worker started by torchrun: rank 0 prepares the run folder, every rank trains.

    `--gpus` only chooses CUDA (GPU LOCAL_RANK) or CPU (gloo) here; torchrun sets the worker count.
    """
    rank, world, local_rank = torchrun_env()
    cuda = "cpu" not in config.run.gpus
    if cuda and not torch.cuda.is_available():
        raise ConfigError("torchrun worker: --gpus asks for CUDA but none is visible; pass --gpus cpu for gloo")
    device = init_group(torch.device(f"cuda:{local_rank}") if cuda else torch.device("cpu"), rank, world,
                        config.train.dist_timeout)
    dist = Dist(rank, world, local_rank, device=device)
    try:
        prepared = (None, None)
        if dist.is_main:
            try:
                prepared = (str(prepare().path), None)
            except OaecmlrError as exc:
                prepared = (None, str(exc))
        path, error = dist.broadcast_object(prepared)
        if error:
            raise RunFailed(error)
        run = RunDir(Path(path))
        train_process(run, load_run_config(run), dist, device, resume, listener if dist.is_main else None)
        return run
    finally:
        leave_group()


def spawn_detached(run: RunDir, resume: bool, with_parent: bool = False) -> int:
    """Train in a background process of its own session (closing the terminal does not stop it);
    `with_parent`: it stops gracefully when this process dies."""
    command = [sys.executable, "-m", "oaecmlr.engine.launch", str(run.path)] + (["--resume"] if resume else [])
    if with_parent:
        command += ["--parent", str(os.getpid())]
    with open(run.path / "stdout.txt", "ab") as out:
        process = subprocess.Popen(command, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                   start_new_session=True, env={**os.environ, "PYTHONUNBUFFERED": "1"})
    if run.read_status().get("pid") != process.pid:  # the child may be first; a resumed run names its last process
        run.write_status("starting", pid=process.pid, host=socket.gethostname(), process=identity(process.pid))
    return process.pid


def _main(argv: list[str]) -> int:
    if "--parent" in argv:
        die_with_parent(int(argv[argv.index("--parent") + 1]))
    run = RunDir(Path(argv[0]).resolve())
    try:
        execute(run, load_run_config(run), resume="--resume" in argv)
    except RunFailed as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(_main(sys.argv[1:]))
