"""Camera-aware proxies (CAP / ICE): proxies per (cluster, camera), the inter-camera loss against a
per-sample oracle, hard negatives, the momentum update, checkpoints."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from oaecmlr.core.camera_memory import CameraProxyMemory


def setup(seed=0, n=60, dim=8, clusters=5, cams=3):
    g = torch.Generator().manual_seed(seed)
    features = F.normalize(torch.randn(n, dim, generator=g), dim=1)
    labels = torch.randint(-1, clusters, (n,), generator=g)
    camids = torch.randint(0, cams, (n,), generator=g)
    return features, labels, camids


def test_proxies_are_the_normalised_means_per_cluster_and_camera():
    features, labels, camids = setup()
    memory = CameraProxyMemory(8)
    memory.initialise(features, labels, camids)
    pairs = sorted({(int(c), int(m)) for c, m in zip(labels, camids) if c >= 0})
    assert memory.proxies.shape == (len(pairs), 8) and memory.proxy_cluster.tolist() == [c for c, _ in pairs]
    for p, (c, m) in enumerate(pairs):
        members = features[(labels == c) & (camids == m)]
        torch.testing.assert_close(memory.proxies[p], F.normalize(members.sum(0), dim=0))
        assert int(memory.table[c, m]) == p
    assert memory.proxy_of(labels, camids).tolist() == [int(memory.table[c, m]) if c >= 0 else -1
                                                        for c, m in zip(labels.tolist(), camids.tolist())]


def oracle_loss(features, labels, proxies, proxy_cluster, tau, negatives):
    """Per sample, in float64: -mean over its cluster's proxies of log(exp(s_p) / (sum over its
    proxies + sum over the `negatives` most similar other proxies))."""
    total = []
    for f, y in zip(features.double(), labels.tolist()):
        s = (proxies.double() @ f) / tau
        mine = [q for q in range(len(s)) if proxy_cluster[q] == y]
        others = sorted((q for q in range(len(s)) if proxy_cluster[q] != y), key=lambda q: -s[q])[:negatives]
        denominator = torch.logsumexp(s[mine + others], dim=0)
        total.append(-torch.stack([s[p] - denominator for p in mine]).mean())
    return torch.stack(total).mean()


@pytest.mark.parametrize("negatives", [50, 3, 1, 0])
def test_loss_equals_the_per_sample_oracle(negatives):
    features, labels, camids = setup(seed=1)
    memory = CameraProxyMemory(8, temperature=0.07, negatives=negatives)
    memory.initialise(features, labels, camids)
    batch = labels >= 0
    got = memory(features[batch], labels[batch])
    expected = oracle_loss(features[batch], labels[batch], memory.proxies, memory.proxy_cluster.tolist(), 0.07,
                           negatives)
    assert float(got) == pytest.approx(float(expected), rel=1e-5)


def test_the_loss_pulls_towards_the_other_cameras_proxies():
    features, labels, camids = setup(seed=2)
    memory = CameraProxyMemory(8)
    memory.initialise(features, labels, camids)
    x = features[labels >= 0].clone().requires_grad_(True)
    y = labels[labels >= 0]
    memory(x, y).backward()
    assert x.grad is not None and torch.isfinite(x.grad).all() and x.grad.abs().sum() > 0
    assert memory.proxies.grad is None  # buffers: only the features learn


def test_update_moves_each_proxy_like_the_sequential_reference():
    features, labels, camids = setup(seed=3)
    memory = CameraProxyMemory(8, momentum=0.2)
    memory.initialise(features, labels, camids)
    reference = memory.proxies.clone()
    batch = torch.nonzero(labels >= 0).squeeze(1)[:20]
    proxies = memory.proxy_of(labels[batch], camids[batch])
    new = F.normalize(torch.randn(len(batch), 8, generator=torch.Generator().manual_seed(9)), dim=1)
    for f, p in zip(new, proxies.tolist()):  # one sample at a time, in batch order
        reference[p] = F.normalize(0.2 * reference[p] + 0.8 * f, dim=0)
    counts = np.bincount(proxies.numpy()).max()
    memory.update(new, proxies, int(counts))
    torch.testing.assert_close(memory.proxies, reference)


def test_state_dict_round_trip_with_another_number_of_proxies():
    features, labels, camids = setup(seed=4)
    saved = CameraProxyMemory(8)
    saved.initialise(features, labels, camids)
    fresh = CameraProxyMemory(8)
    fresh.initialise(*setup(seed=5, clusters=2)[:1], torch.zeros(60, dtype=torch.long), torch.zeros(60, dtype=torch.long))
    fresh.load_state_dict(saved.state_dict())
    for name in ("proxy_cluster", "table"):
        assert torch.equal(getattr(fresh, name), getattr(saved, name))
    assert torch.equal(fresh.proxies, saved.proxies)
