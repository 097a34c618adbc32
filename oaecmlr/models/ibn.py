"""Instance-Batch Normalisation, the "a" variant of IBN-Net.

Pan, Luo, Shi, Tang, "Two at Once: Enhancing Learning and Generalization Capacities via IBN-Net",
ECCV 2018. Attribute names (``IN``, ``BN``) follow github.com/XingangPan/IBN-Net, so the public
resnet50_ibn_a checkpoints load unchanged.
"""

from __future__ import annotations

import torch
from torch import nn


class IBN(nn.Module):
    """InstanceNorm (affine) on the first ``ratio`` of the channels, BatchNorm on the rest."""

    def __init__(self, planes: int, ratio: float = 0.5):
        super().__init__()
        self.half = int(planes * ratio)
        self.IN = nn.InstanceNorm2d(self.half, affine=True)
        self.BN = nn.BatchNorm2d(planes - self.half)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        a, b = torch.split(x, [self.half, x.shape[1] - self.half], dim=1)
        return torch.cat((self.IN(a), self.BN(b)), dim=1)
