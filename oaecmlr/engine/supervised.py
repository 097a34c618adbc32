"""Supervised training with ground-truth identities (`oaecmlr pretrain`): label-smoothed
cross-entropy on the BN-neck logits plus batch-hard triplet loss on the pooled features (Luo et
al., "Bag of Tricks and A Strong Baseline for Deep Person Re-identification", CVPRW 2019).
It is UDA stage 1 (docs/method.md section 7) and the supervised upper bound of the unsupervised runs.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

from oaecmlr.engine.loop import EpochLabels, Loop
from oaecmlr.models import TrainOutput


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

    def forward(self, x: torch.Tensor) -> TrainOutput:
        return self.model.forward_train(x)


class SupervisedLoop(Loop):
    kind = "supervised"

    def train_module(self) -> torch.nn.Module:
        return TrainForward(self.core)

    def epoch_labels(self, epoch: int) -> EpochLabels:
        return EpochLabels(epoch, torch.as_tensor(training_classes(self.data.train.pids)))

    def loss(self, output: TrainOutput, y: torch.Tensor, soft: torch.Tensor | None) -> torch.Tensor:
        supervised = self.config.supervised
        loss = F.cross_entropy(output.logits.float(), y, label_smoothing=supervised.label_smoothing)
        return loss + batch_hard_triplet(output.features_before_bn, y, supervised.triplet_margin)
