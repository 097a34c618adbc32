"""Market-1501 evaluation against the per-query torchreid loop (docs/method.md section 5)."""

import numpy as np
import oracles
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from oaecmlr import evaluate_rank


def random_split(seed, num_q, num_g, num_ids=6, num_cams=3, ties=False):
    rng = np.random.default_rng(seed)
    if ties:  # few distinct distances: the stable (index) order decides
        dist = rng.integers(0, 4, (num_q, num_g)).astype(np.float32)
    else:
        dist = rng.random((num_q, num_g)).astype(np.float32)
    return (dist, rng.integers(0, num_ids, num_q), rng.integers(0, num_ids, num_g),
            rng.integers(0, num_cams, num_q), rng.integers(0, num_cams, num_g))


def valid_queries(dist, q_pids, g_pids, q_cams, g_cams):
    match = q_pids[:, None] == g_pids[None, :]
    return (match & ~(q_cams[:, None] == g_cams[None, :])).any(axis=1)


def assert_matches_oracle(args, max_rank):
    result = evaluate_rank(*args, max_rank=max_rank)
    valid = valid_queries(*args)
    assert result["num_valid_queries"] == valid.sum()
    assert result["num_skipped_queries"] == (~valid).sum()
    ap, inp, _, skipped = oracles.loop_evaluate(*args, max_rank=1)  # its CMC needs long lists
    assert skipped == (~valid).sum()
    assert result["mAP"] == pytest.approx(ap, abs=1e-6)
    assert result["mINP"] == pytest.approx(inp, abs=1e-6)
    assert result["cmc"].shape == (min(max_rank, args[0].shape[1]),)
    np.testing.assert_allclose(result["cmc"], oracles.loop_cmc(*args, max_rank=max_rank), atol=1e-12)
    for key in ("mAP", "mINP"):
        assert 0 <= result[key] <= 1
    assert ((0 <= result["cmc"]) & (result["cmc"] <= 1)).all() and (np.diff(result["cmc"]) >= 0).all()
    return result


@pytest.mark.parametrize("ties", [False, True])
@pytest.mark.parametrize("num_q, num_g, max_rank", [(30, 200, 50), (50, 120, 10), (20, 15, 50), (40, 60, 1)])
def test_matches_loop(num_q, num_g, max_rank, ties):
    args = random_split(num_q * num_g, num_q, num_g, ties=ties)
    assert valid_queries(*args).sum() > 0
    result = assert_matches_oracle(args, max_rank)
    if num_g >= 100:  # every kept list is longer than max_rank: the plain loop's CMC applies
        np.testing.assert_allclose(result["cmc"], oracles.loop_evaluate(*args, max_rank=max_rank)[2], atol=1e-12)


def test_skipped_queries_are_counted():
    dist, q_pids, g_pids, q_cams, g_cams = random_split(1, 20, 80)
    q_pids[:5] = 99  # no such identity in the gallery
    g_cams[g_pids == q_pids[6]] = q_cams[6]  # query 6's identity only seen by its own camera
    args = (dist, q_pids, g_pids, q_cams, g_cams)
    result = assert_matches_oracle(args, 50)
    assert result["num_skipped_queries"] >= 6 and result["num_valid_queries"] >= 5


@settings(max_examples=30, deadline=None)
@given(seed=st.integers(0, 2**16), num_q=st.integers(1, 25), num_g=st.integers(1, 60),
       max_rank=st.integers(1, 60), ties=st.booleans(), num_ids=st.integers(1, 6), num_cams=st.integers(1, 4))
def test_property_matches_loop(seed, num_q, num_g, max_rank, ties, num_ids, num_cams):
    args = random_split(seed, num_q, num_g, num_ids, num_cams, ties)
    if not valid_queries(*args).any():
        with pytest.raises(ValueError, match="no query"):
            evaluate_rank(*args, max_rank=max_rank)
        return
    assert_matches_oracle(args, max_rank)


def test_perfect_ranking():
    rng = np.random.default_rng(3)
    q_pids, g_pids = rng.integers(0, 8, 30), rng.integers(0, 8, 100)
    q_cams, g_cams = np.zeros(30, int), np.ones(100, int)
    dist = (q_pids[:, None] != g_pids[None, :]).astype(np.float32) + rng.random((30, 100)).astype(np.float32) * 0.5
    result = evaluate_rank(dist, q_pids, g_pids, q_cams, g_cams)
    valid = np.isin(q_pids, g_pids)
    assert result["mAP"] == 1.0 and result["mINP"] == 1.0
    assert (result["cmc"] == 1).all() and result["num_valid_queries"] == valid.sum()
    worst = evaluate_rank(-dist, q_pids, g_pids, q_cams, g_cams)  # true matches ranked last
    assert worst["mAP"] < 0.5 and worst["cmc"][0] == 0


def test_same_camera_matches_are_removed():
    """The only gallery image ranked before the true match is the same identity from the same
    camera: it is junk, so the true match counts as rank 1."""
    dist = np.array([[0.1, 0.2, 0.3]], np.float32)
    result = evaluate_rank(dist, np.array([1]), np.array([1, 1, 2]), np.array([0]), np.array([0, 1, 1]), max_rank=3)
    assert result["mAP"] == 1.0 and result["mINP"] == 1.0
    np.testing.assert_array_equal(result["cmc"], [1, 1, 1])
    # without the camera rule the junk image would be a (rank-1) true match of a 2-match query
    other_cam = evaluate_rank(dist, np.array([1]), np.array([1, 1, 2]), np.array([5]), np.array([0, 1, 1]))
    assert other_cam["mAP"] == 1.0 and other_cam["mINP"] == 1.0
    late = evaluate_rank(np.array([[0.1, 0.3, 0.2]], np.float32), np.array([1]), np.array([1, 1, 2]),
                         np.array([0]), np.array([0, 1, 1]), max_rank=3)
    assert late["mAP"] == 0.5 and late["mINP"] == 0.5
    np.testing.assert_array_equal(late["cmc"], [0, 1, 1])


def test_accepts_torch_tensors():
    args = random_split(5, 10, 40)
    a = evaluate_rank(*args)
    b = evaluate_rank(*(torch.as_tensor(x) for x in args))
    assert a["mAP"] == b["mAP"] and a["mINP"] == b["mINP"]
    np.testing.assert_array_equal(a["cmc"], b["cmc"])


@pytest.mark.parametrize("name, position", [("q_pids", 1), ("g_pids", 2), ("q_camids", 3), ("g_camids", 4)])
def test_mismatched_lengths_name_the_argument(name, position):
    args = list(random_split(6, 10, 40))
    args[position] = args[position][:-1]
    with pytest.raises(ValueError, match=name):
        evaluate_rank(*args)


def test_errors():
    dist, q_pids, g_pids, q_cams, g_cams = random_split(7, 10, 40)
    with pytest.raises(ValueError, match="no query"):
        evaluate_rank(dist, q_pids + 100, g_pids, q_cams, g_cams)  # no true match anywhere
    with pytest.raises(ValueError, match="no query"):  # matches exist only from the same camera
        evaluate_rank(dist, np.zeros(10, int), np.zeros(40, int), np.zeros(10, int), np.zeros(40, int))
    with pytest.raises(ValueError, match="2-D"):
        evaluate_rank(dist[0], q_pids[:1], g_pids, q_cams[:1], g_cams)
    with pytest.raises(ValueError, match="1-D"):
        evaluate_rank(dist, q_pids[:, None], g_pids, q_cams, g_cams)
    bad = dist.copy()
    bad[2, 3] = np.nan
    with pytest.raises(ValueError, match="NaN"):
        evaluate_rank(bad, q_pids, g_pids, q_cams, g_cams)
    with pytest.raises(ValueError, match="nothing to evaluate"):
        evaluate_rank(np.zeros((0, 40), np.float32), q_pids[:0], g_pids, q_cams[:0], g_cams)
