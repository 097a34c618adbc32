"""Cluster geometry shared by OAE, CMLR and the memory: centroids, radii and sizes."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F


@dataclass(frozen=True)
class Clusters:
    centroids: torch.Tensor  # (C, D) L2-normalised mean feature of the members
    radii: torch.Tensor  # (C,) max cosine distance 1 - f.mu of a member to its centroid
    sizes: torch.Tensor  # (C,) int64 member counts


def cluster_geometry(features: torch.Tensor, labels: np.ndarray | torch.Tensor) -> Clusters:
    """Centroids, radii and sizes of clusters 0..C-1 (label -1 is ignored)."""
    labels = torch.as_tensor(np.asarray(labels), device=features.device, dtype=torch.long)
    num_clusters = int(labels.max()) + 1 if labels.numel() else 0
    member = labels >= 0
    f, y = features[member].float(), labels[member]
    sums = torch.zeros(num_clusters, features.shape[1], device=features.device).index_add_(0, y, f)
    sizes = torch.bincount(y, minlength=num_clusters)
    centroids = F.normalize(sums, dim=1)
    spread = 1 - (f * centroids[y]).sum(dim=1)
    radii = torch.zeros(num_clusters, device=features.device).scatter_reduce_(0, y, spread, "amax")
    return Clusters(centroids, radii.clamp_min(0), sizes)
