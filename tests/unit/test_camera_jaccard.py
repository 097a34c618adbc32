"""Camera-aware Jaccard distance (CA-Jaccard) against a dense oracle written from its description:
intra- and inter-camera rankings, k-reciprocal sets in each, their union without the 2/3 expansion,
softmax weights, camera-aware query expansion, then the usual Jaccard distance."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from helpers import clustered_features, dense, sklearn_dbscan
from test_jaccard import assert_matches_oracle

from oaecmlr import jaccard_distance, pseudo_labels
from oaecmlr.core.camera_jaccard import camera_rankings
from oaecmlr.core.knn import knn


def oracle_camera_jaccard(features: np.ndarray, camids: np.ndarray, k1_intra: int, k1_inter: int, k2_intra: int,
                          k2_inter: int) -> np.ndarray:
    """Dense N x N CA-Jaccard, one sample at a time, in float64."""
    f = features.astype(np.float64)
    n = len(f)
    dist = np.maximum(2 - 2 * f @ f.T, 0)

    def ranking(i, same):
        others = [j for j in range(n) if (camids[j] == camids[i]) == same]
        return sorted(others, key=lambda j: (dist[i, j], j))

    intra = [ranking(i, True) for i in range(n)]  # holds i itself
    inter = [ranking(i, False) for i in range(n)]

    def reciprocal(lists, i, k):
        return [j for j in lists[i][: k + 1] if i in lists[j][: k + 1]]

    V = np.zeros((n, n))
    for i in range(n):
        members = sorted(set(reciprocal(intra, i, k1_intra)) | set(reciprocal(inter, i, k1_inter)))
        weights = np.exp(-dist[i, members])
        V[i, members] = weights / weights.sum()
    V_qe = np.stack([V[intra[i][:k2_intra] + inter[i][:k2_inter]].mean(axis=0) for i in range(n)])
    out = np.zeros((n, n))
    for i in range(n):
        shared = np.minimum(V_qe[i][None, :], V_qe).sum(axis=1)
        out[i] = 1 - shared / (2 - shared)
    return np.maximum(out, 0)


def camera_features(n: int, dim: int, cams: int, seed: int, bias: float = 0.8):
    """Identities seen by several cameras, each camera adding its own offset: a camera-biased set."""
    f, ids = clustered_features(n, dim, num_clusters=max(3, n // 15), seed=seed)
    rng = np.random.default_rng(seed + 1)
    camids = rng.integers(0, cams, n)
    offsets = rng.normal(size=(cams, dim)) * bias / np.sqrt(dim)
    f = f + offsets[camids]
    return (f / np.linalg.norm(f, axis=1, keepdims=True)).astype(np.float32), camids


CASES = [  # (N, D, cameras, k1_intra, k1_inter, k2_intra, k2_inter)
    (150, 16, 2, 5, 20, 2, 4),  # the published values, two cameras as CUHK03
    (200, 24, 6, 5, 20, 2, 4),  # six cameras as Market-1501
    (120, 8, 3, 3, 10, 1, 1),  # no query expansion
    (90, 12, 4, 7, 12, 3, 6),
]


@pytest.mark.parametrize("n, dim, cams, k1_intra, k1_inter, k2_intra, k2_inter", CASES)
def test_matches_the_dense_oracle(n, dim, cams, k1_intra, k1_inter, k2_intra, k2_inter):
    f, camids = camera_features(n, dim, cams, seed=n + cams)
    params = dict(k1_intra=k1_intra, k1_inter=k1_inter, k2_intra=k2_intra, k2_inter=k2_inter)
    oracle = oracle_camera_jaccard(f, camids, **params)
    cross = (oracle < 1) & (camids[:, None] != camids[None, :])
    assert cross.sum() > n  # non-trivial: pairs across cameras share support
    for max_distance in (1.0, 0.6):
        D = jaccard_distance(torch.from_numpy(f), k1=20, k2=6, max_distance=max_distance, camids=camids, **params)
        assert_matches_oracle(D, oracle, max_distance)


def test_a_camera_smaller_than_its_lists_and_a_lone_sample():
    """A camera with 3 samples (fewer than k1_intra + 1) and one with a single sample: each ranking
    holds what its camera has, and the oracle agrees."""
    f, camids = camera_features(100, 12, 3, seed=5)
    camids[:3] = 7
    camids[3] = 8
    oracle = oracle_camera_jaccard(f, camids, 5, 20, 2, 4)
    D = jaccard_distance(torch.from_numpy(f), k1=20, camids=camids)
    assert_matches_oracle(D, oracle, 1.0)
    rankings = camera_rankings(torch.from_numpy(f), camids, 6, 21)
    assert rankings.intra[3].tolist() == [3, -1, -1, -1, -1, -1]  # the lone sample ranks only itself
    assert rankings.intra[0, 3:].tolist() == [-1, -1, -1] and torch.isinf(rankings.intra_distance[0, 3:]).all()


def test_clusters_are_dbscan_of_the_oracle_and_the_lists_the_plain_ones():
    f, camids = camera_features(240, 16, 4, seed=9)
    oracle = oracle_camera_jaccard(f, camids, 5, 20, 2, 4)
    result = pseudo_labels(torch.from_numpy(f), eps=0.4, min_samples=4, k1=20, k2=6, camids=camids)
    assert np.array_equal(result.labels, sklearn_dbscan(oracle, 0.4, 4))
    assert result.num_clusters > 5
    # OAE reads the ranked lists: with camids they are still the exact global ones, merged
    assert torch.equal(result.neighbours, knn(torch.from_numpy(f), 20).index)
    assert set(result.timings) >= {"knn", "encode", "jaccard", "dbscan"}


def test_camera_aware_distance_links_across_cameras_where_the_plain_one_does_not():
    """On strongly camera-biased features the plain Jaccard distance barely links cameras; CA-Jaccard does."""
    f, camids = camera_features(300, 16, 2, seed=3, bias=2.5)
    plain = dense(jaccard_distance(torch.from_numpy(f), k1=20, k2=6))
    aware = dense(jaccard_distance(torch.from_numpy(f), k1=20, k2=6, camids=camids))
    cross = camids[:, None] != camids[None, :]
    assert (aware[cross] < 0.6).sum() > 3 * max(1, (plain[cross] < 0.6).sum())


def test_bad_parameters_are_refused():
    f, camids = camera_features(60, 8, 2, seed=1)
    with pytest.raises(TypeError, match="k1_intr"):
        jaccard_distance(torch.from_numpy(f), k1=10, camids=camids, k1_intr=3)
    with pytest.raises(ValueError, match="k2_inter must be >= 1"):
        jaccard_distance(torch.from_numpy(f), k1=10, camids=camids, k2_inter=0)
    with pytest.raises(ValueError, match="one camera per feature row"):
        jaccard_distance(torch.from_numpy(f), k1=10, camids=camids[:-1])


@pytest.mark.parametrize("chunk", [4096, 16])
def test_rankings_equal_brute_force_with_duplicates_and_small_chunks(chunk):
    """Each row's same-camera and other-camera rankings, exactly: exact duplicates (within and
    across cameras) tie and are ordered by index. 45 copies of one row fill every candidate list
    with ties, so those rows take the exact fallback search; small chunks rank in pieces."""
    f, camids = camera_features(160, 8, 3, seed=21)
    f[20:65] = f[20]  # about 15 copies per camera: more than a row's candidates
    f[77] = f[120]
    rankings = camera_rankings(torch.from_numpy(f), camids, 7, 12, chunk_size=chunk)
    dist = np.maximum(2 - 2 * f.astype(np.float64) @ f.astype(np.float64).T, 0)
    for i in range(len(f)):
        for same, got, width in ((True, rankings.intra[i], 7), (False, rankings.inter[i], 12)):
            members = [j for j in range(len(f)) if (camids[j] == camids[i]) == same]
            expected = sorted(members, key=lambda j: (round(dist[i, j], 6), j))[:width]
            assert got[: len(expected)].tolist() == expected, (i, same)
