"""Trained models for scoring: opened from checkpoints, and their features extracted exactly as the
training loop extracts them (`Extraction`: eval mode, test transform, the run's precision).

Used by the loop (`Loop.extract`), `oaecmlr eval` and `oaecmlr export`, so a checkpoint scored
after training gives the numbers training gave.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from oaecmlr.config import Config
from oaecmlr.engine.checkpoint import check_compatible, load_checkpoint, model_weights
from oaecmlr.engine.devices import fast_bf16
from oaecmlr.engine.features import extract_features
from oaecmlr.errors import CheckpointError
from oaecmlr.models import build_model
from oaecmlr.models.weights import cluster_contrast_weights, load_model_state, pooling_of
from oaecmlr.store.runs import RunDir


@dataclass(frozen=True)
class Extraction:
    """How features are extracted on `device`: bf16 autocast only where `train.amp_extract` asks for
    it and bf16 is fast there (`fast_bf16`), channels-last as training, the run's image size and
    evaluation batch."""

    out_size: tuple[int, int]
    batch_size: int
    amp: bool
    channels_last: bool

    @classmethod
    def of(cls, config: Config, device: torch.device) -> Extraction:
        return cls(out_size=(config.data.height, config.data.width), batch_size=config.data.eval_batch,
                   amp=config.train.amp_extract and fast_bf16(device), channels_last=config.train.channels_last)

    def prepare(self, model: torch.nn.Module, device: torch.device) -> torch.nn.Module:
        """`model` on `device`, in the memory format extraction feeds it."""
        model.to(device)
        if self.channels_last:
            model.to(memory_format=torch.channels_last)
        return model

    def features(self, model: torch.nn.Module, images: torch.Tensor, device: torch.device,
                 rows: range | None = None) -> torch.Tensor:
        """L2-normalised float32 features of `images[rows]` (all rows by default), on `device`."""
        return extract_features(model, images, out_size=self.out_size, batch_size=self.batch_size, device=device,
                                amp=self.amp, channels_last=self.channels_last, rows=rows)


def run_model(run: RunDir, config: Config, which: str) -> tuple[torch.nn.Module, int | None]:
    """The run's model with the weights of best.pt or last.pt, and the epoch they come from."""
    path = run.checkpoint(which)
    if not path.is_file():
        other = "last" if which == "best" else "best"
        why = "no evaluation after epoch 0" if which == "best" else "no finished epoch"
        if not run.checkpoint(other).is_file():
            raise CheckpointError(f"run {run.name} has no checkpoint yet (no finished epoch): nothing to score; "
                                  f"resume it (`oaecmlr resume {run.name}`) or wait for its first epoch")
        raise CheckpointError(f"run {run.name} has no {path.name} ({why} yet); try --checkpoint {other}")
    arch = config.model.arch
    state = load_checkpoint(path)
    check_compatible(state, path, arch, None, None, hint="run")
    model = build_model(arch, None, config.model.pooling, config.model.last_stride)
    load_model_state(model, state["model"], str(path), arch, "run")
    return model, state.get("epoch")


@dataclass
class SavedWeights:
    """The model weights of a checkpoint file (oaecmlr or Cluster Contrast), with what the file says
    about them: its architecture (resolved), pooling, epoch and dataset (None where it does not say)."""

    path: Path
    weights: dict[str, torch.Tensor]
    arch: str
    pooling: str
    epoch: int | None
    dataset: str | None
    cluster_contrast: bool
    best_mAP: float | None

    def model(self, last_stride: int) -> torch.nn.Module:
        model = build_model(self.arch, None, self.pooling, last_stride)
        load_model_state(model, self.weights, str(self.path), self.arch, "file")
        return model


def file_weights(path: Path, *, arch: str | None = None, pooling: str | None = None,
                 default_arch: str = "resnet50") -> SavedWeights:
    """Read a checkpoint file; `arch` and `pooling`, when given, win over what the file says (a
    Cluster Contrast file says neither: `default_arch`, and the pooling its keys show)."""
    state: dict[str, Any] = load_checkpoint(path)
    cluster_contrast = cluster_contrast_weights(state) is not None
    if cluster_contrast:
        arch, dataset = arch or default_arch, None
    else:
        arch, dataset = arch or state.get("arch") or default_arch, state.get("dataset")
    weights = model_weights(state, path, arch, "file", pooling)
    epoch = state.get("epoch")
    best = float(state["best_mAP"]) if cluster_contrast and "best_mAP" in state else None
    return SavedWeights(path=path, weights=weights, arch=arch, pooling=pooling or pooling_of(weights),
                        epoch=int(epoch) if isinstance(epoch, int) else None, dataset=dataset,
                        cluster_contrast=cluster_contrast, best_mAP=best)
