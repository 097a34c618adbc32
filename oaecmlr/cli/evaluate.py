"""`oaecmlr eval`: a run's best.pt or last.pt scored again on its query/gallery with the training
loop's own evaluation, optionally re-ranked, without touching the run's events."""

from __future__ import annotations

import torch

from oaecmlr.cli.common import console, err_console, print_json
from oaecmlr.cli.tables import Section, rich_table
from oaecmlr.engine.checkpoint import check_compatible, load_checkpoint
from oaecmlr.engine.devices import fast_bf16
from oaecmlr.engine.evaluate import evaluate
from oaecmlr.engine.features import extract_features
from oaecmlr.engine.rundata import load_run_data
from oaecmlr.errors import CheckpointError
from oaecmlr.formatting import pct
from oaecmlr.models import build_model
from oaecmlr.store.runs import find_run, load_run_config


def pick_device(device: str) -> torch.device:
    if device == "auto":
        return torch.device("cuda:0" if torch.cuda.is_available() else "cpu")
    return torch.device(f"cuda:{device}" if device.isdigit() else device)


def load_model(run, config, which: str) -> tuple[torch.nn.Module, int | None]:
    """The run's model with the weights of best.pt or last.pt, and the epoch they come from."""
    path = run.checkpoint(which)
    if not path.is_file():
        other = "last" if which == "best" else "best"
        why = "no evaluation after epoch 0" if which == "best" else "no finished epoch"
        raise CheckpointError(f"run {run.name} has no {path.name} ({why} yet); try --checkpoint {other}")
    arch = config.model.arch
    state = load_checkpoint(path)
    check_compatible(state, path, arch, None, None)
    model = build_model(arch, None, config.model.pooling, config.model.last_stride)
    weights = {k: v for k, v in state["model"].items() if not k.startswith("classifier.")}
    try:
        model.load_state_dict(weights)
    except RuntimeError as exc:
        raise CheckpointError(f"{path} does not fit a {arch} model: {str(exc).splitlines()[0]}") from None
    return model, state.get("epoch")


def evaluate_run(name: str, runs_dir: str | None, checkpoint: str = "best", rerank: bool = False,
                 device: str = "auto", visrank: str | None = None, num: int = 20) -> dict:
    run = find_run(name, runs_dir)
    config = load_run_config(run)
    model, epoch = load_model(run, config, checkpoint)
    dev = pick_device(device)
    model.to(dev)
    data = load_run_data(config.data)
    size = (config.data.height, config.data.width)
    amp, channels_last = config.train.amp_extract and fast_bf16(dev), config.train.channels_last  # as in training
    if channels_last:
        model.to(memory_format=torch.channels_last)

    def extract(images: torch.Tensor) -> torch.Tensor:
        return extract_features(model, images, size, config.data.eval_batch, dev, amp, channels_last)

    metrics = evaluate(extract, data.query, data.gallery, rerank)
    result = {"run": run.name, "checkpoint": checkpoint, "epoch": epoch, "device": str(dev), **metrics}
    if visrank:
        from oaecmlr.cli.visrank import write_visrank
        from oaecmlr.engine.features import distance_matrix

        distmat = distance_matrix(extract(data.query.images), extract(data.gallery.images), rerank)
        result["visrank"] = [str(p) for p in write_visrank(distmat, data.query, data.gallery, visrank, num)]
    return result


def eval_command(name: str, runs_dir: str | None, checkpoint: str, rerank: bool, fmt: str, visrank: str | None,
                 num: int, device: str) -> None:
    result = evaluate_run(name, runs_dir, checkpoint, rerank, device, visrank, num)
    if fmt == "json":
        print_json(result)
        return
    label = "re-ranked" if rerank else "not re-ranked"
    console.print(f"[bold]{result['run']}[/]: {checkpoint}.pt (epoch {result['epoch']}), {result['num_query']} queries "
                  f"x {result['num_gallery']} gallery images, {result['device']}", highlight=False)
    row = [label, *(pct(result[k]) for k in ("mAP", "rank1", "rank5", "rank10", "mINP"))]
    console.print(rich_table(Section("metrics (%)", ["", "mAP", "R1", "R5", "R10", "mINP"], [row])), highlight=False)
    if visrank:
        err_console.print(f"wrote {len(result['visrank'])} ranking images to {visrank}")
