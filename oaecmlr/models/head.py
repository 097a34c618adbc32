"""Re-ID head: pooling, BN neck, L2 normalisation, optional identity classifier.

GeM: Radenovic, Tolias, Chum, "Fine-tuning CNN Image Retrieval with No Human Annotation", TPAMI 2018.
BN neck with a frozen bias: Luo et al., "Bag of Tricks and A Strong Baseline for Deep Person
Re-identification", CVPRW 2019. Pooling and everything after it run in float32, so features are
float32 and x**p cannot overflow under bf16/fp16 autocast.
"""

from __future__ import annotations

from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import Tensor, nn

POOLINGS = ("gem", "avg")


class GeM(nn.Module):
    """Generalised-mean pooling (B x C x H x W -> B x C) with a learnable exponent p."""

    def __init__(self, p: float = 3.0, eps: float = 1e-6):
        super().__init__()
        self.p = nn.Parameter(torch.full((1,), float(p)))
        self.eps = eps

    def forward(self, x: Tensor) -> Tensor:
        p = self.p.float()
        return x.float().clamp(min=self.eps).pow(p).mean(dim=(2, 3)).pow(1.0 / p)


class AvgPool(nn.Module):
    """Global average pooling (B x C x H x W -> B x C)."""

    def forward(self, x: Tensor) -> Tensor:
        return x.float().mean(dim=(2, 3))


class TrainOutput(NamedTuple):
    """What ``ReIDModel.forward_train`` returns."""

    features_before_bn: Tensor  # B x D pooled features, before the BN neck (for a triplet loss)
    features: Tensor  # B x D, after the BN neck, L2-normalised (same as ``forward``)
    logits: Tensor | None  # B x num_classes from the classifier; None when the model has none


class ReIDModel(nn.Module):
    """backbone -> pooling -> BatchNorm1d neck (bias frozen at 0) -> L2 normalisation.

    ``forward`` always returns the normalised B x ``feature_dim`` features, in train and eval mode.
    ``forward_train`` always returns a ``TrainOutput``; ``logits`` is set only when ``num_classes``
    was given (supervised pretraining: a bias-free linear classifier on the BN-neck output).
    """

    def __init__(self, backbone: nn.Module, feat_dim: int, pooling: str = "gem",
                 num_classes: int | None = None):
        super().__init__()
        if pooling not in POOLINGS:
            raise ValueError(f"pooling must be one of {', '.join(POOLINGS)}, got {pooling!r}")
        self.backbone = backbone
        self.feature_dim = feat_dim
        self.num_classes = num_classes
        self.pool = GeM() if pooling == "gem" else AvgPool()
        self.neck = nn.BatchNorm1d(feat_dim)
        nn.init.ones_(self.neck.weight)
        nn.init.zeros_(self.neck.bias)
        self.neck.bias.requires_grad_(False)
        self.classifier: nn.Linear | None = None
        if num_classes is not None:
            self.classifier = nn.Linear(feat_dim, num_classes, bias=False)
            nn.init.normal_(self.classifier.weight, std=0.001)

    def forward_train(self, x: Tensor) -> TrainOutput:
        pooled = self.pool(self.backbone(x))
        bn = self.neck(pooled)
        logits = None if self.classifier is None else self.classifier(bn)
        return TrainOutput(pooled, F.normalize(bn, dim=1), logits)

    def forward(self, x: Tensor) -> Tensor:
        return F.normalize(self.neck(self.pool(self.backbone(x))), dim=1)
