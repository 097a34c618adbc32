"""`oaecmlr eval`: a run's best.pt or last.pt scored again on its query/gallery, optionally
re-ranked, without touching the run's events."""

from __future__ import annotations

import torch

from oaecmlr.cli.common import console, err_console, pct, print_json
from oaecmlr.cli.tables import Section, rich_table
from oaecmlr.engine.devices import fast_bf16
from oaecmlr.engine.features import distance_matrix, extract_features, rank_metrics
from oaecmlr.engine.launch import load_run_config
from oaecmlr.engine.rundata import load_run_data
from oaecmlr.engine.state import check_compatible
from oaecmlr.models import build_model
from oaecmlr.store.checkpoint import CheckpointError, load_checkpoint
from oaecmlr.store.runs import find_run


def pick_device(device: str) -> torch.device:
    if device == "auto":
        return torch.device("cuda:0" if torch.cuda.is_available() else "cpu")
    return torch.device(f"cuda:{device}" if device.isdigit() else device)


def load_model(run, config, which: str) -> tuple[torch.nn.Module, int | None]:
    """The run's model with the weights of best.pt or last.pt, and the epoch they come from."""
    path = run.best if which == "best" else run.last
    if not path.is_file():
        other = "last" if which == "best" else "best"
        raise CheckpointError(f"run {run.name} has no {path.name} (no {'evaluation after epoch 0' if which == 'best' else 'finished epoch'} "
                              f"yet); try --checkpoint {other}")
    arch = config.model.arch
    state = load_checkpoint(path)
    check_compatible(state, path, arch, None, None)  # what load_model_weights does, keeping the epoch
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
    query = extract_features(model, data.query.images, size, config.data.eval_batch, dev, amp, channels_last)
    gallery = extract_features(model, data.gallery.images, size, config.data.eval_batch, dev, amp, channels_last)
    distmat = distance_matrix(query, gallery, rerank)
    metrics = rank_metrics(distmat, data.query.pids, data.gallery.pids, data.query.camids, data.gallery.camids,
                           rerank=rerank)
    result = {"run": run.name, "checkpoint": checkpoint, "epoch": epoch, "device": str(dev), **metrics}
    if visrank:
        from oaecmlr.cli.visrank import write_visrank

        result["visrank"] = [str(p) for p in write_visrank(distmat, data.query,
                                                           data.gallery, visrank, num)]
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
