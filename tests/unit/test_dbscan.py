"""Sparse DBSCAN against scikit-learn's DBSCAN(metric="precomputed"): the same label numbers."""

import numpy as np
import pytest
import scipy.sparse as sp
import torch
from helpers import clustered_features, require, sklearn_dbscan
from hypothesis import Phase, given, settings
from hypothesis import strategies as st

from oaecmlr import dbscan, jaccard_distance


def random_symmetric(seed: int) -> sp.csr_matrix:
    """Symmetric sparse distances with explicit zeros, repeated values (ties at eps) and a diagonal
    that is missing, an explicit 0, or an explicit value (possibly > eps), row by row."""
    rng = np.random.default_rng(seed)
    n = int(rng.integers(1, 60))
    upper = np.triu(rng.random((n, n)) < rng.uniform(0, 0.3), 1)
    if seed % 2:
        values = rng.choice([0.0, 0.1, 0.3, 0.5, 0.6, 0.7, 0.9], size=(n, n))
    else:
        values = rng.random((n, n)).round(2)
    r, c = np.nonzero(upper)
    v = values[r, c]
    mode = rng.integers(0, 3, n)  # 0: missing, 1: explicit zero, 2: explicit random value
    d = np.flatnonzero(mode > 0)
    dv = np.where(mode[d] == 1, 0.0, rng.random(d.size))
    data = np.concatenate([v, v, dv]).astype(np.float32)
    return sp.csr_matrix((data, (np.concatenate([r, c, d]), np.concatenate([c, r, d]))), shape=(n, n))


def test_minimal_example_matches_sklearn():
    """Samples 0 and 1 are 0.5 apart, sample 2 is alone; only d(0, 0) = 0 is stored on the
    diagonal. scikit-learn: min_samples=3 -> [-1, -1, -1] (two neighbours each), 2 -> [0, 0, -1],
    1 -> [0, 0, 1]. The core gives [0, 0, -1] for 3 and [0, 0, 1] for 2."""
    D = sp.csr_matrix((np.array([0.0, 0.5, 0.5], np.float32), ([0, 0, 1], [0, 1, 0])), shape=(3, 3))
    for min_samples, expected in [(3, [-1, -1, -1]), (2, [0, 0, -1]), (1, [0, 0, 1])]:
        require(np.array_equal(sklearn_dbscan(D, 0.6, min_samples), expected), "scikit-learn reference changed")
        np.testing.assert_array_equal(dbscan(D, 0.6, min_samples), expected, err_msg=f"min_samples={min_samples}")


def test_random_symmetric_matrices_match_sklearn():
    mismatches = []
    for seed in range(30):
        D = random_symmetric(seed)
        for eps in (1e-9, 0.3, 0.5):
            for min_samples in (1, 2, 4):
                got = dbscan(D, eps, min_samples)
                expected = sklearn_dbscan(D, eps, min_samples)
                assert got.dtype == np.int64 and got.shape == (D.shape[0],)
                if not np.array_equal(got, expected):
                    mismatches.append((seed, eps, min_samples))
    assert not mismatches, f"{len(mismatches)} mismatches, first {mismatches[:5]}"


@pytest.fixture(scope="module")
def jaccard_graphs():
    graphs = []
    for n, dim, seed in [(300, 32, 300), (250, 16, 1), (200, 8, 2)]:
        f, _ = clustered_features(n, dim, num_clusters=10, seed=seed)
        graphs.append(jaccard_distance(torch.from_numpy(f), k1=20, k2=6))
    return graphs


def test_jaccard_graphs_match_sklearn(jaccard_graphs):
    mismatches = []
    for g, D in enumerate(jaccard_graphs):
        for eps in (0.4, 0.5, 0.6, 0.7):
            for min_samples in (2, 4, 8):
                got = dbscan(D, eps, min_samples)
                if not np.array_equal(got, sklearn_dbscan(D, eps, min_samples)):
                    mismatches.append((g, eps, min_samples, int((got == -1).sum())))
    assert not mismatches, f"{len(mismatches)} mismatches (graph, eps, min_samples, outliers): {mismatches}"


def test_jaccard_graphs_are_non_trivial(jaccard_graphs):
    """The reference clustering of the fixture has several clusters and some outliers, so the
    comparison above can tell a wrong neighbour count from a right one."""
    for D in jaccard_graphs:
        ref = sklearn_dbscan(D, 0.6, 4)
        assert ref.max() >= 2 and (ref == -1).sum() >= 1


@st.composite
def symmetric_graphs(draw):
    n = draw(st.integers(1, 25))
    pairs = draw(st.lists(st.tuples(st.integers(0, n - 1), st.integers(0, n - 1),
                                    st.sampled_from([0.0, 0.2, 0.4, 0.5, 0.55, 0.9])), max_size=60))
    entries = {}
    for i, j, v in pairs:
        entries[(min(i, j), max(i, j))] = v
    rows, cols, vals = [], [], []
    for (i, j), v in entries.items():
        rows += [i] if i == j else [i, j]
        cols += [j] if i == j else [j, i]
        vals += [v] if i == j else [v, v]
    return sp.csr_matrix((np.asarray(vals, np.float32), (rows, cols)), shape=(n, n))


@settings(max_examples=30, deadline=None, phases=[Phase.explicit, Phase.reuse, Phase.generate])
@given(D=symmetric_graphs(), eps=st.sampled_from([0.1, 0.45, 0.5, 0.7]), min_samples=st.integers(1, 5))
def test_property_matches_sklearn(D, eps, min_samples):
    np.testing.assert_array_equal(dbscan(D, eps, min_samples), sklearn_dbscan(D, eps, min_samples))


@settings(max_examples=25, deadline=None)
@given(D=symmetric_graphs(), eps=st.sampled_from([0.1, 0.45, 0.7]), min_samples=st.integers(1, 5))
def test_property_label_structure(D, eps, min_samples):
    """Bug-independent structure: labels -1..C-1 with every number used, not changed by the
    storage order of the input."""
    labels = dbscan(D, eps, min_samples)
    assert labels.dtype == np.int64 and labels.shape == (D.shape[0],)
    assert labels.min(initial=-1) >= -1
    np.testing.assert_array_equal(np.unique(labels[labels >= 0]), np.arange(labels.max(initial=-1) + 1))
    shuffled = D.tocoo()
    order = np.random.default_rng(0).permutation(shuffled.nnz)
    again = sp.csr_matrix((shuffled.data[order], (shuffled.row[order], shuffled.col[order])), shape=D.shape)
    np.testing.assert_array_equal(dbscan(again, eps, min_samples), labels)
    assert (D != D.T).nnz == 0  # generator sanity: symmetric


def test_input_not_modified():
    D = random_symmetric(3)
    before = (D.indptr.copy(), D.indices.copy(), D.data.copy())
    dbscan(D, 0.5, 2)
    for a, b in zip(before, (D.indptr, D.indices, D.data)):
        np.testing.assert_array_equal(a, b)


def test_errors():
    with pytest.raises(ValueError, match="sparse"):
        dbscan(np.zeros((4, 4)), 0.5, 2)
    with pytest.raises(ValueError, match="square"):
        dbscan(sp.csr_matrix((3, 4)), 0.5, 2)
    with pytest.raises(ValueError, match="eps"):
        dbscan(sp.csr_matrix((3, 3)), -0.1, 2)
    with pytest.raises(ValueError, match="min_samples"):
        dbscan(sp.csr_matrix((3, 3)), 0.5, 0)
