"""DBSCAN on a sparse precomputed distance graph, with scikit-learn's exact semantics
(`DBSCAN(metric="precomputed")`), built on scipy: connected components of the core graph, then
border points. No scikit-learn needed at run time.

scikit-learn's semantics, reproduced here:
- j is a neighbour of i when the stored distance d(i, j) <= eps; absent pairs are not neighbours;
  i itself always counts (its diagonal entry, 0 when absent).
- i is a core point when it has >= min_samples neighbours.
- Clusters are the connected components of core points; they are numbered in the order of their
  lowest-index core point.
- A non-core point with core neighbours joins the lowest-numbered of their clusters; others are -1.
Core points are linked when either direction is <= eps. For a symmetric matrix, as
`jaccard_distance` returns, this is exactly scikit-learn's result; for an asymmetric one scikit-learn
follows edges in one direction only and its result depends on the sample order.
"""

from __future__ import annotations

import numpy as np
import scipy.sparse as sp
from scipy.sparse.csgraph import connected_components


def dbscan(distances: sp.spmatrix, eps: float, min_samples: int) -> np.ndarray:
    """Cluster labels (int64, -1 for outliers) of a square sparse distance matrix."""
    if not sp.issparse(distances):
        raise ValueError("dbscan expects a scipy.sparse distance matrix (e.g. from jaccard_distance)")
    n = distances.shape[0]
    if distances.shape != (n, n):
        raise ValueError(f"dbscan expects a square distance matrix, got shape {distances.shape}")
    if eps < 0 or min_samples < 1:
        raise ValueError(f"dbscan needs eps >= 0 and min_samples >= 1, got eps={eps}, min_samples={min_samples}")
    graph = sp.csr_matrix(distances, copy=True)
    graph.sum_duplicates()
    diagonal = graph.diagonal()  # implicit entries read as 0, as scikit-learn's setdiag does
    # Keep the off-diagonal pairs within eps; the diagonal is counted once, separately, below.
    coo = graph.tocoo()
    near = (coo.data <= eps) & (coo.row != coo.col)
    graph = sp.csr_matrix((np.ones(int(near.sum()), dtype=np.int8), (coo.row[near], coo.col[near])), shape=(n, n))
    neighbours = np.diff(graph.indptr) + (diagonal <= eps)
    core = neighbours >= min_samples

    labels = np.full(n, -1, dtype=np.int64)
    core_idx = np.flatnonzero(core)
    if core_idx.size == 0:
        return labels
    core_graph = graph[core_idx][:, core_idx]
    _, component = connected_components(core_graph, directed=False)
    # Renumber components by their lowest core index (scikit-learn's discovery order).
    first_seen = np.full(component.max() + 1, n, dtype=np.int64)
    np.minimum.at(first_seen, component, core_idx)
    rank = np.empty_like(first_seen)
    rank[np.argsort(first_seen, kind="stable")] = np.arange(first_seen.size)
    labels[core_idx] = rank[component]

    # Border points: the lowest cluster among the core points that reach them.
    border_graph = graph[core_idx][:, ~core].tocoo()
    if border_graph.nnz:
        border_idx = np.flatnonzero(~core)
        best = np.full(border_idx.size, np.iinfo(np.int64).max, dtype=np.int64)
        np.minimum.at(best, border_graph.col, labels[core_idx][border_graph.row])
        has_core = best != np.iinfo(np.int64).max
        labels[border_idx[has_core]] = best[has_core]
    return labels
