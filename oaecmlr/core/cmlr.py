"""CMLR: Centroids Matching Label Refinement (Li, Han, Min et al., "Outliers Adaptation Exploration
and Centroids Matching Label Refinement for Unsupervised Person Re-identification", IEEE TMM 2026).

Reconstruction from the abstract (docs/method.md section 4). For each clustered sample i:
  p_i      = softmax_k(f_i.mu_k / tau_r)            (optionally over the top-K centroids only)
  delta_i  = clip((1 - f_i.mu_y) / r_y, 0, 1)        its position inside its own cluster
  lambda_i = lam * delta_i                           central samples keep a near one-hot label
  q_i      = (1 - lambda_i) onehot(y_i) + lambda_i p_i
lam = 0 or enabled = False gives exact one-hot labels.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from oaecmlr.core.clusters import Clusters, cluster_geometry

_FLAT = 1e-6  # radii below this are float32 noise around identical features


@dataclass
class CMLRResult:
    soft_labels: torch.Tensor  # (M, C) rows sum to 1, one per clustered sample
    sample_index: np.ndarray  # (M,) the sample each row belongs to, in increasing order
    mean_entropy: float  # mean entropy (nats) of the rows
    mean_weight: float  # mean lambda_i


def cmlr(features: torch.Tensor, labels: np.ndarray, lam: float = 0.5, tau_r: float = 0.05,
         top_k: int | None = None, enabled: bool = True, geometry: Clusters | None = None) -> CMLRResult:
    """Soft labels of the clustered samples (labels >= 0) of L2-normalised `features`; `geometry`,
    when the caller has it, is `cluster_geometry(features, labels)`."""
    labels = np.asarray(labels, dtype=np.int64)
    if features.shape[0] != labels.shape[0]:
        raise ValueError(f"cmlr: {features.shape[0]} features but {labels.shape[0]} labels")
    if not 0 <= lam <= 1 or tau_r <= 0:
        raise ValueError(f"cmlr needs 0 <= lam <= 1 and tau_r > 0, got lam={lam}, tau_r={tau_r}")
    index = np.flatnonzero(labels >= 0)
    num_clusters = int(labels.max()) + 1 if labels.size else 0
    y = torch.as_tensor(labels[index], device=features.device)
    onehot = torch.zeros(index.size, num_clusters, device=features.device)
    onehot[torch.arange(index.size, device=features.device), y] = 1
    if not enabled or lam == 0 or index.size == 0:
        return CMLRResult(onehot, index, 0.0, 0.0)

    geometry = geometry if geometry is not None else cluster_geometry(features, labels)
    f = features[torch.as_tensor(index, device=features.device)].float()
    logits = f @ geometry.centroids.T / tau_r
    if top_k is not None and top_k < num_clusters:
        cutoff = logits.topk(top_k, dim=1).values[:, -1:]
        logits = logits.masked_fill(logits < cutoff, float("-inf"))
    matching = logits.softmax(dim=1)
    radius = geometry.radii[y]
    own_distance = 1 - (f * geometry.centroids[y]).sum(dim=1)
    # A cluster of (nearly) identical features has no boundary: its samples keep one-hot labels.
    delta = torch.where(radius > _FLAT, own_distance / radius.clamp_min(_FLAT), torch.zeros_like(radius)).clamp(0, 1)
    weight = (lam * delta).unsqueeze(1)
    soft = (1 - weight) * onehot + weight * matching
    entropy = -(soft * soft.clamp_min(1e-12).log()).sum(dim=1)
    return CMLRResult(soft, index, float(entropy.mean()), float(weight.mean()))
