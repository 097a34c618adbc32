"""Sparse k-reciprocal Jaccard distance against the dense reference implementation."""

import importlib

import numpy as np
import oracles
import pytest
import scipy.sparse as sp
import torch
from helpers import clustered_features, dense, knn_module, stored_mask, triplets

from oaecmlr import jaccard_distance, pseudo_labels
from oaecmlr.core.jaccard import jaccard_rows

jaccard_module = importlib.import_module("oaecmlr.core.jaccard")
sparse_module = importlib.import_module("oaecmlr.core.sparse")

CASES = [  # (N, D, k1, k2): odd and even k1 (round(k1/2) is half to even), k2 = 1 (no expansion)
    (200, 16, 20, 6),
    (300, 32, 30, 6),
    (150, 8, 7, 1),
    (120, 8, 25, 3),
    (100, 4, 20, 1),
    (90, 12, 3, 2),
    (400, 64, 30, 6),
]


def features_for(n, dim, seed=None):
    return clustered_features(n, dim, num_clusters=max(3, n // 20), seed=n * 7 + dim if seed is None else seed)[0]


def assert_matches_oracle(D, oracle, max_distance):
    n = oracle.shape[0]
    assert isinstance(D, sp.csr_matrix)
    assert D.dtype == np.float32 and D.shape == (n, n)
    stored = stored_mask(D)
    got = dense(D)  # absent pairs count as 1
    if max_distance == 1.0:
        assert np.abs(got - oracle).max() < 1e-5  # over all N x N pairs
    else:
        assert np.abs(got - oracle)[stored].max() < 1e-5
    differ = stored != (oracle < max_distance)
    assert np.all(np.abs(oracle[differ] - max_distance) < 1e-5), oracle[differ]
    assert float(D.data.max(initial=0)) < max_distance
    assert (D.data >= 0).all()


@pytest.mark.parametrize("n, dim, k1, k2", CASES)
def test_matches_dense_oracle(n, dim, k1, k2):
    f = features_for(n, dim)
    oracle = oracles.dense_jaccard(f, k1, k2)
    assert (oracle < 1).sum() > 2 * n  # non-trivial: shared support beyond the diagonal
    for max_distance in (1.0, 0.7, 0.45):
        D = jaccard_distance(torch.from_numpy(f), k1=k1, k2=k2, max_distance=max_distance)
        assert_matches_oracle(D, oracle, max_distance)


def test_duplicate_features_match_oracle():
    """Repeated rows give tied ranked lists (broken by index) and distances of exactly 0."""
    base = features_for(80, 8, seed=11)
    f = np.concatenate([base, base[:20], base[5:10]])
    oracle = oracles.dense_jaccard(f, 20, 6)
    D = jaccard_distance(torch.from_numpy(f), k1=20, k2=6)
    assert_matches_oracle(D, oracle, 1.0)
    assert stored_mask(D)[3, 83] and dense(D)[3, 83] < 1e-6  # duplicates: stored even when 0


@pytest.mark.parametrize("n, dim, k1, k2", [(200, 16, 20, 6), (150, 8, 7, 1)])
def test_diagonal_stored_and_exactly_symmetric(n, dim, k1, k2):
    f = torch.from_numpy(features_for(n, dim))
    D = jaccard_distance(f, k1=k1, k2=k2, max_distance=0.6)
    rows, cols, vals = triplets(D)
    diagonal = rows == cols
    assert diagonal.sum() == n  # every d(i, i) is stored...
    assert np.abs(vals[diagonal]).max() < 1e-6
    assert (vals[diagonal] == 0).any()  # ...also when it is exactly 0 (an explicit zero)
    # Off the diagonal, exact zeros are pairs whose query-expanded encodings coincide.
    oracle = oracles.dense_jaccard(f.numpy(), k1, k2)
    assert np.all(oracle[rows[vals == 0], cols[vals == 0]] < 1e-6)
    # Exactly symmetric: the transpose has the same entries, values bit for bit.
    t_rows, t_cols, t_vals = triplets(D.T)
    np.testing.assert_array_equal(rows, t_rows)
    np.testing.assert_array_equal(cols, t_cols)
    np.testing.assert_array_equal(vals, t_vals)


def test_k1_one_gives_identity_of_explicit_zeros():
    """k1 = 1: each sample's list is itself, V = e_i, so d(i, i) = 0 and every other pair is 1."""
    f = torch.from_numpy(features_for(40, 8))
    D = jaccard_distance(f, k1=1, k2=1)
    assert D.nnz == 40
    rows, cols, vals = triplets(D)
    np.testing.assert_array_equal(rows, np.arange(40))
    np.testing.assert_array_equal(cols, np.arange(40))
    assert (vals == 0).all()


def test_small_chunks_give_the_same_result(monkeypatch):
    """Row chunking (what keeps memory O(N k) plus one chunk) must not change the result."""
    f = torch.from_numpy(features_for(200, 16, seed=1))
    reference = jaccard_distance(f, k1=20, k2=6)
    monkeypatch.setattr(jaccard_module, "CHUNK_ELEMENTS", 1 << 14)
    monkeypatch.setattr(sparse_module, "CHUNK_ELEMENTS", 1 << 14)
    monkeypatch.setattr(knn_module, "_SIMILARITY_ELEMENTS", 1 << 12)
    monkeypatch.setattr(knn_module, "_GATHER_ELEMENTS", 1 << 12)
    chunked = jaccard_distance(f, k1=20, k2=6)
    np.testing.assert_array_equal(chunked.indptr, reference.indptr)
    np.testing.assert_array_equal(chunked.indices, reference.indices)
    np.testing.assert_allclose(chunked.data, reference.data, atol=1e-6, rtol=0)
    assert abs(chunked - chunked.T).max() == 0


def test_knn_backend_does_not_change_result():
    f = torch.from_numpy(features_for(200, 16, seed=2))
    reference = jaccard_distance(f, k1=20, k2=6, knn_backend="numpy")
    for backend in ["torch", "auto"] + (["faiss"] if knn_module.faiss_available() else []):
        other = jaccard_distance(f, k1=20, k2=6, knn_backend=backend)
        np.testing.assert_array_equal(other.indptr, reference.indptr)
        np.testing.assert_array_equal(other.indices, reference.indices)
        np.testing.assert_allclose(other.data, reference.data, atol=1e-6, rtol=0)  # float32 rounding only


def test_jaccard_rows_of_a_subset_equal_full_rows():
    f = torch.from_numpy(features_for(150, 16, seed=3))
    encoding = pseudo_labels(f, k1=20, k2=6).encoding  # the query-expanded encoding
    full = jaccard_rows(encoding, torch.arange(150), 0.8).to_scipy()
    rows = np.array([149, 3, 77, 0, 42])
    block = jaccard_rows(encoding, torch.as_tensor(rows), 0.8).to_scipy()
    assert block.shape == (5, 150)
    for r, i in enumerate(rows):
        np.testing.assert_array_equal(block[r].indices, full[i].indices)
        np.testing.assert_array_equal(block[r].data, full[i].data)
    empty = jaccard_rows(encoding, torch.zeros(0, dtype=torch.long)).to_scipy()
    assert empty.shape == (0, 150) and empty.nnz == 0


def test_encoding_rows_sum_to_one():
    f = torch.from_numpy(features_for(120, 8, seed=4))
    for k2 in (1, 6):
        enc = pseudo_labels(f, k1=20, k2=k2).encoding
        sums = torch.zeros(120).index_add_(0, torch.repeat_interleave(torch.arange(120), enc.row_lengths()), enc.val)
        torch.testing.assert_close(sums, torch.ones(120), atol=1e-5, rtol=0)
        assert (enc.val > 0).all()


def test_errors():
    f = torch.from_numpy(features_for(25, 8))
    with pytest.raises(ValueError, match=r"k1=30.*N=25"):
        jaccard_distance(f, k1=30)
    with pytest.raises(ValueError, match="max_distance"):
        jaccard_distance(f, k1=5, max_distance=1.5)
    with pytest.raises(ValueError, match="max_distance"):
        jaccard_distance(f, k1=5, max_distance=0)
    with pytest.raises(ValueError, match="k2"):
        jaccard_distance(f, k1=5, k2=0)
    g = f.clone()
    g[4, 2] = float("nan")
    with pytest.raises(ValueError, match="NaN"):
        jaccard_distance(g, k1=5)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_cuda_matches_cpu():
    f = torch.from_numpy(features_for(400, 64, seed=5))
    cpu = jaccard_distance(f, k1=30, k2=6)
    gpu = jaccard_distance(f.cuda(), k1=30, k2=6)
    assert isinstance(gpu, sp.csr_matrix) and gpu.dtype == np.float32
    oracle = oracles.dense_jaccard(f.numpy(), 30, 6)
    assert_matches_oracle(gpu, oracle, 1.0)
    assert np.abs(dense(gpu) - dense(cpu)).max() < 1e-5
    assert abs(gpu - gpu.T).max() < 1e-6


def test_symmetrize_keeps_a_symmetric_matrix_exactly():
    from oaecmlr.core.jaccard import jaccard_from_features, symmetrize

    f = torch.from_numpy(clustered_features(150, 16, num_clusters=8, seed=11)[0])
    csr = jaccard_from_features(f, k1=10, k2=3)
    same = symmetrize(csr)
    assert torch.equal(same.crow, csr.crow) and torch.equal(same.col, csr.col) and torch.equal(same.val, csr.val)
    # an asymmetric input takes the upper triangle's values on both sides
    bumped = csr.val.clone()
    bumped[csr.col.numel() // 2] += 1e-3
    from oaecmlr.core.sparse import Csr

    fixed = symmetrize(Csr(csr.crow, csr.col, bumped, csr.num_cols)).to_scipy()
    assert (fixed != fixed.T).nnz == 0
