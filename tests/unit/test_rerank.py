"""k-reciprocal re-ranking against the original dense `re_ranking` (Zhong et al., CVPR 2017)."""

import numpy as np
import oracles
import pytest
import torch
from helpers import clustered_features
from torch.utils._python_dispatch import TorchDispatchMode

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


# --- from features, in blocks of rows (oaecmlr eval --rerank; issue 24) --------------------------------------------
class LargestTensor(TorchDispatchMode):
    """The largest number of elements of any tensor an op returns."""

    def __init__(self):
        super().__init__()
        self.largest = 0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        for t in out if isinstance(out, (tuple, list)) else [out]:
            if isinstance(t, torch.Tensor):
                self.largest = max(self.largest, t.numel())
        return out


def features_of(num_q, num_g, dim, seed):
    f, _ = clustered_features(num_q + num_g, dim, num_clusters=max(2, (num_q + num_g) // 15), seed=seed)
    return torch.from_numpy(f[:num_q]), torch.from_numpy(f[num_q:])


@pytest.mark.parametrize("num_q, num_g, dim, k1, k2, lam, block", [
    (20, 100, 16, 20, 6, 0.3, 7),
    (40, 160, 32, 20, 6, 0.3, 64),
    (15, 60, 8, 7, 1, 0.5, 1),
    (60, 40, 16, 20, 6, 0.3, 33),  # blocks that straddle the query/gallery border
])
def test_re_ranking_from_features_in_blocks_matches_the_dense_reference(num_q, num_g, dim, k1, k2, lam, block):
    from oaecmlr.core.rerank import re_rank_features

    query, gallery = features_of(num_q, num_g, dim, seed=num_q + block)
    f = torch.cat([query, gallery]).double()
    d = (2 - 2 * f @ f.T).clamp_min(0).sqrt().float().numpy()
    q_g, q_q, g_g = d[:num_q, num_q:], d[:num_q, :num_q], d[num_q:, num_q:]
    expected = oracles.dense_re_ranking(q_g, q_q, g_g, k1, k2, lam)
    whole = re_rank_features(query, gallery, k1=k1, k2=k2, lambda_value=lam).numpy()
    blocked = re_rank_features(query, gallery, k1=k1, k2=k2, lambda_value=lam, block_rows=block).numpy()
    assert blocked.shape == (num_q, num_g)
    assert np.abs(blocked - expected).max() < 1e-5 and np.abs(whole - expected).max() < 1e-5
    assert np.abs(blocked - whole).max() < 1e-6


def test_re_ranking_in_blocks_never_holds_an_n_by_n_matrix():
    """The largest tensor is a block of rows, the sparse encoding's O(N k1^2) work or the q x g
    result, far below N x N (600 x 600 here; 93,820 x 93,820, 35 GB, at MSMT17's size)."""
    from oaecmlr.core.rerank import re_rank_features

    query, gallery = features_of(100, 500, 16, seed=7)
    with LargestTensor() as mode:
        re_rank_features(query, gallery, k1=5, k2=2, block_rows=16)
    assert mode.largest <= max(16 * 600, 600 * 6 * 4 * 6, 100 * 500) < 600 * 600 // 4


def test_eval_distances_re_rank_from_the_features():
    from oaecmlr.engine.features import distance_matrix

    query, gallery = features_of(25, 90, 16, seed=11)
    f = torch.cat([query, gallery])
    d = (2 - 2 * f @ f.T).clamp_min(0).sqrt().numpy()
    expected = re_rank(d[:25, 25:], d[:25, :25], d[25:, 25:])
    got = distance_matrix(query, gallery, rerank=True)
    assert got.device.type == "cpu" and np.abs(got.numpy() - expected).max() < 1e-6
