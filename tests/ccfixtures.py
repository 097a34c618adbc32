"""Cluster Contrast checkpoint files as its code writes them, trained-looking models to fill them,
and a pickle that would run a command if it were ever unpickled."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import torch

from oaecmlr.models import build_model

# Cluster Contrast's names for our ReIDModel's parts (clustercontrast/models/resnet.py, resnet_ibn.py):
# base = Sequential(conv1, bn1, relu, maxpool, layer1, layer2, layer3, layer4), gap, feat_bn.
TO_CC = [("backbone.conv1.", "base.0."), ("backbone.bn1.", "base.1."), ("backbone.layer1.", "base.4."),
         ("backbone.layer2.", "base.5."), ("backbone.layer3.", "base.6."), ("backbone.layer4.", "base.7."),
         ("pool.", "gap."), ("neck.", "feat_bn.")]


def cc_state_dict(state_dict: dict) -> dict:
    out = {}
    for key, value in state_dict.items():
        for ours, theirs in TO_CC:
            if key.startswith(ours):
                out["module." + theirs + key[len(ours):]] = value
    return out


def save_cc(state_dict: dict, path: Path, **extra) -> Path:
    """A file as Cluster Contrast's save_checkpoint writes it (a DataParallel model's state dict)."""
    torch.save({"state_dict": cc_state_dict(state_dict), "epoch": 50, "best_mAP": np.float64(0.5), **extra}, path)
    return path


def trained_looking(arch: str = "resnet18", pooling: str = "gem", seed: int = 3):
    torch.manual_seed(seed)
    model = build_model(arch, pooling=pooling)
    with torch.no_grad():
        if pooling == "gem":
            model.pool.p.fill_(4.25)
        model.neck.running_mean.normal_()
        model.neck.running_var.uniform_(0.5, 2.0)
        model.backbone.bn1.running_mean.normal_()
    return model


class Payload:
    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"echo pwned > {self.marker}",))
