"""The widely used dense Jaccard implementation (Cluster Contrast's `compute_jaccard_distance`
structure: dense N x N float32 V, V_qe and distance arrays, Python loops over rows), written here
as the baseline the benchmarks compare against. Not used by the product."""

from __future__ import annotations

import numpy as np
import torch

from oaecmlr.core.knn import knn


def _reciprocal(ranked: np.ndarray, i: int, k: int) -> np.ndarray:
    forward = ranked[i, : k + 1]
    backward = ranked[forward, : k + 1]
    return forward[np.where(backward == i)[0]]


def dense_jaccard(features: torch.Tensor, k1: int = 30, k2: int = 6) -> np.ndarray:
    n = features.shape[0]
    ranked = knn(features, k1).index.cpu().numpy()
    near = [_reciprocal(ranked, i, k1) for i in range(n)]
    near_half = [_reciprocal(ranked, i, int(np.around(k1 / 2))) for i in range(n)]
    V = np.zeros((n, n), dtype=np.float32)
    for i in range(n):
        expansion = near[i]
        for candidate in near[i]:
            cand = near_half[candidate]
            if len(np.intersect1d(cand, near[i])) > 2 / 3 * len(cand):
                expansion = np.append(expansion, cand)
        expansion = np.unique(expansion)
        dist = 2 - 2 * torch.mm(features[i].unsqueeze(0), features[expansion].t())
        V[i, expansion] = torch.softmax(-dist, dim=1).view(-1).numpy()
    if k2 != 1:
        V_qe = np.zeros_like(V)
        for i in range(n):
            V_qe[i, :] = np.mean(V[ranked[i, :k2], :], axis=0)
        V = V_qe
        del V_qe
    inv_index = [np.where(V[:, i] != 0)[0] for i in range(n)]
    jaccard = np.zeros((n, n), dtype=np.float32)
    for i in range(n):
        temp_min = np.zeros((1, n), dtype=np.float32)
        nonzero = np.where(V[i, :] != 0)[0]
        for j in nonzero:
            rows = inv_index[j]
            temp_min[0, rows] = temp_min[0, rows] + np.minimum(V[i, j], V[rows, j])
        jaccard[i] = 1 - temp_min / (2 - temp_min)
    jaccard[jaccard < 0] = 0.0
    return jaccard
