"""OAE against a brute-force oracle of constraints A and B (docs/method.md section 3), plus properties."""

import numpy as np
import oracles
import pytest
import scipy.sparse as sp
import torch
from helpers import clustered_features, exact_ranking, require, sklearn_dbscan
from hypothesis import given, settings
from hypothesis import strategies as st

from oaecmlr import jaccard_distance, oae, pseudo_labels
from oaecmlr.core.knn import knn

K1 = 20


def make_case(n, dim, spread, noise, clusters, seed, eps):
    """Features, reference labels (scikit-learn on the dense oracle Jaccard), the dense oracle, its
    ranked lists, and what the core gets: the sparse Jaccard (all d < 1) and kNN lists."""
    f, _ = clustered_features(n, dim, num_clusters=clusters, spread=spread, noise=noise, seed=seed)
    dense = oracles.dense_jaccard(f, K1, 6)
    features = torch.from_numpy(f)
    return {
        "f": f, "features": features, "dense": dense, "ranked": exact_ranking(f, K1),
        "labels": sklearn_dbscan(dense, eps, 4),
        "jaccard": jaccard_distance(features, k1=K1, k2=6), "neighbours": knn(features, K1).index,
    }


@pytest.fixture(scope="module")
def cases():
    """Blobs whose tails DBSCAN (eps 0.4) leaves out: many outliers next to clusters."""
    return [make_case(300, 16, 1.0, 0.0, 10, 0, 0.4), make_case(250, 8, 0.8, 0.02, 10, 3, 0.4)]


def run(case, labels=None, **kwargs):
    labels = case["labels"] if labels is None else labels
    return oae(case["features"], labels, case["jaccard"], case["neighbours"], **kwargs)


def oracle(case, labels=None, k=5, rho=1.0, rounds=1, min_samples=4, **rule):
    labels = case["labels"] if labels is None else labels
    return oracles.oae_rounds(case["f"], case["dense"], case["ranked"], labels, k, rho, rounds, min_samples, **rule)


def assert_no_near_ties(case, labels=None):
    """Precondition for exact comparisons: no outlier has two nearest clustered samples closer
    than float32 can tell apart without being exactly tied (exact ties go to the cosine)."""
    labels = case["labels"] if labels is None else labels
    clustered = labels >= 0
    for o in np.flatnonzero(~clustered):
        best = np.sort(case["dense"][o, clustered])[:2]
        assert best[0] >= 1 - 1e-6 or not 1e-9 < best[1] - best[0] < 1e-5


def test_fixture_is_non_trivial(cases):
    for case in cases:
        labels = case["labels"]
        assert (labels == -1).sum() >= 40 and labels.max() >= 8
        assert_no_near_ties(case)
        assert sum(oracle(case, rho=1.0)[1]) >= 1 and sum(oracle(case, rho=3.0)[1]) >= 10


@pytest.mark.parametrize("rho", [1.0, 1.5, 2.0, 3.0])
@pytest.mark.parametrize("k, min_samples", [(5, 4), (3, 4), (10, 12)])
def test_one_round_equals_oracle(cases, rho, k, min_samples):
    for case in cases:
        expected, per_round, gaps = oracle(case, k=k, rho=rho, min_samples=min_samples)
        assert min(gaps.values(), default=1) > 1e-5  # no outlier on the B boundary
        result = run(case, k=k, rho=rho, min_samples=min_samples)
        np.testing.assert_array_equal(result.labels, expected)
        assert result.assigned == sum(per_round)
        assert result.assigned_per_round == per_round
        assert result.passed_centroid == result.assigned


def test_one_round_assigns_outliers(cases):
    """The comparisons above are not vacuous."""
    assigned = [run(case, rho=rho).assigned for case in cases for rho in (1.0, 3.0)]
    assert min(assigned) >= 1 and max(assigned) >= 20


@pytest.mark.parametrize("rho, rounds", [(1.0, 3), (2.0, 2), (2.0, 5)])
def test_several_rounds_equal_oracle(cases, rho, rounds):
    for case in cases:
        expected, per_round, gaps = oracle(case, rho=rho, rounds=rounds)
        assert min(gaps.values(), default=1) > 1e-5
        result = run(case, rho=rho, rounds=rounds)
        np.testing.assert_array_equal(result.labels, expected)
        assert result.assigned_per_round == per_round


@pytest.mark.parametrize("kwargs", [{"rho": 0.0}, {"enabled": False}, {"rounds": 0}, {"rho": 0.0, "rounds": 3}])
def test_off_returns_labels_exactly(cases, kwargs):
    case = cases[0]
    labels = case["labels"].copy()
    result = run(case, labels=labels, **{"rho": 3.0, **kwargs})
    assert np.array_equal(result.labels, labels)
    assert result.labels.dtype == np.int64
    assert not np.shares_memory(result.labels, labels)
    result.labels[:] = 7
    np.testing.assert_array_equal(labels, case["labels"])  # a copy: the input is untouched
    outliers = int((labels == -1).sum())
    assert (result.outliers_before, result.outliers_after, result.assigned) == (outliers, outliers, 0)


def test_input_labels_not_modified(cases):
    case = cases[0]
    labels = case["labels"].copy()
    result = run(case, labels=labels, rho=3.0)
    np.testing.assert_array_equal(labels, case["labels"])
    assert result.assigned > 0


@settings(max_examples=25, deadline=None)
@given(which=st.integers(0, 1), rho=st.floats(0.0, 4.0), k=st.integers(1, 12), rounds=st.integers(1, 3),
       min_samples=st.integers(1, 12))
def test_property_equals_oracle(cases, which, rho, k, rounds, min_samples):
    case = cases[which]
    labels = case["labels"]
    result = run(case, k=k, rho=rho, rounds=rounds, min_samples=min_samples)
    changed = result.labels != labels
    assert (labels[changed] == -1).all()  # only outliers change...
    assert (result.labels[changed] >= 0).all() and (result.labels <= labels.max()).all()
    np.testing.assert_array_equal(result.labels[labels >= 0], labels[labels >= 0])  # ...clusters never
    # statistics
    assert result.outliers_before == (labels == -1).sum()
    assert result.outliers_after == (result.labels == -1).sum()
    assert result.outliers_before - result.outliers_after == result.assigned == sum(result.assigned_per_round)
    assert result.passed_centroid <= result.passed_neighbourhood
    if rounds == 1 and rho > 0:
        assert result.passed_centroid == result.assigned
    # every assignment satisfies A and B, round by round (brute force)
    expected, per_round, gaps = oracle(case, k=k, rho=rho, rounds=rounds, min_samples=min_samples)
    if rho > 0 and min(gaps.values(), default=1) > 1e-5:
        np.testing.assert_array_equal(result.labels, expected)
        assert [x for x in result.assigned_per_round if x] == [x for x in per_round if x]


@settings(max_examples=15, deadline=None)
@given(which=st.integers(0, 1), rhos=st.lists(st.floats(0.0, 4.0), min_size=2, max_size=2, unique=True),
       k=st.integers(1, 10))
def test_larger_rho_assigns_a_superset(cases, which, rhos, k):
    low, high = sorted(rhos)
    a = run(cases[which], rho=low, k=k).labels
    b = run(cases[which], rho=high, k=k).labels
    assigned_low = a >= 0
    assert (b[assigned_low] == a[assigned_low]).all()  # same cluster, and never dropped
    assert (b >= 0).sum() >= (a >= 0).sum()


def test_small_clusters_take_no_outliers(cases):
    case = cases[0]
    labels = case["labels"].copy()
    # Shrink two clusters to 3 members each (their other members become outliers).
    small = [0, 1]
    for c in small:
        members = np.flatnonzero(labels == c)
        labels[members[3:]] = -1
    open_to_all = run(case, labels=labels, rho=3.0, min_samples=1).labels
    joined = (labels == -1) & np.isin(open_to_all, small)
    assert joined.sum() >= 2  # with min_samples=1 the small clusters do take outliers
    for min_samples in (4, 10):
        result = run(case, labels=labels, rho=3.0, min_samples=min_samples).labels
        for c in small:
            np.testing.assert_array_equal(result == c, labels == c)
        expected, _, gaps = oracle(case, labels=labels, rho=3.0, min_samples=min_samples)
        np.testing.assert_array_equal(result, expected)


def test_pipeline_full_rows_gives_the_same_result(cases):
    """OAE as the engine feeds it: pseudo_labels, then full_rows of the outliers."""
    case = cases[0]
    pl = pseudo_labels(case["features"], eps=0.45, min_samples=4, k1=K1, k2=6)
    outliers = np.flatnonzero(pl.labels == -1)
    assert outliers.size >= 10
    a = oae(case["features"], pl.labels, pl.full_rows(outliers), pl.neighbours, rho=2.0)
    b = oae(case["features"], pl.labels, case["jaccard"], case["neighbours"], rho=2.0)
    np.testing.assert_array_equal(a.labels, b.labels)
    assert a.assigned >= 1


def test_all_outliers_or_none(cases):
    case = cases[0]
    n = case["f"].shape[0]
    none = run(case, labels=np.full(n, -1), rho=3.0)
    assert (none.labels == -1).all() and none.assigned == 0
    full = run(case, labels=np.zeros(n, dtype=np.int64), rho=3.0)
    assert (full.labels == 0).all() and full.outliers_before == 0


def test_jaccard_ties_within_float32_rounding_broken_by_cosine():
    """Outlier 10 (0.65 rad) sits between cluster 0 (-0.3..0.3 rad) and cluster 1 (0.9..1.5 rad),
    nearer to cluster 1 by cosine (sample 5 at 0.9 vs sample 4 at 0.3). Its Jaccard distances to 4 (cluster 0) and 5 (cluster 1) are both 2/3, as
    float32 may produce them: one ulp below and at float32(2/3). Cosine must decide: cluster 1.

    Seen on pipeline output: clustered_features(300, 32, num_clusters=8, spread=0.6, noise=0.15,
    seed=0), labels = DBSCAN(oracle Jaccard, eps=0.6, min_samples=4), rho=2: outlier 115 has
    d = 2/3 (exactly, s = 0.5) to 90 (cluster 1, cosine distance 0.444) and to 72 (cluster 2,
    0.599); the float32 values were 0.66666675 and 0.6666666, so 115 joined cluster 2."""
    angles = np.array([-0.3, -0.15, 0.0, 0.15, 0.3, 0.9, 1.05, 1.2, 1.35, 1.5, 0.65])
    f = np.stack([np.cos(angles), np.sin(angles), np.zeros_like(angles)], axis=1).astype(np.float32)
    labels = np.array([0, 0, 0, 0, 0, 1, 1, 1, 1, 1, -1])
    two_thirds = np.float32(2 / 3)
    below = np.nextafter(two_thirds, np.float32(0))
    rows = [10, 10, 10] + list(range(10))
    cols = [4, 5, 10] + list(range(10))
    values = [below, two_thirds, 0.0] + [0.0] * 10
    jaccard = sp.csr_matrix((np.asarray(values, np.float32), (rows, cols)), shape=(11, 11))
    neighbours = exact_ranking(f, 11)  # k = 10 covers everyone: A holds for both candidates
    result = oae(torch.from_numpy(f), labels, jaccard, neighbours, k=10, rho=10.0)
    require(result.assigned == 1, "B should hold for both clusters")  # only the choice of j* matters
    assert result.labels[10] == 1


def test_errors(cases):
    case = cases[0]
    f, labels = case["features"], case["labels"]
    with pytest.raises(ValueError, match="disagree"):
        oae(f[:-1], labels, case["jaccard"], case["neighbours"])
    with pytest.raises(ValueError, match="disagree"):
        oae(f, labels[:-1], case["jaccard"], case["neighbours"])
    with pytest.raises(ValueError, match="rho"):
        oae(f, labels, case["jaccard"], case["neighbours"], rho=-0.5)
    with pytest.raises(ValueError, match="k >= 1"):
        oae(f, labels, case["jaccard"], case["neighbours"], k=0)
    with pytest.raises(ValueError, match="rounds"):
        oae(f, labels, case["jaccard"], case["neighbours"], rounds=-1)


# --- the support rule and the camera shift (docs/method.md section 3) ---------------------------------


def cameras(case, count=3, seed=7):
    return np.random.default_rng(seed).integers(0, count, case["f"].shape[0])


@pytest.mark.parametrize("support, support_k", [(1, 10), (2, 10), (3, 10), (2, 5)])
@pytest.mark.parametrize("rho, rounds", [(1.0, 1), (3.0, 1), (3.0, 3)])
def test_support_rule_equals_oracle(cases, support, support_k, rho, rounds):
    for case in cases:
        expected, per_round, gaps = oracle(case, rho=rho, rounds=rounds, rule="support", support=support,
                                           support_k=support_k)
        assert min(gaps.values(), default=1) > 1e-5
        result = run(case, rho=rho, rounds=rounds, rule="support", support=support, support_k=support_k)
        np.testing.assert_array_equal(result.labels, expected)
        assert result.assigned_per_round == per_round


def test_support_rule_is_stricter_and_not_vacuous(cases):
    """It assigns a subset of what the nearest rule assigns in one round, yet something."""
    kept = refused = 0
    for case in cases:
        nearest = run(case, rho=3.0).labels
        support = run(case, rho=3.0, rule="support").labels
        joined = support != case["labels"]
        assert (support[joined] == nearest[joined]).all()
        kept += joined.sum()
        refused += ((nearest != case["labels"]) & ~joined).sum()
    assert kept >= 5 and refused >= 5


@pytest.mark.parametrize("shift", [0.05, 0.2, 0.5])
@pytest.mark.parametrize("rule", ["nearest", "support"])
def test_camera_shift_equals_oracle(cases, shift, rule):
    for case in cases:
        camids = cameras(case)
        expected, per_round, gaps = oracle(case, rho=3.0, rounds=2, rule=rule, camids=camids, shift=shift)
        assert min(gaps.values(), default=1) > 1e-5
        result = run(case, rho=3.0, rounds=2, rule=rule, camids=camids, camera_shift=shift)
        np.testing.assert_array_equal(result.labels, expected)


def test_camera_shift_changes_choices_and_zero_is_today(cases):
    case = cases[0]
    camids = cameras(case)
    today = run(case, rho=3.0)
    np.testing.assert_array_equal(run(case, rho=3.0, camids=camids, camera_shift=0.0).labels, today.labels)
    shifted = run(case, rho=3.0, camids=camids, camera_shift=0.3)
    assigned = shifted.anchors >= 0
    assert not np.array_equal(shifted.labels, today.labels)
    # it favours other-camera anchors
    same_today = (camids[today.anchors[today.anchors >= 0]] == camids[today.anchors >= 0]).mean()
    same_shifted = (camids[shifted.anchors[assigned]] == camids[assigned]).mean()
    assert same_shifted < same_today


def test_anchors_are_the_assigned_outliers_nearest_clustered_instances(cases):
    for case in cases:
        result = run(case, rho=3.0, rounds=2)
        assigned = (case["labels"] == -1) & (result.labels >= 0)
        np.testing.assert_array_equal(result.anchors >= 0, assigned)
        np.testing.assert_array_equal(result.labels[result.anchors[assigned]], result.labels[assigned])


def test_camera_shift_schedule_is_castors_sigmoid():
    from oaecmlr.core.oae import camera_shift_at

    values = [camera_shift_at(e, 50, start=0.1) for e in range(1, 51)]
    assert values[0] == pytest.approx(0.1)
    assert all(a > b for a, b in zip(values, values[1:]))  # falls every epoch
    assert values[-1] < 0.1 * 2e-4  # towards 0 by the last epoch
    p = 24 / 50  # epoch 25: 0.1 * (1 - tanh(5 p)) written as CASTOR does
    assert values[24] == pytest.approx(0.1 * (2 - 2 / (1 + np.exp(-10 * p))))


def test_rule_errors(cases):
    case = cases[0]
    with pytest.raises(ValueError, match="rule"):
        run(case, rule="vote")
    with pytest.raises(ValueError, match="support"):
        run(case, rule="support", support=11, support_k=10)
    with pytest.raises(ValueError, match="camera"):
        run(case, camera_shift=0.1)  # no cameras
