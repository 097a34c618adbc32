"""ClusterMemory against the sequential reference updates of Cluster Contrast's CM / CM_Hard."""

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st

from oaecmlr import ClusterMemory


def unit(*shape, seed=0):
    return F.normalize(torch.randn(*shape, generator=torch.Generator().manual_seed(seed)), dim=-1)


def reference_mean(memory, inputs, targets, momentum):
    """Cluster Contrast `CM.backward`: every sample in batch order."""
    m = memory.clone()
    for x, y in zip(inputs, targets.tolist()):
        m[y] = momentum * m[y] + (1 - momentum) * x
        m[y] /= m[y].norm()
    return m


def reference_hard(memory, inputs, targets, momentum):
    """Cluster Contrast `CM_Hard.backward`: per cluster, the batch member with the lowest
    similarity to m[y] (np.argmin: the first one on ties)."""
    m = memory.clone()
    batch = {}
    for x, y in zip(inputs, targets.tolist()):
        batch.setdefault(y, []).append(x)
    for y, features in batch.items():
        similarities = [float(x @ memory[y]) for x in features]
        hardest = features[int(np.argmin(similarities))]
        m[y] = m[y] * momentum + (1 - momentum) * hardest
        m[y] /= m[y].norm()
    return m


@settings(max_examples=20, deadline=None)
@given(clusters=st.integers(1, 12), batch=st.integers(1, 48), dim=st.integers(2, 32),
       momentum=st.sampled_from([0.0, 0.1, 0.5, 0.9]), seed=st.integers(0, 2**16))
def test_mean_update_equals_sequential_loop(clusters, batch, dim, momentum, seed):
    rng = np.random.default_rng(seed)
    memory = ClusterMemory(dim, momentum=momentum, mode="mean")
    memory.initialise(unit(clusters, dim, seed=seed))
    start = memory.centroids.clone()
    inputs = unit(batch, dim, seed=seed + 1)
    targets = torch.as_tensor(rng.integers(0, clusters, batch))  # labels repeat within the batch
    memory.update(inputs, targets)
    torch.testing.assert_close(memory.centroids, reference_mean(start, inputs, targets, momentum), atol=1e-6, rtol=0)


@settings(max_examples=20, deadline=None)
@given(clusters=st.integers(1, 12), batch=st.integers(1, 48), dim=st.integers(2, 32),
       momentum=st.sampled_from([0.0, 0.1, 0.5, 0.9]), extra=st.integers(0, 2), seed=st.integers(0, 2**16))
def test_sync_free_mean_update_equals_sequential_loop(clusters, batch, dim, momentum, extra, seed):
    """With the round count given (as the engine does), and with surplus rounds, which change nothing."""
    rng = np.random.default_rng(seed)
    memory = ClusterMemory(dim, momentum=momentum, mode="mean")
    memory.initialise(unit(clusters, dim, seed=seed))
    start = memory.centroids.clone()
    inputs = unit(batch, dim, seed=seed + 1)
    targets = torch.as_tensor(rng.integers(0, clusters, batch))
    rounds = int(torch.bincount(targets).max()) + extra
    memory.update(inputs, targets, rounds=rounds)
    assert memory.centroids.shape == start.shape
    torch.testing.assert_close(memory.centroids, reference_mean(start, inputs, targets, momentum), atol=1e-6, rtol=0)


def test_max_occurrences_counts_the_most_frequent_label_of_each_batch():
    from oaecmlr.data.sampler import max_occurrences

    rng = np.random.default_rng(0)
    labels = rng.integers(-1, 30, 500)
    batches = rng.integers(0, 500, (40, 64))
    expected = [np.bincount(labels[row] + 1).max() for row in batches]
    assert max_occurrences(labels, batches).tolist() == expected
    assert max_occurrences(labels, np.zeros((0, 64), np.int64)).shape == (0,)


def test_mean_update_order_matters_and_is_followed():
    """Three samples of one cluster: the result depends on their order, as in the reference."""
    memory = ClusterMemory(8, momentum=0.5, mode="mean")
    memory.initialise(unit(2, 8, seed=3))
    start = memory.centroids.clone()
    inputs = unit(3, 8, seed=4)
    targets = torch.tensor([1, 1, 1])
    memory.update(inputs, targets)
    forward = reference_mean(start, inputs, targets, 0.5)
    backward = reference_mean(start, inputs.flip(0), targets, 0.5)
    assert (forward - backward).abs().max() > 1e-3
    torch.testing.assert_close(memory.centroids, forward, atol=1e-6, rtol=0)
    torch.testing.assert_close(memory.centroids[0], start[0], atol=0, rtol=0)  # untouched cluster


@settings(max_examples=20, deadline=None)
@given(clusters=st.integers(1, 12), batch=st.integers(1, 48), dim=st.integers(2, 32),
       momentum=st.sampled_from([0.0, 0.1, 0.5]), seed=st.integers(0, 2**16))
def test_hard_update_equals_reference(clusters, batch, dim, momentum, seed):
    rng = np.random.default_rng(seed)
    memory = ClusterMemory(dim, momentum=momentum, mode="hard")
    memory.initialise(unit(clusters, dim, seed=seed))
    start = memory.centroids.clone()
    inputs = unit(batch, dim, seed=seed + 1)
    targets = torch.as_tensor(rng.integers(0, clusters, batch))
    memory.update(inputs, targets)
    torch.testing.assert_close(memory.centroids, reference_hard(start, inputs, targets, momentum), atol=1e-6, rtol=0)


def test_hard_update_takes_the_first_of_tied_samples():
    """x1 and x2 have exactly the same similarity (0.6) to m = e0 but differ: the first wins."""
    memory = ClusterMemory(3, momentum=0.5, mode="hard")
    memory.initialise(torch.tensor([[1.0, 0.0, 0.0], [0.0, 1.0, 0.0]]))
    start = memory.centroids.clone()
    x1, x2, x3 = torch.tensor([0.6, 0.8, 0.0]), torch.tensor([0.6, 0.0, 0.8]), torch.tensor([0.9, 0.0, 0.43589])
    inputs = torch.stack([x3, x1, x2])
    targets = torch.tensor([0, 0, 0])
    memory.update(inputs, targets)
    expected = F.normalize(0.5 * start[0] + 0.5 * x1, dim=0)
    torch.testing.assert_close(memory.centroids[0], expected, atol=1e-7, rtol=0)
    torch.testing.assert_close(memory.centroids, reference_hard(start, inputs, targets, 0.5), atol=1e-7, rtol=0)


def test_loss_equals_cross_entropy():
    memory = ClusterMemory(16, temperature=0.05)
    memory.initialise(unit(7, 16, seed=5))
    f = unit(10, 16, seed=6)
    y = torch.randint(0, 7, (10,), generator=torch.Generator().manual_seed(7))
    expected = F.cross_entropy(f @ memory.centroids.T / 0.05, y)
    torch.testing.assert_close(memory(f, y), expected, atol=1e-6, rtol=1e-6)
    memory_hot = ClusterMemory(16, temperature=0.2)
    memory_hot.initialise(memory.centroids)
    torch.testing.assert_close(memory_hot(f, y), F.cross_entropy(f @ memory.centroids.T / 0.2, y), atol=1e-6, rtol=1e-6)


def test_one_hot_soft_labels_double_the_loss():
    memory = ClusterMemory(16)
    memory.initialise(unit(7, 16, seed=8))
    f = unit(12, 16, seed=9)
    y = torch.randint(0, 7, (12,), generator=torch.Generator().manual_seed(10))
    ce = memory(f, y)
    doubled = memory(f, y, soft_labels=F.one_hot(y, 7).float(), soft_weight=1.0)
    torch.testing.assert_close(doubled, 2 * ce, atol=0, rtol=1e-6)
    half = memory(f, y, soft_labels=F.one_hot(y, 7).float(), soft_weight=0.5)
    torch.testing.assert_close(half, 1.5 * ce, atol=0, rtol=1e-6)


def test_soft_cross_entropy_value():
    memory = ClusterMemory(8)
    memory.initialise(unit(4, 8, seed=11))
    f = unit(5, 8, seed=12)
    y = torch.tensor([0, 1, 2, 3, 0])
    q = torch.softmax(torch.randn(5, 4, generator=torch.Generator().manual_seed(13)), dim=1)
    logits = f @ memory.centroids.T / 0.05
    expected = F.cross_entropy(logits, y) + 0.7 * F.cross_entropy(logits, q)
    torch.testing.assert_close(memory(f, y, soft_labels=q, soft_weight=0.7), expected, atol=1e-6, rtol=1e-6)


def test_gradient_flows_to_features_only():
    memory = ClusterMemory(16)
    memory.initialise(unit(5, 16, seed=14))
    assert list(memory.parameters()) == []
    assert not memory.centroids.requires_grad
    f = unit(6, 16, seed=15).requires_grad_(True)
    y = torch.tensor([0, 1, 2, 3, 4, 0])
    loss = memory(f, y, soft_labels=F.one_hot(y, 5).float())
    loss.backward()
    assert f.grad is not None and f.grad.abs().sum() > 0
    assert memory.centroids.grad is None
    before = memory.centroids.clone()
    memory.update(f, y)  # a tensor that requires grad is accepted (detached)
    assert not memory.centroids.requires_grad
    assert not torch.equal(before, memory.centroids)


def test_state_dict_round_trip_with_other_cluster_count():
    source = ClusterMemory(16, mode="hard")
    source.initialise(unit(9, 16, seed=16))
    source.update(unit(4, 16, seed=17), torch.tensor([1, 1, 3, 8]))
    state = source.state_dict()
    assert set(state) == {"centroids"}
    for clusters in (0, 3, 12):
        target = ClusterMemory(16, mode="hard")
        target.initialise(unit(clusters, 16, seed=18))
        target.load_state_dict(state)
        assert target.num_clusters == 9
        assert torch.equal(target.centroids, source.centroids)
        assert "centroids" in dict(target.named_buffers())


def test_initialise_normalises_and_detaches():
    memory = ClusterMemory(4)
    raw = torch.tensor([[3.0, 0.0, 4.0, 0.0], [0.0, 2.0, 0.0, 0.0]], requires_grad=True)
    memory.initialise(raw)
    torch.testing.assert_close(memory.centroids, torch.tensor([[0.6, 0.0, 0.8, 0.0], [0.0, 1.0, 0.0, 0.0]]))
    assert not memory.centroids.requires_grad


def test_unknown_mode():
    with pytest.raises(ValueError, match="mode"):
        ClusterMemory(4, mode="median")
