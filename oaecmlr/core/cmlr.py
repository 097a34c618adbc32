"""CMLR: Centroids Matching Label Refinement (Li, Han, Min et al., "Outliers Adaptation Exploration
and Centroids Matching Label Refinement for Unsupervised Person Re-identification", IEEE TMM 2026).

Three readings of the abstract (docs/method.md section 4), each a function of this module:

`cmlr` ("self", the first reconstruction). For each clustered sample i:
  p_i      = softmax_k(f_i.mu_k / tau_r)            (optionally over the top-K centroids only)
  delta_i  = clip((1 - f_i.mu_y) / r_y, 0, 1)        its position inside its own cluster
  lambda_i = lam * delta_i                           central samples keep a near one-hot label
  q_i      = (1 - lambda_i) onehot(y_i) + lambda_i p_i

`propagated` (after NCPLR, Zhang et al. 2022; PPLR, Cho et al., CVPR 2022; RLCC, Zhang et al.,
CVPR 2021): the target comes from the sample's Jaccard neighbours, not from the sample alone:
  z_ik  = (f_i.mu_k - m_k) / s_k                     m_k, s_k: mean and std (>= min_spread) of the
                                                     members' similarity to mu_k; top `candidates` k
  p_i   = softmax_k(z_ik)
  pbar_i = mean of p_j over {i} and the clustered j with d_J(i, j) <= radius
  q_i   = (1 - lam) onehot(y_i) + lam pbar_i

`matched` (RLCC's clustering consensus): this epoch's clusters are matched to the previous epoch's
by overlap (IoU of their member sets, rows normalised), and the sample's previous label mass is
carried across the match:
  c_i = normalise(q'_i T),  q_i = (1 - lam) onehot(y_i) + lam c_i   (one-hot where i had no label)

lam = 0 or enabled = False gives exact one-hot labels in every reading.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import scipy.sparse as sp
import torch

from oaecmlr.core.clusters import Clusters, cluster_geometry

_FLAT = 1e-6  # radii below this are float32 noise around identical features


@dataclass
class CMLRResult:
    soft_labels: torch.Tensor  # (M, C) rows sum to 1, one per clustered sample
    sample_index: np.ndarray  # (M,) the sample each row belongs to, in increasing order
    mean_entropy: float  # mean entropy (nats) of the rows
    mean_weight: float  # mean lambda_i


MODES = ("self", "propagated", "matched")


def cmlr(features: torch.Tensor, labels: np.ndarray, *, lam: float = 0.5, tau_r: float = 0.05,
         top_k: int | None = None, enabled: bool = True, geometry: Clusters | None = None) -> CMLRResult:
    """Soft labels of the clustered samples (labels >= 0) of L2-normalised `features`; `geometry`,
    when the caller has it, is `cluster_geometry(features, labels)`."""
    labels = np.asarray(labels, dtype=np.int64)
    if features.shape[0] != labels.shape[0]:
        raise ValueError(f"cmlr: {features.shape[0]} features but {labels.shape[0]} labels")
    if tau_r <= 0:
        raise ValueError(f"cmlr needs tau_r > 0, got tau_r={tau_r}")
    index, y, onehot = _one_hot(labels, lam, features.device)
    num_clusters = onehot.shape[1]
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
    return CMLRResult(soft, index, _entropy(soft), float(weight.mean()))


def propagated(features: torch.Tensor, labels: np.ndarray, jaccard: sp.csr_matrix, *, lam: float = 0.5,
               radius: float = 0.2, candidates: int = 5, min_spread: float = 0.02, enabled: bool = True,
               geometry: Clusters | None = None) -> CMLRResult:
    """Neighbour-propagated soft labels of the clustered samples. `jaccard` holds (at least) every
    pair with d_J <= `radius` of the clustered samples' rows; `geometry` is
    `cluster_geometry(features, labels)` when the caller has it."""
    labels = np.asarray(labels, dtype=np.int64)
    n = labels.shape[0]
    if features.shape[0] != n or jaccard.shape != (n, n):
        raise ValueError(f"cmlr: features ({features.shape[0]}), labels ({n}) and jaccard {jaccard.shape} disagree")
    if not 0 < radius <= 1 or candidates < 1 or min_spread <= 0:
        raise ValueError(f"propagated cmlr needs 0 < radius <= 1, candidates >= 1 and min_spread > 0, got "
                         f"radius={radius}, candidates={candidates}, min_spread={min_spread}")
    index, y, onehot = _one_hot(labels, lam, features.device)
    if not enabled or lam == 0 or index.size == 0:
        return CMLRResult(onehot, index, 0.0, 0.0)
    geometry = geometry if geometry is not None else cluster_geometry(features, labels)
    f = features[torch.as_tensor(index, device=features.device)].float()
    similarity = f @ geometry.centroids.T
    own = similarity[torch.arange(index.size, device=f.device), y]  # members' similarity to their centroid
    count = geometry.sizes.clamp_min(1).float()
    mean = torch.zeros_like(count).index_add_(0, y, own) / count
    variance = torch.zeros_like(count).index_add_(0, y, (own - mean[y]) ** 2) / count
    z = (similarity - mean) / variance.sqrt().clamp_min(min_spread)
    if candidates < z.shape[1]:
        cutoff = z.topk(candidates, dim=1).values[:, -1:]
        z = z.masked_fill(z < cutoff, float("-inf"))
    p = z.softmax(dim=1)
    # pbar = W p, W the row-normalised adjacency of d_J <= radius among clustered samples, self included
    position = np.full(n, -1, dtype=np.int64)
    position[index] = np.arange(index.size)
    block = sp.csr_matrix(jaccard)[index].tocoo()
    near = (block.data <= radius) & (position[block.col] >= 0) & (index[block.row] != block.col)
    rows = np.concatenate([np.arange(index.size), block.row[near]])
    cols = np.concatenate([np.arange(index.size), position[block.col[near]]])
    degree = np.bincount(rows, minlength=index.size).astype(np.float32)
    adjacency = torch.sparse_coo_tensor(torch.as_tensor(np.stack([rows, cols]), device=f.device),
                                        torch.as_tensor(1 / degree[rows], device=f.device),
                                        (index.size, index.size), check_invariants=False)
    pbar = torch.sparse.mm(adjacency, p)
    soft = (1 - lam) * onehot + lam * pbar
    return CMLRResult(soft, index, _entropy(soft), lam)


def matched(labels: np.ndarray, previous_labels: np.ndarray | None, previous_soft: torch.Tensor | None, *,
            lam: float = 0.5, enabled: bool = True, device: torch.device | str = "cpu") -> CMLRResult:
    """Soft labels carried from the previous epoch across the best-overlapping clusters. The previous
    epoch's labels (N,) and its soft labels (one row per sample with label >= 0, in index order) are
    None in the first epoch: one-hot labels then."""
    labels = np.asarray(labels, dtype=np.int64)
    index, y, onehot = _one_hot(labels, lam, device)
    if not enabled or lam == 0 or index.size == 0 or previous_labels is None or previous_soft is None:
        return CMLRResult(onehot, index, 0.0, 0.0)
    previous_labels = np.asarray(previous_labels, dtype=np.int64)
    if previous_labels.shape != labels.shape:
        raise ValueError(f"cmlr: previous labels {previous_labels.shape} and labels {labels.shape} disagree")
    num_previous, num_clusters = previous_soft.shape[1], onehot.shape[1]
    both = (previous_labels >= 0) & (labels >= 0)
    pairs, shared = np.unique(np.stack([previous_labels[both], labels[both]]), axis=1, return_counts=True)
    previous_sizes = np.bincount(previous_labels[previous_labels >= 0], minlength=num_previous)
    sizes = np.bincount(labels[labels >= 0], minlength=num_clusters)
    iou = shared / (previous_sizes[pairs[0]] + sizes[pairs[1]] - shared)
    row_sum = np.bincount(pairs[0], weights=iou, minlength=num_previous)
    transfer = torch.sparse_coo_tensor(torch.as_tensor(pairs[::-1].copy(), device=onehot.device),
                                       torch.as_tensor(iou / row_sum[pairs[0]], dtype=torch.float32,
                                                       device=onehot.device),
                                       (num_clusters, num_previous), check_invariants=False)
    previous_row = np.full(labels.shape[0], -1, dtype=np.int64)
    previous_row[previous_labels >= 0] = np.arange(int((previous_labels >= 0).sum()))
    rows = previous_row[index]
    had = rows >= 0
    carried = onehot.clone()
    if had.any():
        old = previous_soft.to(onehot.device).float()[torch.as_tensor(rows[had], device=onehot.device)]
        moved = torch.sparse.mm(transfer, old.T).T  # (m, C): q'_i T
        mass = moved.sum(dim=1, keepdim=True)
        had = torch.as_tensor(had, device=onehot.device)
        carried[had] = torch.where(mass > 0, moved / mass.clamp_min(1e-12), onehot[had])  # no overlap: one-hot
    soft = (1 - lam) * onehot + lam * carried
    return CMLRResult(soft, index, _entropy(soft), lam)


def _one_hot(labels: np.ndarray, lam: float, device) -> tuple[np.ndarray, torch.Tensor, torch.Tensor]:
    """The clustered samples, their labels on `device` and their one-hot rows."""
    if not 0 <= lam <= 1:
        raise ValueError(f"cmlr needs 0 <= lam <= 1, got lam={lam}")
    index = np.flatnonzero(labels >= 0)
    num_clusters = int(labels.max()) + 1 if labels.size else 0
    y = torch.as_tensor(labels[index], device=device)
    onehot = torch.zeros(index.size, num_clusters, device=device)
    onehot[torch.arange(index.size, device=device), y] = 1
    return index, y, onehot


def _entropy(soft: torch.Tensor) -> float:
    return float((-(soft * soft.clamp_min(1e-12).log()).sum(dim=1)).mean())
