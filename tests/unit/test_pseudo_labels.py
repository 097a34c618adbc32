"""One epoch's pseudo-labels against scikit-learn DBSCAN on the dense reference Jaccard distance."""

import numpy as np
import oracles
import pytest
import scipy.sparse as sp
import torch
from helpers import clustered_features, dense, require, sklearn_dbscan, triplets

from oaecmlr import dbscan, jaccard_distance, pseudo_labels
from oaecmlr.core.knn import knn

DATA = [(300, 32, 30, 6, 0), (250, 16, 20, 6, 1), (200, 16, 20, 1, 2)]


@pytest.fixture(scope="module")
def datasets():
    out = []
    for n, dim, k1, k2, seed in DATA:
        f, _ = clustered_features(n, dim, num_clusters=10, seed=seed)
        out.append((f, k1, k2, oracles.dense_jaccard(f, k1, k2)))
    return out


@pytest.fixture(scope="module")
def first(datasets):
    """Pseudo-labels of the first data set, with its full Jaccard distance (max_distance=1)."""
    f, k1, k2, oracle = datasets[0]
    features = torch.from_numpy(f)
    return pseudo_labels(features, k1=k1, k2=k2), jaccard_distance(features, k1=k1, k2=k2), oracle


def test_labels_match_sklearn_on_dense_oracle(datasets):
    """eps = 0.5 is left out: with k2 = 6, isolated samples have V = e_i, so s = 4/6 and d = 0.5
    exactly occur, and float rounding alone decides d <= eps there."""
    mismatches = []
    grid = [(1, (0.4, 0.6, 0.7), (2, 4)), (2, (0.6,), (4,))]
    for g, eps_values, min_samples_values in grid:
        f, k1, k2, oracle = datasets[g]
        for eps in eps_values:
            require(np.abs(oracle - eps).min() > 1e-5, "a pair is so close to eps that float32 decides")
            for min_samples in min_samples_values:
                got = pseudo_labels(torch.from_numpy(f), eps=eps, min_samples=min_samples, k1=k1, k2=k2).labels
                if not np.array_equal(got, sklearn_dbscan(oracle, eps, min_samples)):
                    mismatches.append((g, eps, min_samples))
    assert not mismatches, f"{len(mismatches)} mismatches (dataset, eps, min_samples): {mismatches}"


def test_result_is_consistent_with_its_parts(datasets):
    """Bug-independent: the stored graph is the Jaccard distance cut at eps + 0.05, the labels are
    dbscan of that graph, the neighbours are the kNN lists."""
    f, k1, k2, oracle = datasets[0]
    features = torch.from_numpy(f)
    pl = pseudo_labels(features, eps=0.6, min_samples=4, k1=k1, k2=k2)
    n = f.shape[0]
    assert pl.labels.dtype == np.int64 and pl.labels.shape == (n,)
    assert pl.num_clusters == pl.labels.max() + 1 >= 5
    assert pl.num_outliers == (pl.labels == -1).sum()
    assert isinstance(pl.distances, sp.csr_matrix) and pl.distances.dtype == np.float32
    reference = jaccard_distance(features, k1=k1, k2=k2, max_distance=0.65)
    for a, b in zip(triplets(pl.distances), triplets(reference)):
        np.testing.assert_array_equal(a, b)
    assert np.abs(dense(pl.distances)[oracle < 0.65] - oracle[oracle < 0.65]).max() < 1e-5
    np.testing.assert_array_equal(pl.labels, dbscan(pl.distances, 0.6, 4))
    assert torch.equal(pl.neighbours, knn(features, k1).index)
    assert pl.knn_backend == knn(features, k1).backend


def test_timings(datasets):
    f, k1, k2, _ = datasets[1]
    pl = pseudo_labels(torch.from_numpy(f), k1=k1, k2=k2)
    assert set(pl.timings) == {"knn", "encode", "jaccard", "dbscan", "total"}
    assert all(v >= 0 for v in pl.timings.values())
    parts = sum(v for key, v in pl.timings.items() if key != "total")
    assert pl.timings["total"] == pytest.approx(parts, rel=1e-9)


def test_full_rows_equal_jaccard_rows_exactly(first):
    pl, full, _ = first
    rows = np.flatnonzero(pl.labels == -1)
    require(rows.size >= 3, "too few outliers")
    got = pl.full_rows(rows)
    for i in rows:  # same stored entries, explicit zeros (the diagonal) included
        np.testing.assert_array_equal(np.sort(got[i].indices), full[i].indices)


@pytest.mark.parametrize("which", ["outliers", "unsorted", "single"])
def test_full_rows_values(first, which):
    """The values of full_rows: the chosen rows of jaccard_distance(max_distance=1) (non-zero
    entries), every other row empty."""
    pl, full, oracle = first
    rows = {"outliers": np.flatnonzero(pl.labels == -1), "unsorted": np.array([250, 3, 199, 0, 42]),
            "single": np.array([17])}[which]
    got = sp.csr_matrix(pl.full_rows(rows))
    assert got.shape == (300, 300)
    keep = sp.csr_matrix((np.ones(rows.size), (rows, rows)), shape=full.shape)
    expected = keep @ full
    got.eliminate_zeros()
    expected.eliminate_zeros()
    for a, b in zip(triplets(got), triplets(expected)):
        np.testing.assert_array_equal(a, b)
    others = np.setdiff1d(np.arange(300), rows)
    assert got[others].nnz == 0
    # the chosen rows hold every pair with oracle d < 1 (up to float32 rounding at 1)
    for i in rows:
        expected_cols = np.flatnonzero(oracle[i] < 1 - 1e-6)
        assert set(expected_cols) - {i} <= set(got[i].indices)


def test_full_rows_empty(datasets):
    f, k1, k2, _ = datasets[2]
    pl = pseudo_labels(torch.from_numpy(f), k1=k1, k2=k2)
    empty = pl.full_rows(np.zeros(0, dtype=np.int64))
    assert empty.shape == (f.shape[0], f.shape[0]) and empty.nnz == 0


def test_errors():
    f = torch.from_numpy(clustered_features(40, 8, num_clusters=3)[0])
    for eps in (0.0, 1.0, 1.2):
        with pytest.raises(ValueError, match="eps"):
            pseudo_labels(f, eps=eps, k1=10)
    with pytest.raises(ValueError, match="k1"):
        pseudo_labels(f, k1=41)
    g = f.clone()
    g[0, 0] = float("nan")
    with pytest.raises(ValueError, match="NaN"):
        pseudo_labels(g, k1=10)
