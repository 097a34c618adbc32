import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from oaecmlr.data.sampler import RULES, PKSampler


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
    s = PKSampler(labels, cams, num_instances=4, num_ids=8, num_iterations=30, seed=1, rule="distinct")
    assert len(s) == 30
    check_epoch(s, labels, cams, 8, 4)


@pytest.mark.parametrize("rule", RULES)
def test_iteration_yields_batches(rule):
    labels, cams = dataset()
    s = PKSampler(labels, cams, 4, 8, 5, rule=rule)
    assert np.array_equal(np.stack(list(s)), s.batches())


def test_identities_used_equally():
    labels, cams = dataset(ids=37)
    b = PKSampler(labels, cams, 2, 8, 50, rule="distinct").batches()
    counts = np.bincount(labels[b[:, ::2]].ravel(), minlength=37)
    assert counts.max() - counts.min() <= 1


@pytest.mark.parametrize("rule", RULES)
def test_determinism_seed_epoch(rule):
    labels, cams = dataset()
    a = PKSampler(labels, cams, 4, 8, 10, seed=3, epoch=2, rule=rule).batches()
    assert np.array_equal(a, PKSampler(labels, cams, 4, 8, 10, seed=3, epoch=2, rule=rule).batches())
    assert not np.array_equal(a, PKSampler(labels, cams, 4, 8, 10, seed=3, epoch=3, rule=rule).batches())
    assert not np.array_equal(a, PKSampler(labels, cams, 4, 8, 10, seed=4, epoch=2, rule=rule).batches())


@pytest.mark.parametrize("rule", RULES)
def test_rank_slices_concatenate(rule):
    labels, cams = dataset()
    full = PKSampler(labels, cams, 4, 8, 10, seed=5, rule=rule).batches()
    for ws in (1, 2, 4):
        parts = [PKSampler(labels, cams, 4, 8, 10, seed=5, rank=r, world_size=ws, rule=rule).batches()
                 for r in range(ws)]
        assert all(part.shape == (10, 32 // ws) for part in parts)
        assert np.array_equal(np.concatenate(parts, 1), full)
    with pytest.raises(ValueError, match="divisible"):
        PKSampler(labels, cams, 4, 6, 10, world_size=4)


def test_small_identities_still_give_k():
    labels = np.array([0, 1, 1, 2, 2, 2, -1, -1])
    cams = np.array([0, 0, 1, 0, 0, 0, 1, 1])
    s = PKSampler(labels, cams, num_instances=5, num_ids=3, num_iterations=4, rule="distinct")
    b = check_epoch(s, labels, cams, 3, 5)
    assert not np.isin(b, [6, 7]).any()


@pytest.mark.parametrize("rule", RULES)
def test_fewer_ids_than_p_and_empty(rule):
    labels, cams = np.array([0, 0, 1, 1, 2]), np.zeros(5, int)
    assert PKSampler(labels, cams, 2, 16, 3, rule=rule).batches().shape == (3, 6)  # all 3 identities
    assert PKSampler(labels, cams, 2, 16, 3, world_size=2, rule=rule).batches().shape == (3, 2)  # P=2, 1/rank
    empty = PKSampler(-np.ones(5, int), cams, 2, 16, 3, rule=rule)
    assert len(empty) == 0 and list(empty) == []


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
    s = PKSampler(labels, cams, num_instances=k, num_ids=p, num_iterations=3, seed=seed, rule="distinct")
    c = len(np.unique(labels[labels >= 0]))
    if c == 0:
        assert len(s) == 0
        return
    check_epoch(s, labels, cams, min(p, c), k)


def test_global_batches_are_the_ranks_slices_side_by_side():
    rng = np.random.default_rng(3)
    labels, camids = rng.integers(-1, 40, 600), rng.integers(0, 4, 600)
    args = dict(num_instances=4, num_ids=8, num_iterations=5, seed=1, epoch=2, world_size=2)
    for rule in RULES:
        glob = PKSampler(labels, camids, rank=0, rule=rule, **args).global_batches()
        ranks = [PKSampler(labels, camids, rank=r, rule=rule, **args).batches() for r in range(2)]
        assert np.array_equal(glob, np.concatenate(ranks, axis=1))


# --- rule="reference" (Cluster Contrast's RandomMultipleGallerySampler + DataLoader(drop_last)) -------


def test_unknown_rule_raises():
    labels, cams = dataset()
    with pytest.raises(ValueError, match="'reference'.*'distinct'"):
        PKSampler(labels, cams, 4, 8, 10, rule="camera")
    assert PKSampler(labels, cams, 4, 8, 10).rule == "reference"  # the default


def runs(labels, batches):
    """The epoch's stream (global batches back to back) cut into runs of equal label."""
    flat = batches.ravel()
    lab = labels[flat]
    return np.split(flat, np.flatnonzero(lab[1:] != lab[:-1]) + 1)


def groups(labels, batches, k):
    """The complete reference groups of an epoch: runs as long as their identity's group (K, or 1 for
    a single image). Runs cut by a batch dropped at a pass end, or joined to the same identity's
    group at the start of the next pass, have other lengths and are left out."""
    sizes = np.bincount(labels[labels >= 0])
    return [g for g in runs(labels, batches) if len(g) == (k if sizes[labels[g[0]]] > 1 else 1)]


def with_fillers(special_cams, p, n_ids=8):
    """Identity 0: images 0.. with cameras `special_cams`; then n_ids-1 filler identities of 6 images
    over cameras 7 and 8. With n_ids a multiple of P and no single-image identity, a pass fills
    whole batches (no drop), so every group of the epoch is complete."""
    labels = np.r_[np.zeros(len(special_cams), int), np.repeat(np.arange(1, n_ids), 6)]
    cams = np.r_[special_cams, np.tile([7, 7, 7, 8, 8, 8], n_ids - 1)]
    assert n_ids % p == 0
    return labels, cams


def special_groups(special_cams, k, p=4, epochs=8, iterations=100):
    labels, cams = with_fillers(special_cams, p)
    out = []
    for e in range(epochs):
        b = PKSampler(labels, cams, k, p, iterations, seed=11, epoch=e).global_batches()
        assert b.shape == (iterations, p * k)
        g = b.reshape(-1, k)  # no drop: the stream is whole groups of K
        assert (labels[g] == labels[g[:, :1]]).all()
        out += [x for x in g if labels[x[0]] == 0]
    assert len(out) >= epochs * iterations * p // 8 * 0.9  # about once per pass
    return [(int(x[0]), x[1:].tolist()) for x in out]


@pytest.mark.parametrize("k", [4, 16])
def test_reference_three_other_camera_images_fill_all_places(k):
    # images 0-2 in camera 1, 3-12 in camera 0: an anchor in camera 0 has 3 other-camera images
    got = special_groups([1, 1, 1] + [0] * 10, k)
    big = [pos for a, pos in got if a >= 3]
    assert len(big) > 0.6 * len(got)  # uniform anchor: 10 of 13 images are in camera 0
    assert all(len(pos) == k - 1 and set(pos) <= {0, 1, 2} for pos in big)  # with replacement
    assert any(len(set(pos)) < len(pos) for pos in big)
    for a, pos in got:  # an anchor in camera 1: the 10 camera-0 images, distinct iff 10 >= K
        if a < 3:
            assert set(pos) <= set(range(3, 13)) and len(pos) == k - 1
            if k <= 10:
                assert len(set(pos)) == k - 1


@pytest.mark.parametrize("k", [4, 16])
@pytest.mark.parametrize("extra", [1, 0, -1, 5])
def test_reference_single_camera_identity(k, extra):
    # one camera, K + extra images: K-1 + extra others than the anchor
    n = k + extra
    got = special_groups([3] * n, k)
    assert all(len(pos) == k - 1 and a not in pos and set(pos) <= set(range(n)) for a, pos in got)
    repeats = [len(set(pos)) < len(pos) for a, pos in got]
    if n - 1 >= k:  # at least K others: without replacement
        assert not any(repeats)
    else:  # 1..K-1 others: with replacement, so repeats occur
        assert any(repeats)
    assert {a for a, _ in got} == set(range(n))  # every image serves as the anchor


@pytest.mark.parametrize("k", [4, 16])
def test_reference_exactly_k_minus_1_other_camera_images(k):
    # image 0 in camera 0, images 1..K-1 in camera 1
    got = special_groups([0] + [1] * (k - 1), k, epochs=12)
    lone = [pos for a, pos in got if a == 0]
    assert lone and all(len(pos) == k - 1 and set(pos) <= set(range(1, k)) for pos in lone)
    assert any(len(set(pos)) < k - 1 for pos in lone)  # K-1 < K others: with replacement
    assert set().union(*lone) == set(range(1, k))  # and only those images, all of them
    # an anchor in camera 1 has a single other-camera image: it fills all K-1 places
    assert all(pos == [0] * (k - 1) for a, pos in got if a != 0)


@pytest.mark.parametrize("k", [4, 16])
@pytest.mark.parametrize("extra", [0, 5])
def test_reference_at_least_k_other_camera_images(k, extra):
    # image 0 in camera 0, K + extra images in camera 1
    got = special_groups([0] + [1] * (k + extra), k, epochs=16)
    lone = [pos for a, pos in got if a == 0]
    assert lone
    assert all(len(pos) == k - 1 == len(set(pos)) and set(pos) <= set(range(1, k + extra + 1)) for pos in lone)
    assert all(pos == [0] * (k - 1) for a, pos in got if a != 0)


@pytest.mark.parametrize("k", [1, 4])
def test_reference_single_image_identity_is_a_group_of_one(k):
    # identity 0 = image 0 alone; 9 more identities: a pass is 9K + 1 images, cut into batches of P*K
    labels, cams = with_fillers([0], p=1, n_ids=10)
    p = 3
    per_pass = (9 * k + 1) // (p * k)
    seen = 0
    for e in range(6):
        b = PKSampler(labels, cams, k, p, per_pass, seed=2, epoch=e).global_batches()  # one pass
        assert b.shape == (per_pass, p * k) and (labels[b] >= 0).all()
        flat = b.ravel()
        hits = np.flatnonzero(flat == 0)
        assert len(hits) <= 1  # one pass: at most once (it may fall in the dropped tail)
        seen += len(hits)
        r = runs(labels, flat)  # (identity 0 is image 0 only, so its runs are exactly its groups)
        assert all(len(x) == (1 if x[0] == 0 else k) for x in r[:-1])  # the last one may be cut
        assert all(len(x) == 1 for x in r if x[0] == 0)
    assert seen >= 3


def test_reference_pass_structure_whole_passes():
    # 24 identities of 2-12 images, K=4, P=8: a pass is 96 images = 3 batches exactly
    rng = np.random.default_rng(4)
    labels = np.repeat(np.arange(24), rng.integers(2, 13, 24))
    cams = rng.integers(0, 3, len(labels))
    perm = rng.permutation(len(labels))
    labels, cams = labels[perm], cams[perm]
    b = PKSampler(labels, cams, 4, 8, 30, seed=1, epoch=3).global_batches()
    blocks = labels[b].reshape(10, 3 * 8, 4)  # pass, group, member
    assert (blocks == blocks[..., :1]).all()  # groups are K-aligned
    for pas in blocks[..., 0]:
        assert sorted(pas.tolist()) == list(range(24))  # every identity once per pass
    for row in labels[b].reshape(30, 8, 4)[..., 0]:
        assert len(set(row.tolist())) == 8  # no identity twice in a batch
    assert (np.bincount(blocks[..., 0].ravel()) == 10).all()  # used equally


def test_reference_pass_structure_with_dropped_tail():
    # 30 identities (5 of them single images): a pass is 25*4 + 5 = 105 images -> 3 batches of 32,
    # the other 9 images dropped; the next pass starts a fresh permutation
    rng = np.random.default_rng(5)
    sizes = np.r_[np.ones(5, int), rng.integers(2, 9, 25)]
    labels = np.repeat(np.arange(30), sizes)
    cams = rng.integers(0, 3, len(labels))
    counts = np.zeros(30)
    for e in range(20):
        b = PKSampler(labels, cams, 4, 8, 30, seed=0, epoch=e).global_batches()
        for pas in b.reshape(10, 3 * 32):
            r = runs(labels, pas)
            ids = [int(labels[x[0]]) for x in r]
            assert len(set(ids)) == len(ids)  # no identity twice in a pass (so nor in a batch)
            assert all(len(x) == (4 if sizes[labels[x[0]]] > 1 else 1) for x in r[:-1])
            assert len(set(ids)) >= 30 - 9  # at most 9 dropped images
            counts[ids] += 1
    share = counts / (20 * 10)  # passes in which an identity shows up: all but the few dropped
    assert share.max() <= 1 and share.min() > 0.8


def test_reference_pass_that_cannot_fill_a_batch_spans_passes():
    # 3 identities (P becomes 3), K=2: a pass is 2 + 2 + 1 = 5 images < P*K = 6: nothing dropped
    labels, cams = np.array([0, 0, 1, 1, 2]), np.array([0, 1, 0, 1, 0])
    b = PKSampler(labels, cams, 2, 16, 10, seed=3).global_batches()
    assert b.shape == (10, 6)
    for pas in b.ravel().reshape(12, 5):
        assert sorted(labels[pas].tolist()) == [0, 0, 1, 1, 2]
        assert [len(x) for x in runs(labels, pas)] in ([2, 2, 1], [2, 1, 2], [1, 2, 2])
        for x in runs(labels, pas):
            if len(x) == 2:
                assert cams[x[0]] != cams[x[1]]  # the other camera's image


def camera_stats(cams, grp):
    """(share of same-camera positives over all non-anchor members, mean distinct share of positives)."""
    grp = [g for g in grp if len(g) > 1]
    same = sum(int((cams[g[1:]] == cams[g[0]]).sum()) for g in grp)
    return same / sum(len(g) - 1 for g in grp), np.mean([len(set(g[1:].tolist())) / (len(g) - 1) for g in grp])


def oracle_batches(labels, cams, k, p, iterations, rng):
    """The reference rule in plain words: per pass a permutation of the identities; per identity an
    anchor, then K-1 of the other-camera images (or, with one camera, of the other images), without
    replacement if there are at least K of them, else with; groups back to back, cut into batches of
    P*K, the last partial batch of the pass dropped. (Assumes a pass fills at least one batch.)"""
    ids = np.unique(labels[labels >= 0])
    batches = []
    while len(batches) < iterations:
        stream = []
        for i in rng.permutation(ids):
            images = np.flatnonzero(labels == i)
            a = rng.choice(images)
            cand = images[cams[images] != cams[a]]
            if len(cand) == 0:
                cand = images[images != a]
            stream.append(a)
            if len(cand):
                stream += rng.choice(cand, k - 1, replace=len(cand) < k).tolist()
        n = len(stream) // (p * k)
        batches += [stream[j * p * k : (j + 1) * p * k] for j in range(n)]
    return np.array(batches[:iterations])


def test_reference_matches_oracle_and_differs_from_distinct():
    rng = np.random.default_rng(7)
    labels, cams = [], []
    for i in range(200):
        n = int(rng.integers(1, 41))
        labels += [i] * n
        cams += rng.choice(6, n, p=rng.dirichlet(np.full(6, 0.4))).tolist()
    perm = rng.permutation(len(labels))
    labels, cams = np.array(labels)[perm], np.array(cams)[perm]
    k, p, iterations, epochs = 16, 16, 24, 30
    fast, slow, dist = [], [], []
    for e in range(epochs):
        b = PKSampler(labels, cams, k, p, iterations, seed=0, epoch=e).global_batches()
        fast += groups(labels, b, k)
        slow += groups(labels, oracle_batches(labels, cams, k, p, iterations, np.random.default_rng(e)), k)
        d = PKSampler(labels, cams, k, p, iterations, seed=0, epoch=e, rule="distinct").global_batches()
        dist += list(d.reshape(-1, k))
    (f_same, f_uniq), (o_same, o_uniq), (d_same, _) = map(lambda g: camera_stats(cams, g), (fast, slow, dist))
    print(f"same-camera share: reference {f_same:.4f}, oracle {o_same:.4f}, distinct {d_same:.4f}; "
          f"distinct positives: reference {f_uniq:.4f}, oracle {o_uniq:.4f}")
    assert abs(f_same - o_same) < 0.01
    assert abs(f_uniq - o_uniq) < 0.01
    assert d_same > f_same + 0.1


@settings(max_examples=60, deadline=None)
@given(
    n=st.integers(1, 80),
    n_ids=st.integers(1, 12),
    n_cams=st.integers(1, 4),
    k=st.integers(1, 6),
    p=st.integers(1, 6),
    seed=st.integers(0, 10**6),
)
def test_property_random_labels_reference(n, n_ids, n_cams, k, p, seed):
    rng = np.random.default_rng(seed)
    labels = rng.integers(-1, n_ids, n)
    cams = rng.integers(0, n_cams, n)
    s = PKSampler(labels, cams, num_instances=k, num_ids=p, num_iterations=5, seed=seed)
    c = len(np.unique(labels[labels >= 0]))
    if c == 0:
        assert len(s) == 0 and s.batches().shape == (0, k)
        return
    b = s.global_batches()
    assert b.shape == (5, s.p * k) and s.p == (p if c >= p else c)
    assert (labels[b] >= 0).all()
    for g in groups(labels, b, k):
        a, pos = g[0], g[1:]
        members = np.flatnonzero(labels == labels[a])
        cand = members[cams[members] != cams[a]]
        if len(cand) == 0:
            cand = members[members != a]
        assert set(pos.tolist()) <= set(cand.tolist())
        if len(cand) >= k:
            assert len(set(pos.tolist())) == k - 1
