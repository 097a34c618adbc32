"""Clustering diagnostics against ground-truth identities. They never feed training."""

from __future__ import annotations

import numpy as np


def _contingency(labels: np.ndarray, truth: np.ndarray) -> np.ndarray:
    _, y = np.unique(labels, return_inverse=True)
    _, t = np.unique(truth, return_inverse=True)
    table = np.zeros((y.max() + 1, t.max() + 1), dtype=np.int64)
    np.add.at(table, (y, t), 1)
    return table


def purity(labels: np.ndarray, truth: np.ndarray) -> float:
    """Share of clustered samples (label >= 0) that carry their cluster's majority identity."""
    labels, truth = np.asarray(labels), np.asarray(truth)
    clustered = labels >= 0
    if not clustered.any():
        return 0.0
    return float(_contingency(labels[clustered], truth[clustered]).max(axis=1).sum() / clustered.sum())


def nmi(labels: np.ndarray, truth: np.ndarray) -> float:
    """Normalised mutual information (arithmetic mean), outliers counted as singleton clusters."""
    labels, truth = np.asarray(labels).copy(), np.asarray(truth)
    outliers = labels < 0
    labels[outliers] = labels.max(initial=-1) + 1 + np.arange(outliers.sum())
    table = _contingency(labels, truth).astype(np.float64)
    n = table.sum()
    p_xy = table / n
    p_x, p_y = p_xy.sum(axis=1), p_xy.sum(axis=0)
    nz = p_xy > 0
    mutual = (p_xy[nz] * np.log(p_xy[nz] / np.outer(p_x, p_y)[nz])).sum()
    h_x = -(p_x[p_x > 0] * np.log(p_x[p_x > 0])).sum()
    h_y = -(p_y[p_y > 0] * np.log(p_y[p_y > 0])).sum()
    if h_x + h_y == 0:
        return 1.0
    return float(max(0.0, 2 * mutual / (h_x + h_y)))


def oae_precision(before: np.ndarray, after: np.ndarray, truth: np.ndarray) -> float | None:
    """Share of OAE-assigned outliers whose identity is the majority identity of the cluster they
    joined (majority taken over the cluster's members before OAE). None when nothing was assigned."""
    before, after, truth = np.asarray(before), np.asarray(after), np.asarray(truth)
    assigned = (before < 0) & (after >= 0)
    if not assigned.any():
        return None
    clustered = before >= 0
    table = _contingency_full(before[clustered], truth[clustered], int(before.max()) + 1, truth)
    majority = table.argmax(axis=1)
    _, t = np.unique(truth, return_inverse=True)
    return float((majority[after[assigned]] == t[assigned]).mean())


def _contingency_full(labels: np.ndarray, truth_subset: np.ndarray, num_clusters: int, truth: np.ndarray) -> np.ndarray:
    identities = np.unique(truth)
    table = np.zeros((num_clusters, identities.size), dtype=np.int64)
    np.add.at(table, (labels, np.searchsorted(identities, truth_subset)), 1)
    return table


def cluster_size_histogram(labels: np.ndarray, edges=(1, 2, 4, 8, 16, 32, 64, 128)) -> dict[str, int]:
    """Number of clusters per size bucket, e.g. {"2-3": 10, "4-7": 120, ..., ">=128": 0}."""
    labels = np.asarray(labels)
    sizes = np.bincount(labels[labels >= 0]) if (labels >= 0).any() else np.zeros(0, dtype=np.int64)
    sizes = sizes[sizes > 0]
    out = {}
    for lo, hi in zip(edges[:-1], edges[1:]):
        out[f"{lo}-{hi - 1}" if hi - 1 > lo else f"{lo}"] = int(((sizes >= lo) & (sizes < hi)).sum())
    out[f">={edges[-1]}"] = int((sizes >= edges[-1]).sum())
    return out


def cross_camera_fraction(labels: np.ndarray, camids: np.ndarray) -> float:
    """Share of clusters whose members come from more than one camera (needs no identities).
    Clusters of one camera teach little about matching across cameras."""
    return camera_spread(labels, camids)["cross_camera"]


def camera_spread(labels: np.ndarray, camids: np.ndarray) -> dict[str, float]:
    """How clusters span cameras (needs no identities): the share of clusters holding more than one
    camera, the mean number of cameras per cluster, and the share of clustered images whose
    cluster holds another camera than their own."""
    labels, camids = np.asarray(labels), np.asarray(camids)
    clustered = labels >= 0
    if not clustered.any():
        return {"cross_camera": 0.0, "cameras_per_cluster": 0.0, "cross_camera_images": 0.0}
    pairs = np.unique(np.stack([labels[clustered], camids[clustered]]), axis=1)
    cameras = np.bincount(pairs[0])
    present = cameras > 0
    multi = cameras > 1
    return {"cross_camera": float(multi[present].mean()), "cameras_per_cluster": float(cameras[present].mean()),
            "cross_camera_images": float(multi[labels[clustered]].mean())}
