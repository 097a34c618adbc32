"""`oaecmlr eval`: a run's best.pt or last.pt, or a checkpoint file (oaecmlr or Cluster Contrast),
scored on a query/gallery with the training loop's own evaluation, optionally re-ranked, without
touching any run's events. `oaecmlr export` (`oaecmlr.cli.export`) opens its model the same way.

What is scored: TARGET names a checkpoint file when it is an existing file, else a run (a name
under the runs folder, or a run folder). A run is scored on its own data and config; a file on the
data the options name (`FileOptions`), its architecture and pooling taken from the file unless given.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import torch

from oaecmlr.cli.common import console, err_console, print_json
from oaecmlr.cli.tables import Section, rich_table
from oaecmlr.config import Config, load_config
from oaecmlr.engine.devices import parse_gpus, resolve_device
from oaecmlr.engine.evaluate import evaluate
from oaecmlr.engine.inference import Extraction, file_weights, run_model
from oaecmlr.engine.rundata import RunData, load_run_data
from oaecmlr.errors import CheckpointError, CliError, ConfigError, RunError
from oaecmlr.formatting import pct
from oaecmlr.store.runs import find_run, load_run_config, run_dir

CHECKPOINT_SUFFIXES = (".pt", ".pth", ".pth.tar", ".tar")
DEFAULT_ARCH = "resnet50"


@dataclass
class FileOptions:
    """What to score a checkpoint file on, and how to build its model (None: from the file, else
    the defaults: dataset required unless the file names it, resnet50, 256x128, gem)."""

    dataset: str | None = None
    data_root: str | None = None
    arch: str | None = None
    height: int | None = None
    width: int | None = None
    pooling: str | None = None

    def given(self) -> list[str]:
        names = {"dataset": "--dataset", "data_root": "--data-root", "arch": "--arch", "height": "--height",
                 "width": "--width", "pooling": "--pooling"}
        return [flag for attr, flag in names.items() if getattr(self, attr) is not None]


@dataclass
class Target:
    """A model opened for scoring, with the config of the data to score it on."""

    model: torch.nn.Module
    config: Config
    epoch: int | None
    run: str | None = None  # the run's name, for a run
    file: Path | None = None  # the checkpoint file, for a file
    checkpoint: str = "best"  # best or last for a run; the file's name for a file
    format: str = "oaecmlr"  # or "cluster-contrast"
    extra: dict = field(default_factory=dict)  # more to report (a Cluster Contrast file's best_mAP)
    run_path: Path | None = None  # the run's folder, for a run

    @property
    def label(self) -> str:
        return self.run if self.run is not None else str(self.file)

    def describe(self) -> dict:
        return {"run": self.run, "file": None if self.file is None else str(self.file), "checkpoint": self.checkpoint,
                "format": self.format, "epoch": self.epoch, "arch": self.config.model.arch,
                "dataset": self.config.data.dataset}


def pick_device(device: str) -> torch.device:
    """`--device`: auto (the first GPU, else the CPU), cpu, or a CUDA index, checked as `--gpus` is
    (one clear line when CUDA or that GPU is not there, instead of a CUDA error)."""
    if device == "auto":
        return resolve_device("cuda:0" if torch.cuda.is_available() else "cpu")
    spec = {"cuda": "0"}.get(device, device.removeprefix("cuda:"))  # cuda and cuda:N as torch writes them
    try:
        devices = parse_gpus(spec)
    except ConfigError as exc:
        raise CliError(str(exc).replace("--gpus", "--device")) from None
    if len(devices) != 1:
        raise CliError(f"--device {device}: give one device (auto, cpu or a CUDA index like 0)")
    return resolve_device(devices[0])


def is_checkpoint_file(target: str, runs_dir: str | None = None) -> bool:
    """The rule: an existing file is a checkpoint file; anything else is a run. A name that ends
    like a checkpoint (.pt, .pth, .pth.tar) but is neither a file nor a run is refused here."""
    path = Path(target)
    if path.is_file():
        return True
    if path.name.endswith(CHECKPOINT_SUFFIXES):
        try:
            exists = run_dir(target, runs_dir).exists()
        except RunError:
            exists = False
        if not exists:
            raise CheckpointError(f"checkpoint file not found: {target} (nor a run of that name); give an existing "
                                  "checkpoint file or a run name")
    return False


def open_run(name: str, runs_dir: str | None, checkpoint: str | None, options: FileOptions | None = None) -> Target:
    if options is not None and options.given():
        raise CliError(f"{', '.join(options.given())}: only for a checkpoint file; a run is scored on its own data "
                       f"and model as its config.toml says ({name} is not an existing file)")
    run = find_run(name, runs_dir)
    config = load_run_config(run)
    which = checkpoint or "best"
    model, epoch = run_model(run, config, which)
    return Target(model, config, epoch, run=run.name, checkpoint=which, run_path=run.path)


def open_file(path: str | Path, options: FileOptions, checkpoint: str | None = None) -> Target:
    """A checkpoint file's model (oaecmlr or Cluster Contrast) and the config of the data named by
    ``options`` (or by the file: an oaecmlr checkpoint stores its arch and dataset, not its root)."""
    path = Path(path)
    if checkpoint is not None:
        raise CliError(f"--checkpoint picks a run's best.pt or last.pt; {path} is a checkpoint file already")
    saved = file_weights(path, arch=options.arch, pooling=options.pooling, default_arch=DEFAULT_ARCH)
    dataset = options.dataset or saved.dataset
    if dataset is None:
        raise CliError(f"{path} does not say which data it was trained on (a Cluster Contrast checkpoint): pass "
                       "--dataset NAME (market1501, dukemtmcreid, msmt17, cuhk03, manifest, synthetic) and --data-root DIR")
    config = load_config(None, overrides={"data.dataset": dataset, "data.root": options.data_root,
                                          "data.height": options.height, "data.width": options.width,
                                          "model.arch": saved.arch, "model.pooling": saved.pooling})
    model = saved.model(config.model.last_stride)
    extra = {"best_mAP": saved.best_mAP} if saved.best_mAP is not None else {}
    return Target(model, config, saved.epoch, file=path, checkpoint=path.name,
                  format="cluster-contrast" if saved.cluster_contrast else "oaecmlr", extra=extra)


def open_target(target: str, runs_dir: str | None, checkpoint: str | None = None,
                options: FileOptions | None = None) -> Target:
    """A checkpoint file (an existing file) or a run (anything else), opened for scoring."""
    if is_checkpoint_file(target, runs_dir):
        return open_file(target, options or FileOptions(), checkpoint)
    return open_run(target, runs_dir, checkpoint, options)


def prepare(target: Target, device: str):
    """(device, the target's data, extract): `extract(images)` gives the features exactly as the
    training loop's evaluation computes them (eval mode, test transform, the run's precision)."""
    config, model = target.config, target.model
    dev = pick_device(device)
    extraction = Extraction.of(config, dev)  # as in training
    extraction.prepare(model, dev)
    data = load_run_data(config.data)

    def extract(images: torch.Tensor) -> torch.Tensor:
        return extraction.features(model, images, dev)

    return dev, data, extract


def evaluate_run(name: str, runs_dir: str | None, checkpoint: str | None = None, rerank: bool = False,
                 device: str = "auto", visrank: str | None = None, num: int = 20,
                 options: FileOptions | None = None) -> dict:
    """Score a run's checkpoint (or the checkpoint file ``name``) with `oaecmlr.engine.evaluate`."""
    if visrank:
        from oaecmlr.cli.visrank import check_folder

        check_folder(visrank)  # before any work
    pick_device(device)  # a wrong --device says so before the checkpoint and the data are read
    target = open_target(name, runs_dir, checkpoint, options)
    dev, data, extract = prepare(target, device)
    scored = evaluate(extract, data.query, data.gallery, rerank, say=say)
    result = {**target.describe(), **target.extra, "device": str(dev), **scored.to_dict()}
    if visrank:
        result["visrank"] = _visrank(extract, data, rerank, visrank, num)
    return result


def say(message: str) -> None:
    """A note on stderr (stdout may be JSON)."""
    from rich.markup import escape

    err_console.print(escape(message), highlight=False)


def _visrank(extract, data: RunData, rerank: bool, folder: str, num: int) -> list[str]:
    from oaecmlr.cli.visrank import write_visrank
    from oaecmlr.engine.features import distance_matrix

    distmat = distance_matrix(extract(data.query.images), extract(data.gallery.images), rerank, say)
    return [str(p) for p in write_visrank(distmat, data.query, data.gallery, folder, num)]


def heading(result: dict) -> str:
    """What was scored, for the first line of the table output."""
    epoch = f"epoch {result['epoch']}" if result.get("epoch") is not None else "epoch unknown"
    if result.get("run") is not None:
        what = f"[bold]{result['run']}[/]: {result['checkpoint']}.pt ({epoch})"
    else:
        kind = "Cluster Contrast" if result.get("format") == "cluster-contrast" else "oaecmlr"
        what = f"[bold]{result['checkpoint']}[/] ({kind}, {epoch}, {result['arch']} on {result['dataset']})"
    return f"{what}, {result['num_query']} queries x {result['num_gallery']} gallery images, {result['device']}"


def eval_command(name: str, runs_dir: str | None, checkpoint: str | None, rerank: bool, fmt: str,
                 visrank: str | None, num: int, device: str, options: FileOptions | None = None) -> None:
    from oaecmlr.cli.common import escape

    result = evaluate_run(name, runs_dir, checkpoint, rerank, device, visrank, num, options)
    if fmt == "json":
        print_json(result)
        return
    label = "re-ranked" if rerank else "not re-ranked"
    escaped = {k: escape(v) if isinstance(v, str) else v for k, v in result.items()}
    console.print(heading(escaped), highlight=False)
    row = [label, *(pct(result[k]) for k in ("mAP", "rank1", "rank5", "rank10", "mINP"))]
    console.print(rich_table(Section("metrics (%)", ["", "mAP", "R1", "R5", "R10", "mINP"], [row])), highlight=False)
    if visrank:
        err_console.print(f"wrote {len(result['visrank'])} ranking images to {escape(visrank)}", highlight=False)
