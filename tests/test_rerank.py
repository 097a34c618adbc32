"""k-reciprocal re-ranking against the original dense `re_ranking` (Zhong et al., CVPR 2017)."""

import numpy as np
import oracles
import pytest
from helpers import clustered_features

from oaecmlr import re_rank


def distances(num_q, num_g, dim, seed, squared=False):
    f, _ = clustered_features(num_q + num_g, dim, num_clusters=max(2, (num_q + num_g) // 15), seed=seed)
    f = f.astype(np.float64)
    d = np.sqrt(np.maximum(2 - 2 * f @ f.T, 0))
    d = d**2 if squared else d
    d = d.astype(np.float32)
    return d[:num_q, num_q:], d[:num_q, :num_q], d[num_q:, num_q:]


@pytest.mark.parametrize("num_q, num_g, dim, k1, k2, lam", [
    (20, 100, 16, 20, 6, 0.3),
    (40, 160, 32, 20, 6, 0.3),
    (15, 60, 8, 7, 1, 0.5),
    (30, 90, 16, 12, 3, 0.0),
    (10, 50, 8, 25, 6, 0.8),
    (60, 40, 16, 20, 6, 0.3),  # more queries than gallery images
])
def test_matches_dense_reference(num_q, num_g, dim, k1, k2, lam):
    q_g, q_q, g_g = distances(num_q, num_g, dim, seed=num_q + num_g + k1)
    got = re_rank(q_g, q_q, g_g, k1=k1, k2=k2, lambda_value=lam)
    expected = oracles.dense_re_ranking(q_g, q_q, g_g, k1, k2, lam)
    assert got.shape == (num_q, num_g)
    assert np.abs(got - expected).max() < 1e-5
    assert (expected < 1).sum() > num_q  # the Jaccard part is not trivially 1 everywhere


def test_squared_input_distances_match_too():
    q_g, q_q, g_g = distances(25, 80, 16, seed=3, squared=True)
    got = re_rank(q_g, q_q, g_g)
    assert np.abs(got - oracles.dense_re_ranking(q_g, q_q, g_g, 20, 6, 0.3)).max() < 1e-5


def test_lambda_one_is_the_normalised_original_distance():
    q_g, q_q, g_g = distances(20, 70, 16, seed=4)
    original = np.block([[q_q, q_g], [q_g.T, g_g]]).astype(np.float64) ** 2
    normalised = (original / original.max(axis=0)).T[:20, 20:]
    got = re_rank(q_g, q_q, g_g, lambda_value=1.0)
    np.testing.assert_allclose(got, normalised, atol=1e-6)
    assert not np.allclose(re_rank(q_g, q_q, g_g, lambda_value=0.3), normalised, atol=1e-3)


def test_re_ranking_changes_the_order():
    """With lambda = 0.3 the ranking is not simply the original one (the Jaccard term matters)."""
    q_g, q_q, g_g = distances(30, 120, 16, seed=5)
    got = re_rank(q_g, q_q, g_g)
    assert (np.argsort(got, axis=1, kind="stable") != np.argsort(q_g, axis=1, kind="stable")).any()


def test_shape_errors():
    q_g, q_q, g_g = distances(10, 40, 8, seed=6)
    with pytest.raises(ValueError, match="disagree"):
        re_rank(q_g, q_q[:9, :9], g_g)
    with pytest.raises(ValueError, match="disagree"):
        re_rank(q_g, q_q, g_g[:39])
    with pytest.raises(ValueError, match="disagree"):
        re_rank(q_g[:, :39], q_q, g_g)
    with pytest.raises(ValueError, match="lambda"):
        re_rank(q_g, q_q, g_g, lambda_value=1.5)
    with pytest.raises(ValueError, match="k1"):
        re_rank(q_g[:2, :5], q_q[:2, :2], g_g[:5, :5], k1=20)
