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


def majority_identity(labels: np.ndarray, truth: np.ndarray) -> np.ndarray:
    """(C,) the most frequent identity of each cluster 0..C-1 (the smallest on ties; -1 for an empty
    cluster)."""
    labels, truth = np.asarray(labels), np.asarray(truth)
    num_clusters = int(labels.max()) + 1 if labels.size else 0
    clustered = labels >= 0
    identities = np.unique(truth)
    table = np.zeros((num_clusters, identities.size), dtype=np.int64)
    np.add.at(table, (labels[clustered], np.searchsorted(identities, truth[clustered])), 1)
    majority = identities[table.argmax(axis=1)] if identities.size else np.zeros(num_clusters, truth.dtype)
    return np.where(table.sum(axis=1) > 0, majority, -1)


def oae_diagnostics(before: np.ndarray, after: np.ndarray, anchors: np.ndarray, truth: np.ndarray,
                    camids: np.ndarray) -> dict[str, float | None]:
    """What OAE added, against ground truth (docs/method.md section 3, Logged):
    - pairwise precision: assigned outliers whose identity is that of their nearest clustered
      instance j*;
    - majority precision: assigned outliers whose identity is the majority of the cluster they joined
      (taken before OAE);
    - ceiling: outliers whose identity is the majority of some cluster (what a perfect OAE could add);
    - same camera: assigned (outlier, j*) pairs from one camera;
    - assigned share: assigned outliers over all outliers.
    Figures over an empty set are None."""
    before, after, anchors = np.asarray(before), np.asarray(after), np.asarray(anchors)
    truth, camids = np.asarray(truth), np.asarray(camids)
    outliers = before < 0
    assigned = outliers & (after >= 0)

    def share(hits: np.ndarray) -> float | None:
        return float(hits.mean()) if hits.size else None

    majority = majority_identity(before, truth)
    anchor = anchors[assigned]
    return {
        "oae_pairwise_precision": share(truth[assigned] == truth[anchor]),
        "oae_precision": oae_precision(before, after, truth),
        "oae_ceiling": share(np.isin(truth[outliers], majority[majority >= 0])),
        "oae_same_camera": share(camids[assigned] == camids[anchor]),
        "oae_assigned_share": share(assigned[outliers]),
    }


def auroc(scores: np.ndarray, positives: np.ndarray) -> float | None:
    """Area under the ROC curve of `scores` for finding `positives` (tied scores count one half), the
    Mann-Whitney statistic; None without both classes."""
    scores, positives = np.asarray(scores, dtype=np.float64), np.asarray(positives, dtype=bool)
    num_pos, num_neg = int(positives.sum()), int((~positives).sum())
    if num_pos == 0 or num_neg == 0:
        return None
    order = np.argsort(scores, kind="stable")
    sorted_scores = scores[order]
    ranks = np.empty(scores.size)
    # average rank (1-based) over runs of equal scores
    starts = np.flatnonzero(np.r_[True, sorted_scores[1:] != sorted_scores[:-1]])
    ends = np.r_[starts[1:], scores.size]
    average = (starts + ends + 1) / 2
    ranks[order] = np.repeat(average, ends - starts)
    return float((ranks[positives].sum() - num_pos * (num_pos + 1) / 2) / (num_pos * num_neg))


def cmlr_diagnostics(soft: np.ndarray, index: np.ndarray, labels: np.ndarray, truth: np.ndarray,
                     prediction: np.ndarray) -> dict[str, float | None]:
    """What CMLR's target q teaches, against ground truth (docs/method.md section 4, Logged). A sample
    is mislabelled when its identity is not its cluster's majority; "right" clusters are those whose
    majority is the sample's identity (one-hot puts mass 1 there for a clean sample, 0 for a
    mislabelled one):
    - mass on the right clusters, mean over clean and over mislabelled samples;
    - AUROC of 1 - q_i[y_i] for finding the mislabelled samples;
    - mean KL(q_i || prediction_i), the model's own softmax at the epoch's start (near 0: q teaches
      nothing the model does not already predict);
    - the share of clustered samples that are mislabelled."""
    soft, index, labels = np.asarray(soft, dtype=np.float64), np.asarray(index), np.asarray(labels)
    truth, prediction = np.asarray(truth), np.asarray(prediction, dtype=np.float64)
    if index.size == 0:
        return {"cmlr_mass_clean": None, "cmlr_mass_mislabelled": None, "cmlr_auroc": None, "cmlr_kl": None,
                "cmlr_mislabelled": None}
    majority = majority_identity(labels, truth)
    y, t = labels[index], truth[index]
    right = majority[None, :] == t[:, None]  # (M, C)
    mass = (soft * right).sum(axis=1)
    mislabelled = majority[y] != t
    own = soft[np.arange(index.size), y]
    kl = (soft * (np.log(np.clip(soft, 1e-12, None)) - np.log(np.clip(prediction, 1e-12, None)))).sum(axis=1)

    def mean(values: np.ndarray) -> float | None:
        return float(values.mean()) if values.size else None

    return {"cmlr_mass_clean": mean(mass[~mislabelled]), "cmlr_mass_mislabelled": mean(mass[mislabelled]),
            "cmlr_auroc": auroc(1 - own, mislabelled), "cmlr_kl": mean(kl),
            "cmlr_mislabelled": float(mislabelled.mean())}
