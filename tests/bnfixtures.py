"""BatchNorm written out by hand (no BatchNorm kernel), the oracle of the ghost-BatchNorm tests, and
the small model they train (tests/unit/test_batchnorm.py, tests/e2e/test_batchnorm_workers.py)."""

from __future__ import annotations

import torch
from torch import nn

EPS, MOMENTUM = 1e-5, 0.1


def reference_ghost_bn(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor, group: int) -> torch.Tensor:
    """Each chunk of `group` consecutive samples normalised by its own mean and biased variance, written
    out by hand (no BatchNorm kernel): what each DataParallel replica's BatchNorm computed."""
    dims = [0] + list(range(2, x.dim()))
    shape = [1, -1] + [1] * (x.dim() - 2)
    outs = []
    for chunk in x.split(group):
        mean = chunk.mean(dims, keepdim=True)
        var = ((chunk - mean) ** 2).mean(dims, keepdim=True)
        outs.append((chunk - mean) / torch.sqrt(var + EPS) * weight.view(shape) + bias.view(shape))
    return torch.cat(outs)


def reference_running(x: torch.Tensor, group: int, running: str, steps: int = 1):
    """Running mean / unbiased variance after `steps` identical batches, from the first chunk only or
    from the mean of the chunks' statistics."""
    dims = [0] + list(range(2, x.dim()))
    chunks = x.split(group)
    count = chunks[0].numel() / chunks[0].shape[1]
    means = torch.stack([c.mean(dims) for c in chunks])
    variances = torch.stack([c.var(dims, unbiased=False) * count / (count - 1) for c in chunks])
    mean, var = (means[0], variances[0]) if running == "first" else (means.mean(0), variances.mean(0))
    rm, rv = torch.zeros(x.shape[1], dtype=torch.float64), torch.ones(x.shape[1], dtype=torch.float64)
    for _ in range(steps):
        rm, rv = (1 - MOMENTUM) * rm + MOMENTUM * mean.double(), (1 - MOMENTUM) * rv + MOMENTUM * var.double()
    return rm.float(), rv.float()


def small_model() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(3, 6, 3, padding=1), nn.BatchNorm2d(6), nn.ReLU(), nn.AdaptiveAvgPool2d(1),
                         nn.Flatten(), nn.Linear(6, 5), nn.BatchNorm1d(5))
