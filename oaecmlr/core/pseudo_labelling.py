"""Pseudo-labels of one epoch: k-reciprocal Jaccard distance, then DBSCAN (docs/method.md section 1, steps 2-3)."""

from __future__ import annotations

import time
from dataclasses import dataclass, field

import numpy as np
import scipy.sparse as sp
import torch

from oaecmlr.core.camera_jaccard import camera_encoding, camera_parameters, rankings_for
from oaecmlr.core.dbscan import dbscan
from oaecmlr.core.jaccard import _check_k, encode_features, jaccard_rows, symmetrize
from oaecmlr.core.knn import check_features, knn
from oaecmlr.core.sparse import Csr

# DBSCAN only needs pairs with d <= eps; a little more is kept so the graph is a safe superset.
_EPS_SLACK = 0.05


@dataclass
class PseudoLabels:
    labels: np.ndarray  # (N,) int64, -1 = outlier
    distances: sp.csr_matrix  # Jaccard distances < min(1, eps + 0.05), diagonal included
    encoding: Csr  # the query-expanded k-reciprocal encoding, for further Jaccard rows (OAE)
    neighbours: torch.Tensor  # (N, k1) ranked kNN lists, each row starting with the sample itself
    knn_backend: str
    timings: dict[str, float] = field(default_factory=dict)  # seconds per stage

    @property
    def num_clusters(self) -> int:
        return int(self.labels.max()) + 1 if self.labels.size else 0

    @property
    def num_outliers(self) -> int:
        return int((self.labels == -1).sum())

    def full_rows(self, rows: np.ndarray) -> sp.csr_matrix:
        """N x N Jaccard distances holding every pair with d < 1 for `rows` (others empty),
        as OAE needs for the outliers."""
        n = self.labels.shape[0]
        device = self.encoding.col.device
        rows = np.asarray(rows, dtype=np.int64)
        order = np.argsort(rows, kind="stable")
        rows = rows[order]
        block = jaccard_rows(self.encoding, torch.as_tensor(rows, device=device), 1.0).to_scipy()
        lengths = np.zeros(n, dtype=np.int64)
        lengths[rows] = np.diff(block.indptr)
        indptr = np.concatenate([[0], np.cumsum(lengths)])
        # Built from raw arrays: explicit zero distances (the diagonal) stay stored.
        return sp.csr_matrix((block.data, block.indices, indptr), shape=(n, n))


def pseudo_labels(features: torch.Tensor, *, eps: float = 0.6, min_samples: int = 4, k1: int = 30, k2: int = 6,
                  knn_backend: str = "auto", camids=None, **camera) -> PseudoLabels:
    """Cluster L2-normalised features (N x D) with DBSCAN on the k-reciprocal Jaccard distance, or,
    with `camids`, on the camera-aware CA-Jaccard distance (`camera`: k1_intra, k1_inter, k2_intra,
    k2_inter; see `oaecmlr.core.camera_jaccard`)."""
    timings: dict[str, float] = {}
    clock = time.perf_counter()

    def lap(stage: str) -> None:
        nonlocal clock
        if features.device.type == "cuda":
            torch.cuda.synchronize(features.device)
        now = time.perf_counter()
        timings[stage] = now - clock
        clock = now

    features = check_features(features)
    _check_k(features.shape[0], k1, k2, 1.0)
    if not 0 < eps < 1:
        raise ValueError(f"eps must be in (0, 1) for the Jaccard distance, got {eps}")
    if camids is None:
        neighbours = knn(features, k1, backend=knn_backend)
        lap("knn")
        encoding = encode_features(features, neighbours.index, neighbours.distance, k1, k2)
    else:
        params = camera_parameters(**camera)
        rankings = rankings_for(features, camids, k1, params)
        neighbours = rankings.merged(k1)
        lap("knn")
        encoding = camera_encoding(rankings, **params)
    lap("encode")
    rows = torch.arange(features.shape[0], device=features.device)
    distances = jaccard_rows(encoding, rows, min(1.0, eps + _EPS_SLACK))
    if features.device.type == "cuda":
        distances = symmetrize(distances)  # see jaccard.symmetrize
    distances = distances.to_scipy()
    lap("jaccard")
    labels = dbscan(distances, eps, min_samples)
    lap("dbscan")
    timings["total"] = sum(timings.values())
    backend = neighbours.backend if camids is None else "torch (camera-aware)"
    return PseudoLabels(labels, distances, encoding, neighbours.index, backend, timings)
