"""Exact kNN: every backend against a float64 brute-force ranking (ties broken by index)."""

import numpy as np
import pytest
import torch
from helpers import clustered_features, exact_ranking, knn_module, require
from hypothesis import given, settings
from hypothesis import strategies as st

from oaecmlr.core.knn import knn, rank_candidates, rank_rows

HAS_FAISS = knn_module.faiss_available()

# (backend argument, whether it searches in bf16, expected Neighbours.backend)
BACKENDS = [
    ("torch", False, "torch"),
    ("torch-bf16", True, "torch-bf16"),
    ("numpy", False, "numpy"),
    pytest.param("faiss", False, "faiss", marks=pytest.mark.skipif(not HAS_FAISS, reason="faiss not installed")),
]


def exact_float32(features: torch.Tensor, k: int) -> torch.Tensor:
    """The shared float32 ranking step applied to every column: the exact float32 answer."""
    n = features.shape[0]
    every = torch.arange(n).expand(n, n).contiguous()
    return rank_candidates(features, features, every, k)[0]


@pytest.mark.parametrize("backend, bf16, reported", BACKENDS)
@pytest.mark.parametrize("n, dim, k", [(40, 4, 5), (150, 16, 30), (257, 64, 17), (400, 128, 31)])
def test_backends_match_brute_force(monkeypatch, backend, bf16, reported, n, dim, k):
    f, _ = clustered_features(n, dim, num_clusters=max(2, n // 25), seed=n + dim)
    result = knn(torch.from_numpy(f), k, backend=backend, chunk_size=64)
    assert result.backend == reported
    assert result.index.dtype == torch.int64 and result.index.shape == (n, k)
    np.testing.assert_array_equal(result.index.numpy(), exact_ranking(f, k))
    f64 = f.astype(np.float64)
    expected = 2 - 2 * np.take_along_axis(f64 @ f64.T, result.index.numpy(), axis=1)
    np.testing.assert_allclose(result.distance.numpy(), expected, atol=1e-5)
    assert (result.index[:, 0] == torch.arange(n)).all()  # no duplicates: each sample first


@pytest.mark.parametrize("n, dim, k", [(60, 8, 3), (300, 32, 30)])
def test_all_backends_and_auto_identical(monkeypatch, n, dim, k):
    f = torch.from_numpy(clustered_features(n, dim, num_clusters=6, seed=7)[0])
    lists = {}
    for backend in ["torch", "torch-bf16", "numpy", "auto"] + (["faiss"] if HAS_FAISS else []):
        lists[backend] = knn(f, k, backend=backend).index
    first = next(iter(lists.values()))
    for key, index in lists.items():
        assert torch.equal(index, first), key


@pytest.mark.parametrize("backend, bf16, reported", BACKENDS)
@pytest.mark.parametrize("copies, k", [(2, 5), (3, 5), (5, 5), (7, 4)])
def test_duplicate_rows_listed_in_index_order(monkeypatch, backend, bf16, reported, copies, k):
    """Exact duplicates are at the same distance: they must come in index order (the sample
    itself is then not necessarily first)."""
    rng = np.random.default_rng(copies)
    base, _ = clustered_features(30, 16, num_clusters=5, seed=copies)
    which = rng.permutation(np.repeat(np.arange(30), copies))
    f = base[which]
    result = knn(torch.from_numpy(f), k, backend=backend).index.numpy()
    m = min(copies, k)
    for i in range(len(f)):
        np.testing.assert_array_equal(result[i, :m], np.flatnonzero(which == which[i])[:m])
    np.testing.assert_array_equal(result, exact_ranking(f, k))


@pytest.mark.parametrize("backend, bf16", [("torch", False), ("torch-bf16", True), ("numpy", False)])
def test_many_duplicates_listed_in_index_order(monkeypatch, backend, bf16):
    rng = np.random.default_rng(0)
    base, _ = clustered_features(10, 16, num_clusters=3, seed=1)
    which = rng.permutation(np.repeat(np.arange(10), 40))  # 40 copies of each vector
    result = knn(torch.from_numpy(base[which]), 5, backend=backend).index.numpy()
    expected = np.stack([np.flatnonzero(which == which[i])[:5] for i in range(which.size)])
    np.testing.assert_array_equal(result, expected)


def near_tie_features(seed: int = 0, axes: int = 5, ring: int = 200, dim: int = 32) -> np.ndarray:
    """Rings of points at almost the same angle (spread 1e-4 rad) around a few axis points: seen
    from an axis, ~200 samples lie within bf16 rounding of each other, so its row cannot be
    certified in bfloat16 and must be searched again in float32."""
    rng = np.random.default_rng(seed)
    rows = []
    for _ in range(axes):
        a = rng.normal(size=dim)
        a /= np.linalg.norm(a)
        rows.append(a)
        theta = 0.4 + 1e-4 * rng.permutation(ring)
        u = rng.normal(size=(ring, dim))
        u -= (u @ a)[:, None] * a
        u /= np.linalg.norm(u, axis=1, keepdims=True)
        rows.extend(np.cos(theta)[:, None] * a + np.sin(theta)[:, None] * u)
    f = np.asarray(rows)
    f /= np.linalg.norm(f, axis=1, keepdims=True)
    return f.astype(np.float32)


@pytest.mark.parametrize("k, chunk_size", [(5, 4096), (10, 7), (30, 64)])
def test_bf16_certified_equals_exact_on_near_ties(monkeypatch, k, chunk_size):
    f = torch.from_numpy(near_tie_features())
    n = f.shape[0]
    m = k + knn_module._BF16_EXTRA_CANDIDATES
    # Preconditions: the data defeats bf16. Some rows fail the certificate, and the bf16 top k
    # alone would be wrong, so only the float32 fallback can make the result exact.
    approx = (f.bfloat16() @ f.bfloat16().T).float().topk(m, dim=1)
    margin = 2 * knn_module._bf16_error(f.shape[1])
    uncertified = approx.values[:, m - 1] >= approx.values[:, k - 1] - margin
    assert 0 < int(uncertified.sum()) < n
    bf16_only = rank_candidates(f, f, approx.indices, k)[0]
    expected = exact_float32(f, k)
    assert not torch.equal(bf16_only, expected)

    result = knn(f, k, backend="torch-bf16", chunk_size=chunk_size)
    assert result.backend == "torch-bf16"
    # Exact means the float32 ranking: these rings are closer than float32 can tell apart, so a
    # float64 ranking may order a few of them differently.
    assert torch.equal(result.index, expected)


def test_bf16_certified_equals_exact_on_random_data(monkeypatch):
    f = torch.from_numpy(clustered_features(400, 64, num_clusters=12, seed=3)[0])
    for k in (1, 6, 30):
        got = knn(f, k, backend="torch-bf16", chunk_size=100).index
        assert torch.equal(got, exact_float32(f, k))


def certificate_counterexample() -> np.ndarray:
    """Row 0 (q) has exact nearest neighbours [0, 2]; bf16 rounding moves q.c up and q.x down by
    ~0.0068 each, more than `_bf16_error` allows for, so row 0 is certified without x.

    q's coordinates sit just above or below bf16 rounding midpoints (relative error ~2^-8, while
    `_bf16_error` assumes 2^-9); c = t*q and x = -t*q flip coordinate signs so that every rounding
    error adds up with the same sign. 24 fillers fill the candidate list between them."""
    rng = np.random.default_rng(0)
    mags = np.array([2.0**-3] * 60 + [2.0**-4] * 12 + [2.0**-5] * 8)
    eps = 2.0**-11
    for _ in range(100_000):
        up = rng.random(mags.size) < 0.5
        rel = np.where(up, 1 + 2.0**-8 + eps, 1 + 2.0**-8 - eps)
        m2 = (mags * rel) ** 2
        balance = (m2[up].sum() - m2[~up].sum()) / m2.sum()
        if abs(m2.sum() - 1) < 3e-3 and -0.0012 < balance < -0.0004:
            break
    q = rng.choice([-1.0, 1.0], mags.size) * mags * rel / np.sqrt(m2.sum())
    t = np.where(up, 1.0, -1.0)
    c, x = t * q, -t * q
    q32 = q.astype(np.float32)

    def approx(v):
        return float(torch.from_numpy(q32).bfloat16().float() @ torch.from_numpy(v.astype(np.float32)).bfloat16().float())

    # The certificate margin 2 * _bf16_error(80) as written when this test was made (fixed here so
    # that the data stays the same if the bound changes).
    margin = 2 * (2 * 2.0**-9 + 2.0**-18 + mags.size * 2.0**-23 + 1e-5)
    lo, hi = approx(x), approx(c) - margin
    require(hi - lo > 0.003, "no room for fillers")
    fillers = []
    for _ in range(100_000):
        if len(fillers) == 24:
            break
        r = rng.normal(size=mags.size)
        r -= (r @ q) * q
        r /= np.linalg.norm(r)
        target = rng.uniform(lo + 0.3 * (hi - lo), hi - 0.3 * (hi - lo))
        v = target * q + np.sqrt(1 - target**2) * r
        if lo + 1e-4 < approx(v) < hi - 1e-4 and v @ q < x @ q - 1e-4:
            fillers.append(v)
    require(len(fillers) == 24, "fillers not found")
    return np.stack([q, c, x] + fillers).astype(np.float32)


def test_bf16_certificate_is_sound(monkeypatch):
    f = torch.from_numpy(certificate_counterexample())
    require(np.abs(f.norm(dim=1).numpy() - 1).max() < 1e-6, "features not unit")
    expected = exact_float32(f, 2)
    require(expected[0].tolist() == [0, 2], "row 0 should be [0, 2]")  # q.x - q.c = 0.002: no float32 tie
    got = knn(f, 2, backend="torch-bf16").index
    assert torch.equal(got, expected)


def test_auto_reports_backend(monkeypatch):
    f = torch.from_numpy(clustered_features(80, 8, num_clusters=4, seed=2)[0])
    expected = exact_ranking(f.numpy(), 6)
    result = knn(f, 6)
    assert result.backend == "torch"  # the measured fastest, with or without faiss
    np.testing.assert_array_equal(result.index.numpy(), expected)
    monkeypatch.setattr(knn_module, "faiss_available", lambda: False)
    with pytest.raises(ValueError, match="faiss"):
        knn(f, 6, backend="faiss")
    with pytest.raises(ValueError, match="unknown kNN backend"):
        knn(f, 6, backend="scipy")


@pytest.mark.parametrize("bad", [float("nan"), float("inf"), -float("inf")])
def test_non_finite_features_rejected(bad):
    f = torch.from_numpy(clustered_features(30, 8, num_clusters=3)[0])
    f[7, 3] = bad
    with pytest.raises(ValueError, match="NaN"):
        knn(f, 5)


def test_invalid_arguments_rejected():
    f = torch.from_numpy(clustered_features(30, 8, num_clusters=3)[0])
    with pytest.raises(ValueError, match="k=31"):
        knn(f, 31)
    with pytest.raises(ValueError, match="k=0"):
        knn(f, 0)
    with pytest.raises(ValueError, match="backend"):
        knn(f, 5, backend="scann")
    with pytest.raises(ValueError, match="2-D"):
        knn(f[0], 1)
    g = f.clone()
    g[3] = 0
    with pytest.raises(ValueError, match="zero"):
        knn(g, 5)
    assert knn(f, 30).index.shape == (30, 30)  # k = N is allowed


@pytest.mark.parametrize("backend, bf16, reported", BACKENDS)
def test_unnormalised_features_are_normalised(monkeypatch, backend, bf16, reported):
    f, _ = clustered_features(120, 16, num_clusters=5, seed=5)
    scale = np.random.default_rng(0).uniform(0.2, 5.0, size=(120, 1)).astype(np.float32)
    plain = knn(torch.from_numpy(f), 10, backend=backend)
    scaled = knn(torch.from_numpy(f * scale), 10, backend=backend)
    assert torch.equal(plain.index, scaled.index)
    torch.testing.assert_close(plain.distance, scaled.distance, atol=1e-5, rtol=0)
    assert float(scaled.distance[:, 0].abs().max()) < 1e-5  # 2 - 2 a.a of unit vectors


def lexsort_oracle(dist: np.ndarray, k: int) -> np.ndarray:
    cols = np.broadcast_to(np.arange(dist.shape[1]), dist.shape)
    return np.lexsort((cols, dist), axis=1)[:, :k]


@settings(max_examples=25, deadline=None)
@given(rows=st.integers(1, 30), cols=st.integers(1, 60), k=st.integers(1, 60), seed=st.integers(0, 2**16),
       levels=st.sampled_from([0, 1000, 50]))
def test_rank_rows_matches_lexsort(rows, cols, k, seed, levels):
    """Continuous values, or values on a grid with ties (at most a few per value)."""
    k = min(k, cols)
    rng = np.random.default_rng(seed)
    if levels == 0:
        dist = rng.random((rows, cols)).astype(np.float32)
    else:  # each value used at most twice: ties stay within the candidate margin
        grid = np.repeat(np.arange(max(levels, cols)), 2)
        dist = np.stack([rng.permutation(grid)[:cols] for _ in range(rows)]).astype(np.float32) / levels
    got = rank_rows(torch.from_numpy(dist), k).numpy()
    np.testing.assert_array_equal(got, lexsort_oracle(dist, k))


def test_rank_rows_heavy_ties():
    dist = np.random.default_rng(0).integers(0, 3, (50, 60)).astype(np.float32)
    np.testing.assert_array_equal(rank_rows(torch.from_numpy(dist), 5).numpy(), lexsort_oracle(dist, 5))
