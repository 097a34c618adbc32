"""CMLR soft labels: properties and a float64 oracle (docs/method.md section 4)."""

import numpy as np
import oracles
import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st

from oaecmlr import cmlr


@st.composite
def problems(draw):
    """Random unit features and labels -1..C-1 with every cluster used, C >= 1."""
    n = draw(st.integers(2, 40))
    dim = draw(st.integers(2, 8))
    seed = draw(st.integers(0, 2**16))
    rng = np.random.default_rng(seed)
    f = rng.normal(size=(n, dim))
    f /= np.linalg.norm(f, axis=1, keepdims=True)
    raw = rng.integers(-1, draw(st.integers(1, 6)), n)
    if (raw < 0).all():
        raw[0] = 0
    labels = raw.copy()
    labels[raw >= 0] = np.searchsorted(np.unique(raw[raw >= 0]), raw[raw >= 0])  # compact ids
    return torch.from_numpy(f.astype(np.float32)), labels.astype(np.int64)


FLOAT32_UNIT = float(np.finfo(np.float32).eps)  # 2^-23


def softmax_tolerance(dim: int, tau_r: float) -> float:
    """How far float32 soft labels may sit from the float64 oracle. A logit f.mu / tau_r is a dot
    product of `dim` float32 terms (with the centroid's own rounding, about dim + 2 roundings of at
    most one unit each, relative to |f||mu| = 1), so its error is at most e = (dim + 2) u / tau_r: up
    to 2e-5 at tau_r = 0.05, where logits reach 1/0.05 = 20. A softmax moves each p_k by at most
    p_k (|dz_k| + sum_j p_j |dz_j|) <= 2e, and q mixes p with weight lambda <= 1 whose own error
    (through delta = d / r) is of the same order: 4e in all."""
    return 4 * (dim + 2) * FLOAT32_UNIT / tau_r


def well_conditioned(features, labels, index):
    """Rows whose cluster radius is clearly above float32 noise (delta = d / r is then stable)."""
    _, radii, _ = oracles.cluster_centroids(features.numpy(), labels)
    return radii[labels[index]] > 1e-3


@settings(max_examples=25, deadline=None)
@given(problem=problems(), lam=st.floats(0.0, 1.0), tau_r=st.floats(0.05, 1.0),
       top_k=st.one_of(st.none(), st.integers(1, 6)))
def test_rows_are_distributions_matching_oracle(problem, lam, tau_r, top_k):
    features, labels = problem
    result = cmlr(features, labels, lam=lam, tau_r=tau_r, top_k=top_k)
    q = result.soft_labels
    index = np.flatnonzero(labels >= 0)
    np.testing.assert_array_equal(result.sample_index, index)  # sorted, the clustered samples
    assert q.shape == (index.size, labels.max() + 1) and q.dtype == torch.float32
    assert (q >= 0).all()
    torch.testing.assert_close(q.sum(dim=1), torch.ones(index.size), atol=1e-5, rtol=0)
    expected, oracle_index = oracles.cmlr_soft_labels(features.numpy(), labels, lam, tau_r, top_k)
    np.testing.assert_array_equal(oracle_index, index)
    good = well_conditioned(features, labels, index)
    np.testing.assert_allclose(q.numpy()[good], expected[good], atol=softmax_tolerance(features.shape[1], tau_r))
    # support: own label plus (at most) the top_k matching centroids
    if top_k is not None:
        assert ((q > 0).sum(dim=1) <= top_k + 1).all()
        logits = features[index] @ torch.from_numpy(oracles.cluster_centroids(features.numpy(), labels)[0]).float().T
        allowed = torch.zeros_like(q, dtype=torch.bool)
        allowed.scatter_(1, logits.topk(min(top_k, q.shape[1]), dim=1).indices, True)
        allowed[torch.arange(index.size), torch.as_tensor(labels[index])] = True
        assert not (q[~allowed] > 0).any()


@settings(max_examples=20, deadline=None)
@given(problem=problems(), lam=st.floats(0.0, 0.5), tau_r=st.floats(0.05, 1.0))
def test_own_label_is_the_largest_when_lam_at_most_half(problem, lam, tau_r):
    features, labels = problem
    q = cmlr(features, labels, lam=lam, tau_r=tau_r).soft_labels
    own = torch.as_tensor(labels[labels >= 0])
    own_mass = q[torch.arange(own.numel()), own]
    # q_own >= 1 - lam >= 1/2 >= every other entry; exact ties only possible at lam = 1/2
    assert (own_mass >= q.max(dim=1).values - 1e-6).all()
    if lam < 0.49:
        assert torch.equal(q.argmax(dim=1), own)


@settings(max_examples=15, deadline=None)
@given(problem=problems(), tau_r=st.floats(0.05, 1.0), top_k=st.one_of(st.none(), st.integers(1, 6)))
def test_off_gives_exact_one_hot(problem, tau_r, top_k):
    features, labels = problem
    index = labels >= 0
    onehot = F.one_hot(torch.as_tensor(labels[index]), int(labels.max()) + 1).float()
    for kwargs in ({"lam": 0.0}, {"lam": 0.7, "enabled": False}):
        result = cmlr(features, labels, tau_r=tau_r, top_k=top_k, **kwargs)
        assert torch.equal(result.soft_labels, onehot)
        assert result.mean_weight == 0.0
        np.testing.assert_array_equal(result.sample_index, np.flatnonzero(index))


@pytest.mark.parametrize("lam", [0.3, 0.5, 1.0])
def test_farthest_member_gets_weight_lam(lam):
    rng = np.random.default_rng(1)
    f = rng.normal(size=(60, 6))
    f /= np.linalg.norm(f, axis=1, keepdims=True)
    f = f.astype(np.float32)
    labels = rng.integers(0, 4, 60)
    centroids, radii, _ = oracles.cluster_centroids(f, labels)
    result = cmlr(torch.from_numpy(f), labels, lam=lam, tau_r=0.1)
    q = result.soft_labels.numpy()
    f64 = f.astype(np.float64)
    for c in range(4):
        members = np.flatnonzero(labels == c)
        far = members[np.argmax(1 - f64[members] @ centroids[c])]
        p = np.exp(centroids @ f64[far] / 0.1)
        p /= p.sum()
        expected = lam * p
        expected[c] += 1 - lam
        np.testing.assert_allclose(q[far], expected, atol=1e-5)  # delta = 1: lambda_i = lam
        assert q[far, c] < 1 - lam * (1 - p[c]) + 1e-5
    deltas = np.clip((1 - np.einsum("ij,ij->i", f64, centroids[labels])) / radii[labels], 0, 1)
    assert result.mean_weight == pytest.approx(lam * deltas.mean(), abs=1e-5)
    expected_q, _ = oracles.cmlr_soft_labels(f, labels, lam, 0.1)
    entropy = -(expected_q * np.log(np.clip(expected_q, 1e-12, None))).sum(axis=1).mean()
    assert result.mean_entropy == pytest.approx(entropy, abs=1e-4)


def test_sample_at_the_centroid_keeps_one_hot():
    """a is exactly between b and c, so mu = a and delta(a) = 0 (up to float32 rounding)."""
    rng = np.random.default_rng(2)
    a, u, v = np.linalg.qr(rng.normal(size=(8, 3)))[0].T
    theta = 0.3
    cluster0 = [a, np.cos(theta) * a + np.sin(theta) * u, np.cos(theta) * a - np.sin(theta) * u]
    cluster1 = [np.cos(0.2) * a + np.sin(0.2) * v, np.cos(0.25) * a + np.sin(0.25) * v]
    f = torch.from_numpy(np.stack(cluster0 + cluster1).astype(np.float32))
    labels = np.array([0, 0, 0, 1, 1])
    q = cmlr(f, labels, lam=1.0, tau_r=0.05).soft_labels
    torch.testing.assert_close(q[0], torch.tensor([1.0, 0.0]), atol=1e-5, rtol=0)
    # b and c are on the boundary (delta = 1), and the other centroid is close: q is far from one-hot
    assert q[1, 1] > 0.05 and q[2, 1] > 0.05


def test_zero_radius_cluster_keeps_one_hot():
    failures = []
    for seed in range(20):
        rng = np.random.default_rng(seed)
        a = rng.normal(size=16)
        a /= np.linalg.norm(a)
        b = np.cos(0.1) * a + np.sin(0.1) * np.linalg.qr(np.stack([a, rng.normal(size=16)]).T)[0][:, 1]
        # cluster 0: three copies of a; cluster 1: three copies of b, close to a (cos 0.995)
        f = torch.from_numpy(np.stack([a, a, a, b, b, b]).astype(np.float32))
        labels = np.array([0, 0, 0, 1, 1, 1])
        q = cmlr(f, labels, lam=0.5, tau_r=0.05).soft_labels
        if not torch.equal(q, F.one_hot(torch.as_tensor(labels), 2).float()):
            failures.append((seed, q[0].tolist()))
    assert not failures, f"{len(failures)} of 20 seeds, e.g. {failures[:2]}"


@pytest.mark.parametrize("enabled", [True, False])
def test_all_outliers(enabled):
    f = torch.nn.functional.normalize(torch.randn(5, 4, generator=torch.Generator().manual_seed(0)), dim=1)
    result = cmlr(f, np.full(5, -1), lam=0.5, enabled=enabled)
    assert result.soft_labels.shape == (0, 0) and result.sample_index.size == 0


def test_errors():
    f = torch.nn.functional.normalize(torch.randn(6, 4, generator=torch.Generator().manual_seed(0)), dim=1)
    labels = np.array([0, 0, 1, 1, -1, 1])
    with pytest.raises(ValueError, match="labels"):
        cmlr(f, labels[:5])
    for lam in (-0.1, 1.5):
        with pytest.raises(ValueError, match="lam"):
            cmlr(f, labels, lam=lam)
    with pytest.raises(ValueError, match="tau_r"):
        cmlr(f, labels, tau_r=0.0)


# --- the propagated and matched readings (docs/method.md section 4) ---------------------------------------


def blobs(seed, n=90, dim=8, clusters=6):
    from helpers import clustered_features

    f, _ = clustered_features(n, dim, num_clusters=clusters, spread=0.5, noise=0.05, seed=seed)
    features = torch.from_numpy(f)
    from oaecmlr import jaccard_distance, pseudo_labels

    labels = pseudo_labels(features, eps=0.5, min_samples=4, k1=15, k2=4).labels
    return features, labels, jaccard_distance(features, k1=15, k2=4)


@pytest.mark.parametrize("seed", [0, 4, 5])
@pytest.mark.parametrize("lam, radius, candidates", [(0.5, 0.2, 5), (1.0, 0.4, 3), (0.3, 0.6, 2)])
def test_propagated_equals_oracle(seed, lam, radius, candidates):
    from helpers import dense, require

    from oaecmlr.core.cmlr import propagated

    features, labels, jaccard = blobs(seed)
    require(labels.max() >= 2 and (labels == -1).any(), "the fixture needs clusters and outliers")
    result = propagated(features, labels, jaccard, lam=lam, radius=radius, candidates=candidates, min_spread=0.02)
    expected, index = oracles.propagated_soft_labels(features.numpy(), labels, dense(jaccard), lam, radius,
                                                     candidates, 0.02)
    np.testing.assert_array_equal(result.sample_index, index)
    torch.testing.assert_close(result.soft_labels.sum(dim=1), torch.ones(index.size), atol=1e-5, rtol=0)
    np.testing.assert_allclose(result.soft_labels.numpy(), expected, atol=2e-5)
    # not vacuous: neighbours were averaged and several clusters carry mass
    assert (result.soft_labels > 1e-3).sum(dim=1).float().mean() > 1.5


def test_propagated_averages_neighbours_only_within_the_radius():
    """Two tight clusters far apart: a zero radius keeps each sample's own p; any neighbour beyond
    the radius is ignored, one within it is averaged in."""
    from oaecmlr.core.cmlr import propagated

    features, labels, jaccard = blobs(3)
    alone = propagated(features, labels, jaccard, lam=1.0, radius=1e-9)
    wide = propagated(features, labels, jaccard, lam=1.0, radius=0.9)
    assert not torch.allclose(alone.soft_labels, wide.soft_labels)


@pytest.mark.parametrize("seed", [0, 1, 2])
@pytest.mark.parametrize("lam", [0.5, 1.0])
def test_matched_equals_oracle(seed, lam):
    from oaecmlr.core.cmlr import matched

    rng = np.random.default_rng(seed)
    n = 80
    previous = rng.integers(-1, 7, n)
    current = np.where(rng.random(n) < 0.7, previous, rng.integers(-1, 9, n))  # overlap, splits and merges
    for labels in (previous, current):
        labels[:9] = np.arange(9) % 7  # every cluster present
    previous_soft = rng.dirichlet(np.ones(7), size=int((previous >= 0).sum())).astype(np.float32)
    result = matched(current, previous, torch.from_numpy(previous_soft), lam=lam)
    expected, index = oracles.matched_soft_labels(current, previous, previous_soft, lam)
    np.testing.assert_array_equal(result.sample_index, index)
    np.testing.assert_allclose(result.soft_labels.numpy(), expected, atol=1e-5)
    torch.testing.assert_close(result.soft_labels.sum(dim=1), torch.ones(index.size), atol=1e-5, rtol=0)


def test_matched_first_epoch_and_identical_clusterings():
    """No previous epoch: one-hot. The same clustering twice with one-hot previous labels: one-hot
    again (each cluster matches only itself)."""
    from oaecmlr.core.cmlr import matched

    labels = np.array([0, 0, 1, 1, -1, 2, 2])
    onehot = F.one_hot(torch.as_tensor(labels[labels >= 0]), 3).float()
    assert torch.equal(matched(labels, None, None, lam=0.5).soft_labels, onehot)
    assert torch.allclose(matched(labels, labels, onehot, lam=0.5).soft_labels, onehot)


@pytest.mark.parametrize("reading", ["propagated", "matched"])
def test_new_readings_off_give_one_hot(reading):
    from oaecmlr.core.cmlr import matched, propagated

    features, labels, jaccard = blobs(0)
    onehot = F.one_hot(torch.as_tensor(labels[labels >= 0]), int(labels.max()) + 1).float()
    for kwargs in ({"lam": 0.0}, {"lam": 0.5, "enabled": False}):
        result = (propagated(features, labels, jaccard, **kwargs) if reading == "propagated"
                  else matched(labels, labels, onehot, **kwargs))
        assert torch.equal(result.soft_labels, onehot)
