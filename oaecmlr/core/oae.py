"""OAE: Outliers Adaptation Exploration (Li, Han, Min et al., "Outliers Adaptation Exploration and
Centroids Matching Label Refinement for Unsupervised Person Re-identification", IEEE TMM 2026).

Reconstruction from the abstract (docs/method.md section 3). An outlier o joins cluster c when:
A. nearest clustered instance neighbourhood: j*, the clustered sample nearest to o by Jaccard
   distance (cosine breaks ties), has d_J(o, j*) < 1 and o, j* are mutual k-nearest neighbours;
B. maximum centroid distance: c = y(j*) has at least `min_samples` members and
   1 - f_o.mu_c <= rho * r_c, r_c being the largest member-to-centroid cosine distance.
`rule = "support"` adds two conditions, after CASTOR's outlier recycling (Xu et al., "Pseudo Label
Rectification with Joint Camera Shift Adaptation and Outlier Progressive Recycling", IEEE TITS 2022)
and DBSCAN's own border rule:
S. at least `support` of o's `support_k` nearest Jaccard neighbours carry c, and more of them carry
   c than any other cluster;
N. c is o's nearest centroid.
`camera_shift` beta > 0 (CASTOR's camera shift, our addition) lowers the Jaccard distance of every
pair from two cameras by beta when j* is chosen and A is checked.
All outliers are tested against the clusters as they stand, the accepted ones join at once, and the
centroids are recomputed; with `rounds` > 1 the new members count as clustered in the next round.
rho = 0 or enabled = False gives back the input labels exactly.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np
import scipy.sparse as sp
import torch

from oaecmlr.core.clusters import cluster_geometry

RULES = ("nearest", "support")
_TIE = 1e-6  # Jaccard distances closer than this are a tie (they differ by float32 rounding only)


@dataclass
class OAEResult:
    labels: np.ndarray  # (N,) int64, outliers that stay out keep -1
    outliers_before: int
    outliers_after: int
    assigned: int
    passed_neighbourhood: int = 0  # outliers passing constraint A (first round)
    passed_centroid: int = 0  # outliers passing A and B (first round)
    assigned_per_round: list[int] = field(default_factory=list)
    anchors: np.ndarray | None = None  # (N,) int64: j* of each assigned outlier, -1 elsewhere


def camera_shift_at(epoch: int, epochs: int, *, start: float) -> float:
    """CASTOR's sigmoid decay of the camera shift over a run: beta_e = start * (2 - 2 / (1 + e^(-10 p))),
    p = (epoch - 1) / epochs, so beta_1 = start and beta falls towards 0 by the last epoch."""
    p = (epoch - 1) / max(epochs, 1)
    return start * (2 - 2 / (1 + math.exp(-10 * p)))


def oae(features: torch.Tensor, labels: np.ndarray, jaccard: sp.csr_matrix, neighbours: torch.Tensor | np.ndarray,
        *, k: int = 5, rho: float = 1.0, rounds: int = 1, min_samples: int = 4, enabled: bool = True,
        rule: str = "nearest", support: int = 2, support_k: int = 10, camids: np.ndarray | None = None,
        camera_shift: float = 0.0) -> OAEResult:
    """Assign outliers (-1) of `labels` to clusters under constraints A and B (and S, N for the
    support rule).

    `jaccard` is an N x N sparse Jaccard distance holding, for every outlier row, all pairs with
    d < 1 (other rows are not read); `neighbours` the (N, >= k+1) ranked kNN lists, self first;
    `camids` (N,) the cameras, needed when `camera_shift` > 0.
    """
    labels = np.asarray(labels, dtype=np.int64)
    n = labels.shape[0]
    if features.shape[0] != n or jaccard.shape != (n, n):
        raise ValueError(f"oae: features ({features.shape[0]}), labels ({n}) and jaccard {jaccard.shape} disagree")
    if rho < 0 or k < 1 or rounds < 0:
        raise ValueError(f"oae needs rho >= 0, k >= 1 and rounds >= 0, got rho={rho}, k={k}, rounds={rounds}")
    if rule not in RULES or not 1 <= support <= support_k:
        raise ValueError(f"oae rule must be one of {', '.join(RULES)} with 1 <= support <= support_k, "
                         f"got {rule!r}, support={support}, support_k={support_k}")
    if not 0 <= camera_shift < 1 or (camera_shift > 0 and (camids is None or len(camids) != n)):
        raise ValueError(f"oae camera_shift must be in [0, 1) and needs one camera per sample, got {camera_shift}")
    outliers_before = int((labels == -1).sum())
    anchors = np.full(n, -1, dtype=np.int64)
    if not enabled or rho == 0 or rounds == 0 or outliers_before == 0 or labels.max() < 0:
        return OAEResult(labels.copy(), outliers_before, outliers_before, 0, anchors=anchors)

    forward = torch.as_tensor(np.asarray(neighbours.cpu() if torch.is_tensor(neighbours) else neighbours))
    forward = forward[:, : k + 1].numpy()
    jaccard = sp.csr_matrix(jaccard)
    shifted = _camera_shifted(jaccard, np.asarray(camids), camera_shift) if camera_shift > 0 else jaccard
    result = labels.copy()
    per_round = []
    first_a = first_b = 0
    for round_index in range(rounds):
        outliers = np.flatnonzero(result == -1)
        if outliers.size == 0:
            break
        nearest, nearest_distance = _nearest_clustered(features, shifted, outliers, result)
        found = nearest >= 0
        o, j = outliers[found], nearest[found]
        mutual = (forward[o] == j[:, None]).any(axis=1) & (forward[j] == o[:, None]).any(axis=1)
        passed_a = nearest_distance[found] < 1
        passed_a &= mutual
        o, j = o[passed_a], j[passed_a]
        geometry = cluster_geometry(features, result)
        target = result[j]
        t_target = torch.as_tensor(target, device=features.device)
        t_o = torch.as_tensor(o, device=features.device)
        f_o = features[t_o].float()
        distance = 1 - (f_o * geometry.centroids[t_target]).sum(dim=1)
        passed_b = (distance <= rho * geometry.radii[t_target]) & (geometry.sizes[t_target] >= min_samples)
        passed_b = passed_b.cpu().numpy()
        if rule == "support":
            nearest_centroid = (f_o @ geometry.centroids.T).argmax(dim=1).cpu().numpy() if o.size else target
            passed_b &= (nearest_centroid == target) & _supported(jaccard, o, target, result, support, support_k)
        if round_index == 0:
            first_a, first_b = int(o.size), int(passed_b.sum())
        result[o[passed_b]] = target[passed_b]
        anchors[o[passed_b]] = j[passed_b]
        per_round.append(int(passed_b.sum()))
        if per_round[-1] == 0:
            break
    outliers_after = int((result == -1).sum())
    return OAEResult(result, outliers_before, outliers_after, outliers_before - outliers_after,
                     first_a, first_b, per_round, anchors)


def _camera_shifted(jaccard: sp.csr_matrix, camids: np.ndarray, shift: float) -> sp.csr_matrix:
    """The stored distances with every pair from two cameras lowered by `shift` (floored at 0)."""
    out = jaccard.copy()
    rows = np.repeat(np.arange(out.shape[0]), np.diff(out.indptr))
    across = camids[rows] != camids[out.indices]
    out.data = np.where(across, np.maximum(out.data - np.float32(shift), 0), out.data).astype(out.data.dtype)
    return out


def _supported(jaccard: sp.csr_matrix, rows: np.ndarray, target: np.ndarray, labels: np.ndarray,
               support: int, support_k: int) -> np.ndarray:
    """For each row: at least `support` of its `support_k` nearest Jaccard neighbours (d < 1, itself
    excluded, ties by index) carry `target`, and more of them carry it than any other cluster."""
    if rows.size == 0:
        return np.zeros(0, dtype=bool)
    block = jaccard[rows].tocoo()
    keep = block.col != rows[block.row]
    r, c, d = block.row[keep], block.col[keep], block.data[keep]
    order = np.lexsort((c, d, r))
    r, c = r[order], c[order]
    starts = np.searchsorted(r, np.arange(rows.size))
    rank = np.arange(r.size) - starts[r]
    near = rank < support_k
    r, y = r[near], labels[c[near]]
    clustered = y >= 0
    r, y = r[clustered], y[clustered]
    # votes per (row, cluster): count for the target, and the largest count of any other cluster
    pairs, counts = np.unique(np.stack([r, y]), axis=1, return_counts=True)
    for_target = np.zeros(rows.size, dtype=np.int64)
    best_other = np.zeros(rows.size, dtype=np.int64)
    is_target = pairs[1] == target[pairs[0]]
    for_target[pairs[0][is_target]] = counts[is_target]
    np.maximum.at(best_other, pairs[0][~is_target], counts[~is_target])
    return (for_target >= support) & (for_target > best_other)


def _nearest_clustered(features: torch.Tensor, jaccard: sp.csr_matrix, rows: np.ndarray,
                       labels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """For each row, the clustered column with the smallest (Jaccard, cosine, index); -1 if none."""
    block = jaccard[rows].tocoo()
    keep = labels[block.col] >= 0
    r, c, d = block.row[keep], block.col[keep], block.data[keep].astype(np.float64)
    nearest = np.full(rows.size, -1, dtype=np.int64)
    nearest_distance = np.ones(rows.size)
    if r.size == 0:
        return nearest, nearest_distance
    best = np.full(rows.size, np.inf)
    np.minimum.at(best, r, d)
    tied = d <= best[r] + _TIE  # equal up to float32 rounding: cosine decides
    r, c, d = r[tied], c[tied], d[tied]
    # Cosine distance breaks Jaccard ties (computed only for the tied candidates).
    t_rows = torch.as_tensor(rows[r], device=features.device)
    t_cols = torch.as_tensor(c, device=features.device)
    cosine = (1 - (features[t_rows].float() * features[t_cols].float()).sum(dim=1)).cpu().numpy()
    order = np.lexsort((c, cosine, r))
    first = np.ones(order.size, dtype=bool)
    first[1:] = r[order][1:] != r[order][:-1]
    winners = order[first]
    nearest[r[winners]] = c[winners]
    nearest_distance[r[winners]] = d[winners]
    return nearest, nearest_distance
