"""Clustering diagnostics against scikit-learn and hand-made examples."""

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from sklearn.metrics import normalized_mutual_info_score
from sklearn.metrics.cluster import contingency_matrix

from oaecmlr.core.diagnostics import cluster_size_histogram, nmi, oae_precision, purity


def with_singletons(labels):
    out = np.asarray(labels).copy()
    outliers = out < 0
    out[outliers] = out.max(initial=-1) + 1 + np.arange(outliers.sum())
    return out


labelings = st.integers(0, 2**16).flatmap(lambda seed: st.tuples(
    st.just(seed), st.integers(1, 80), st.integers(1, 8), st.integers(1, 8)))


@settings(max_examples=25, deadline=None)
@given(params=labelings)
def test_nmi_matches_sklearn(params):
    seed, n, clusters, ids = params
    rng = np.random.default_rng(seed)
    labels = rng.integers(-1, clusters, n)
    truth = rng.integers(0, ids, n) * 7 + 100  # arbitrary identity numbers
    expected = normalized_mutual_info_score(truth, with_singletons(labels))
    assert nmi(labels, truth) == pytest.approx(expected, abs=1e-10)


@settings(max_examples=25, deadline=None)
@given(params=labelings)
def test_purity_matches_contingency(params):
    seed, n, clusters, ids = params
    rng = np.random.default_rng(seed)
    labels = rng.integers(-1, clusters, n)
    truth = rng.integers(0, ids, n)
    clustered = labels >= 0
    if not clustered.any():
        assert purity(labels, truth) == 0.0
        return
    table = contingency_matrix(labels[clustered], truth[clustered])
    assert purity(labels, truth) == pytest.approx(table.max(axis=1).sum() / clustered.sum(), abs=1e-12)


def test_purity_and_nmi_by_hand():
    labels = np.array([0, 0, 0, 1, 1, -1, -1])
    truth = np.array([5, 5, 6, 7, 7, 7, 8])
    assert purity(labels, truth) == pytest.approx(4 / 5)
    assert nmi(np.array([0, 0, 1, 1]), np.array([3, 3, 9, 9])) == pytest.approx(1.0)
    assert nmi(np.array([0, 1, 0, 1]), np.array([3, 3, 9, 9])) == pytest.approx(0.0, abs=1e-12)
    # outliers are singletons: a perfect split with every sample an outlier vs unique ids is 1
    assert nmi(np.full(4, -1), np.arange(4)) == pytest.approx(1.0)
    assert purity(np.full(4, -1), np.arange(4)) == 0.0


def test_oae_precision_by_hand():
    # clusters before OAE: 0 = {a, a, b} (majority a), 1 = {c, c} (majority c)
    truth = np.array([1, 1, 2, 3, 3, 1, 3, 2, 1, 4])
    before = np.array([0, 0, 0, 1, 1, -1, -1, -1, -1, -1])
    after = np.array([0, 0, 0, 1, 1, 0, 1, 0, 1, -1])
    # assigned: 5 (id 1 -> cluster 0, right), 6 (3 -> 1, right), 7 (2 -> 0, wrong), 8 (1 -> 1, wrong)
    assert oae_precision(before, after, truth) == pytest.approx(0.5)
    assert oae_precision(before, before, truth) is None
    only_right = after.copy()
    only_right[[7, 8]] = -1
    assert oae_precision(before, only_right, truth) == 1.0


def test_oae_precision_majority_uses_clusters_before_oae():
    """Three outliers of identity 2 join cluster 0 (majority identity 1 before OAE, 2 after)."""
    truth = np.array([1, 1, 2, 2, 2, 2])
    before = np.array([0, 0, 0, -1, -1, -1])
    after = np.array([0, 0, 0, 0, 0, 0])
    assert oae_precision(before, after, truth) == 0.0


def test_cluster_size_histogram():
    sizes = [1, 2, 3, 3, 4, 7, 8, 15, 16, 40, 64, 127, 128, 300]
    labels = np.concatenate([np.full(s, c) for c, s in enumerate(sizes)] + [np.full(5, -1)])
    np.random.default_rng(0).shuffle(labels)
    hist = cluster_size_histogram(labels)
    assert hist == {"1": 1, "2-3": 3, "4-7": 2, "8-15": 2, "16-31": 1, "32-63": 1, "64-127": 2, ">=128": 2}
    assert sum(hist.values()) == len(sizes)
    assert cluster_size_histogram(np.full(10, -1)) == dict.fromkeys(hist, 0)
    # unused label numbers (empty clusters) are not counted
    assert sum(cluster_size_histogram(np.array([0, 0, 5, 5, 5])).values()) == 2
    custom = cluster_size_histogram(np.array([0, 0, 1, 1, 1, 1, 2]), edges=(1, 3, 10))
    assert custom == {"1-2": 2, "3-9": 1, ">=10": 0}


def test_camera_spread():
    from oaecmlr.core.diagnostics import camera_spread

    labels = np.array([0, 0, 1, 1, 2, -1, 2])
    camids = np.array([0, 1, 0, 0, 1, 0, 1])
    spread = camera_spread(labels, camids)
    assert spread["cross_camera"] == pytest.approx(1 / 3)  # cluster 0 only
    assert spread["cameras_per_cluster"] == pytest.approx(4 / 3)
    assert spread["cross_camera_images"] == pytest.approx(2 / 6)
    assert camera_spread(np.full(3, -1), np.zeros(3))["cross_camera"] == 0.0


# --- OAE and CMLR diagnostics (docs/method.md sections 3 and 4, Logged) ------------------------------------


def brute_majority(labels, truth, cluster):
    ids, counts = np.unique(truth[labels == cluster], return_counts=True)
    return ids[np.argmax(counts)]  # the smallest identity on ties


@settings(max_examples=30, deadline=None)
@given(seed=st.integers(0, 2**16))
def test_oae_diagnostics_by_brute_force(seed):
    from oaecmlr.core.diagnostics import oae_diagnostics

    rng = np.random.default_rng(seed)
    n = 60
    before = rng.integers(-1, 5, n)
    before[:5] = np.arange(5)
    truth, camids = rng.integers(0, 6, n) + 10, rng.integers(0, 3, n)
    after, anchors = before.copy(), np.full(n, -1)
    for o in np.flatnonzero(before < 0):
        if rng.random() < 0.6:
            j = rng.choice(np.flatnonzero(before >= 0))
            after[o], anchors[o] = before[j], j
    got = oae_diagnostics(before, after, anchors, truth, camids)
    outliers = [o for o in range(n) if before[o] < 0]
    assigned = [o for o in outliers if after[o] >= 0]
    majorities = {brute_majority(before, truth, c) for c in range(5)}
    expected = {
        "oae_pairwise_precision": np.mean([truth[o] == truth[anchors[o]] for o in assigned]) if assigned else None,
        "oae_precision": np.mean([truth[o] == brute_majority(before, truth, after[o]) for o in assigned]) if assigned else None,
        "oae_ceiling": np.mean([truth[o] in majorities for o in outliers]) if outliers else None,
        "oae_same_camera": np.mean([camids[o] == camids[anchors[o]] for o in assigned]) if assigned else None,
        "oae_assigned_share": len(assigned) / len(outliers) if outliers else None,
    }
    assert got.keys() == expected.keys()
    for key, value in expected.items():
        assert got[key] == (None if value is None else pytest.approx(value)), key


@settings(max_examples=30, deadline=None)
@given(seed=st.integers(0, 2**16))
def test_auroc_matches_sklearn(seed):
    from sklearn.metrics import roc_auc_score

    from oaecmlr.core.diagnostics import auroc

    rng = np.random.default_rng(seed)
    scores = rng.integers(0, 6, 40) / 5  # many ties
    positives = rng.random(40) < 0.3
    if positives.all() or not positives.any():
        assert auroc(scores, positives) is None
    else:
        assert auroc(scores, positives) == pytest.approx(roc_auc_score(positives, scores))


def test_cmlr_diagnostics_by_brute_force():
    from oaecmlr.core.diagnostics import cmlr_diagnostics

    rng = np.random.default_rng(3)
    n, clusters = 50, 4
    labels = rng.integers(-1, clusters, n)
    labels[:clusters] = np.arange(clusters)
    truth = rng.integers(0, 5, n)
    index = np.flatnonzero(labels >= 0)
    soft = rng.dirichlet(np.ones(clusters), size=index.size)
    prediction = rng.dirichlet(np.ones(clusters), size=index.size)
    got = cmlr_diagnostics(soft, index, labels, truth, prediction)
    majority = [brute_majority(labels, truth, c) for c in range(clusters)]
    clean_mass, wrong_mass, kl, own, wrong = [], [], [], [], []
    for r, i in enumerate(index):
        mass = sum(soft[r, c] for c in range(clusters) if majority[c] == truth[i])
        is_wrong = majority[labels[i]] != truth[i]
        (wrong_mass if is_wrong else clean_mass).append(mass)
        kl.append(sum(q * np.log(q / p) for q, p in zip(soft[r], prediction[r])))
        own.append(soft[r, labels[i]])
        wrong.append(is_wrong)
    from sklearn.metrics import roc_auc_score

    assert got["cmlr_mass_clean"] == pytest.approx(np.mean(clean_mass))
    assert got["cmlr_mass_mislabelled"] == pytest.approx(np.mean(wrong_mass))
    assert got["cmlr_kl"] == pytest.approx(np.mean(kl))
    assert got["cmlr_auroc"] == pytest.approx(roc_auc_score(wrong, 1 - np.asarray(own)))
    assert got["cmlr_mislabelled"] == pytest.approx(np.mean(wrong))
    # one-hot targets: mass 1 for clean samples, 0 for mislabelled ones, and an uninformative AUROC
    onehot = np.eye(clusters)[labels[index]]
    plain = cmlr_diagnostics(onehot, index, labels, truth, prediction)
    assert (plain["cmlr_mass_clean"], plain["cmlr_mass_mislabelled"], plain["cmlr_auroc"]) == (1.0, 0.0, 0.5)
