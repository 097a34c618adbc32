import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from oaecmlr.data.sampler import PKSampler, SupervisedPKSampler, batched_indices


def check_block(block, labels, cams, k):
    """One identity's K indices against the documented rule (oracle by brute force)."""
    a, rest = block[0], list(block[1:])
    members = np.flatnonzero(labels == labels[a])
    assert set(block) <= set(members.tolist())
    n_other = int((cams[members] != cams[a]).sum())
    n_distinct = min(k - 1, len(members) - 1)
    head = rest[:n_distinct]
    assert len(set(head)) == n_distinct and a not in head  # distinct images first
    m_other = min(k - 1, n_other)
    assert all(cams[i] != cams[a] for i in head[:m_other])  # other cameras preferred
    assert all(cams[i] == cams[a] for i in head[m_other:])


def check_epoch(s, labels, cams, p, k):
    b = s.batches()
    assert b.shape == (len(s), p * k)
    assert (labels[b] >= 0).all()
    for row in b:
        blocks = row.reshape(p, k)
        ids = labels[blocks]
        assert (ids == ids[:, :1]).all()
        if s.num_groups >= p:
            assert len(set(ids[:, 0].tolist())) == p
        for blk in blocks:
            check_block(blk, labels, cams, k)
    return b


def dataset(n=600, ids=40, cams=6, seed=0):
    rng = np.random.default_rng(seed)
    return rng.integers(-1, ids, n), rng.integers(0, cams, n)


def test_pk_batches_and_camera_preference():
    labels, cams = dataset()
    s = PKSampler(labels, cams, num_instances=4, num_ids=8, num_iterations=30, seed=1)
    assert len(s) == 30
    check_epoch(s, labels, cams, 8, 4)


def test_iteration_yields_batches():
    labels, cams = dataset()
    s = PKSampler(labels, cams, 4, 8, 5)
    assert np.array_equal(np.stack(list(s)), s.batches())


def test_identities_used_equally():
    labels, cams = dataset(ids=37)
    b = PKSampler(labels, cams, 2, 8, 50).batches()
    counts = np.bincount(labels[b[:, ::2]].ravel(), minlength=37)
    assert counts.max() - counts.min() <= 1


def test_determinism_seed_epoch():
    labels, cams = dataset()
    a = PKSampler(labels, cams, 4, 8, 10, seed=3, epoch=2).batches()
    assert np.array_equal(a, PKSampler(labels, cams, 4, 8, 10, seed=3, epoch=2).batches())
    assert not np.array_equal(a, PKSampler(labels, cams, 4, 8, 10, seed=3, epoch=3).batches())
    assert not np.array_equal(a, PKSampler(labels, cams, 4, 8, 10, seed=4, epoch=2).batches())


def test_rank_slices_concatenate():
    labels, cams = dataset()
    full = PKSampler(labels, cams, 4, 8, 10, seed=5).batches()
    parts = [PKSampler(labels, cams, 4, 8, 10, seed=5, rank=r, world_size=2).batches() for r in range(2)]
    assert np.array_equal(np.concatenate(parts, 1), full)
    with pytest.raises(ValueError, match="divisible"):
        PKSampler(labels, cams, 4, 6, 10, world_size=4)


def test_small_identities_still_give_k():
    labels = np.array([0, 1, 1, 2, 2, 2, -1, -1])
    cams = np.array([0, 0, 1, 0, 0, 0, 1, 1])
    s = PKSampler(labels, cams, num_instances=5, num_ids=3, num_iterations=4)
    b = check_epoch(s, labels, cams, 3, 5)
    assert not np.isin(b, [6, 7]).any()


def test_fewer_ids_than_p_and_empty():
    labels, cams = np.array([0, 0, 1, 1, 2]), np.zeros(5, int)
    assert PKSampler(labels, cams, 2, 16, 3).batches().shape == (3, 6)  # all 3 identities
    assert PKSampler(labels, cams, 2, 16, 3, world_size=2).batches().shape == (3, 2)  # 2 of 3, 1 per rank
    empty = PKSampler(-np.ones(5, int), cams, 2, 16, 3)
    assert len(empty) == 0 and list(empty) == []


def test_supervised_alias():
    assert SupervisedPKSampler is PKSampler


@settings(max_examples=60, deadline=None)
@given(
    n=st.integers(1, 80),
    n_ids=st.integers(1, 12),
    n_cams=st.integers(1, 4),
    k=st.integers(1, 6),
    p=st.integers(1, 6),
    seed=st.integers(0, 10**6),
)
def test_property_random_labels(n, n_ids, n_cams, k, p, seed):
    rng = np.random.default_rng(seed)
    labels = rng.integers(-1, n_ids, n)
    cams = rng.integers(0, n_cams, n)
    s = PKSampler(labels, cams, num_instances=k, num_ids=p, num_iterations=3, seed=seed)
    c = len(np.unique(labels[labels >= 0]))
    if c == 0:
        assert len(s) == 0
        return
    check_epoch(s, labels, cams, min(p, c), k)


@pytest.mark.parametrize("n,bs,ws", [(0, 4, 1), (10, 3, 1), (10, 3, 3), (7, 2, 4), (3, 5, 5)])
def test_batched_indices_cover_once_in_order(n, bs, ws):
    got = []
    for r in range(ws):
        batches = batched_indices(n, bs, r, ws)
        assert all(0 < len(b) <= bs for b in batches)
        got += [i for b in batches for i in b]
    assert got == list(range(n))


def test_global_batches_are_the_ranks_slices_side_by_side():
    rng = np.random.default_rng(3)
    labels, camids = rng.integers(-1, 40, 600), rng.integers(0, 4, 600)
    args = dict(num_instances=4, num_ids=8, num_iterations=5, seed=1, epoch=2, world_size=2)
    glob = PKSampler(labels, camids, rank=0, **args).global_batches()
    ranks = [PKSampler(labels, camids, rank=r, **args).batches() for r in range(2)]
    assert np.array_equal(glob, np.concatenate(ranks, axis=1))
