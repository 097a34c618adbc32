"""Supervised training with ground-truth identities (`oaecmlr pretrain`): label-smoothed
cross-entropy on the BN-neck logits plus batch-hard triplet loss on the pooled features (Luo et
al., "Bag of Tricks and A Strong Baseline for Deep Person Re-identification", CVPRW 2019).
It is UDA stage 1 (method.md section 7) and the supervised upper bound of the unsupervised runs.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

from oaecmlr.engine.features import autocast
from oaecmlr.engine.loop import Loop, Phase


def batch_hard_triplet(features: torch.Tensor, labels: torch.Tensor, margin: float) -> torch.Tensor:
    """Hermans et al., "In Defense of the Triplet Loss", 2017: hardest positive and negative per anchor."""
    dist = torch.cdist(features.float(), features.float())
    same = labels[:, None] == labels[None, :]
    hardest_positive = dist.masked_fill(~same, float("-inf")).max(dim=1).values
    hardest_negative = dist.masked_fill(same, float("inf")).min(dim=1).values
    return F.relu(hardest_positive - hardest_negative + margin).mean()


def training_classes(pids: np.ndarray) -> np.ndarray:
    """Ground-truth identities renumbered 0..C-1."""
    return np.unique(pids, return_inverse=True)[1].astype(np.int64)


class TrainForward(torch.nn.Module):
    """Calls `forward_train` through `forward`, so DistributedDataParallel can wrap it."""

    def __init__(self, model: torch.nn.Module):
        super().__init__()
        self.model = model

    def forward(self, x: torch.Tensor):
        return self.model.forward_train(x)


class SupervisedLoop(Loop):
    kind = "supervised"

    def train_module(self) -> torch.nn.Module:
        return TrainForward(self.core)

    def prepare_epoch(self, epoch: int) -> Phase:
        return Phase(epoch, 0, torch.as_tensor(training_classes(self.data.train.pids)))

    def train_epoch(self, phase: Phase) -> None:
        cfg = self.config
        labels = phase.labels.to(self.device)
        batches, host_batches, _ = self.epoch_batches(phase)
        self.model.train()
        for iteration in range(phase.iteration, batches.shape[0]):
            index = batches[iteration]
            x = self.batch_images(index, host_batches[iteration])
            y = labels[index]
            with autocast(self.device, self.amp):
                out = self.model(x)
            loss = F.cross_entropy(out.logits.float(), y, label_smoothing=cfg.supervised.label_smoothing)
            loss = loss + batch_hard_triplet(out.features_before_bn, y, cfg.supervised.triplet_margin)
            self.optimizer.zero_grad(set_to_none=True)
            loss.backward()
            self.optimizer.step()
            self.after_iteration(phase, iteration, batches.shape[0], loss.detach(), x.shape[0])
