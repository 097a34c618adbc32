"""Slow, obviously-correct dense implementations used as test oracles (never by the product).

They follow the reference procedures line by line: the Cluster Contrast `compute_jaccard_distance`,
the original `re_ranking`, and the per-query Market-1501 evaluation loop. `dense_jaccard` is also
the dense baseline of `benchmarks/bench_pseudo_labels.py` (in float32 there, with the product's
ranked lists, as Cluster Contrast takes faiss's): one reference for the tests and the benchmarks.
"""

from __future__ import annotations

import numpy as np


def ranked_lists(dist: np.ndarray, length: int) -> np.ndarray:
    """Each row's `length` nearest columns by (distance, index)."""
    n = dist.shape[0]
    order = np.lexsort((np.broadcast_to(np.arange(dist.shape[1]), dist.shape), dist), axis=1)
    assert order.shape[0] == n
    return order[:, :length]


def k_reciprocal(ranked: np.ndarray, i: int, k: int) -> np.ndarray:
    forward = ranked[i, : k + 1]
    backward = ranked[forward, : k + 1]
    return forward[np.where(backward == i)[0]]


class PairDistances:
    """`2 - 2 f_i . f_j` read like a dense array (`d[i, columns]`, `d.shape`) without storing N x N."""

    def __init__(self, features: np.ndarray):
        self.features, self.shape = features, (len(features), len(features))

    def __getitem__(self, index):
        i, columns = index
        return np.maximum(2 - 2 * self.features[columns] @ self.features[i], 0)


def encode(dist, ranked: np.ndarray, k1: int, k2: int, dtype=np.float64) -> np.ndarray:
    """Dense V after query expansion: softmax(-dist) over R*(i), then mean over k2 neighbours."""
    n = dist.shape[0]
    half = int(np.around(k1 / 2))
    near = [k_reciprocal(ranked, i, k1) for i in range(n)]
    near_half = [k_reciprocal(ranked, i, half) for i in range(n)]
    V = np.zeros((n, dist.shape[1]), dtype=dtype)
    for i in range(n):
        expansion = near[i]
        for candidate in near[i]:
            cand = near_half[candidate]
            if len(np.intersect1d(cand, near[i])) > 2 / 3 * len(cand):
                expansion = np.append(expansion, cand)
        expansion = np.unique(expansion)
        weight = np.exp(-dist[i, expansion])
        V[i, expansion] = weight / weight.sum()
    if k2 != 1:
        V = np.stack([V[ranked[i, :k2]].mean(axis=0) for i in range(n)])
    return V


def jaccard_from_encoding(V: np.ndarray, rows: range) -> np.ndarray:
    """1 - s / (2 - s), s_ik = sum_j min(V_ij, V_kj), summed over the j where V_ij > 0 (elsewhere the
    minimum is 0) through the inverted index of V's columns, as Cluster Contrast does."""
    holders = [np.flatnonzero(V[:, j]) for j in range(V.shape[1])]
    out = np.zeros((len(rows), V.shape[0]), dtype=V.dtype)
    for r, i in enumerate(rows):
        shared = np.zeros(V.shape[0], dtype=V.dtype)
        for j in np.flatnonzero(V[i]):
            shared[holders[j]] += np.minimum(V[i, j], V[holders[j], j])
        out[r] = 1 - shared / (2 - shared)
    return np.maximum(out, 0)


def dense_jaccard(features: np.ndarray, k1: int, k2: int, dtype=np.float64,
                  ranked: np.ndarray | None = None) -> np.ndarray:
    """The training-time Jaccard distance: ranked lists of k1 entries including the sample itself
    (by (distance, index) unless `ranked` gives them), computed in `dtype`."""
    f = features.astype(dtype)
    if ranked is None:
        ranked = ranked_lists(np.maximum(2 - 2 * f @ f.T, 0), k1)
    return jaccard_from_encoding(encode(PairDistances(f), ranked, k1, k2, dtype), range(len(f)))


def dense_re_ranking(q_g: np.ndarray, q_q: np.ndarray, g_g: np.ndarray, k1: int, k2: int, lam: float) -> np.ndarray:
    original = np.block([[q_q, q_g], [q_g.T, g_g]]).astype(np.float64) ** 2
    original = np.transpose(original / np.max(original, axis=0))
    num_q = q_g.shape[0]
    ranked = ranked_lists(original, original.shape[0])
    V = encode(original, ranked, k1, k2)
    jaccard = jaccard_from_encoding(V, range(num_q))
    final = jaccard * (1 - lam) + original[:num_q] * lam
    return final[:, num_q:]


def loop_evaluate(distmat, q_pids, g_pids, q_camids, g_camids, max_rank=50):
    """torchreid's per-query Market-1501 evaluation."""
    num_q, num_g = distmat.shape
    indices = np.argsort(distmat, axis=1, kind="stable")
    matches = (g_pids[indices] == q_pids[:, None]).astype(np.int32)
    all_cmc, all_ap, all_inp = [], [], []
    for q in range(num_q):
        order = indices[q]
        remove = (g_pids[order] == q_pids[q]) & (g_camids[order] == q_camids[q])
        raw_cmc = matches[q][~remove]
        if not np.any(raw_cmc):
            continue
        cmc = raw_cmc.cumsum()
        last = np.max(np.where(raw_cmc == 1))
        all_inp.append(cmc[last] / (last + 1.0))
        cmc[cmc > 1] = 1
        all_cmc.append(cmc[:max_rank])
        precision = raw_cmc.cumsum() / (np.arange(len(raw_cmc)) + 1.0)
        all_ap.append((precision * raw_cmc).sum() / raw_cmc.sum())
    return np.mean(all_ap), np.mean(all_inp), np.asarray(all_cmc, dtype=np.float64).mean(axis=0), num_q - len(all_ap)


def cluster_centroids(features: np.ndarray, labels: np.ndarray):
    """Per cluster 0..C-1: normalised mean of the members, max member cosine distance, size."""
    f = np.asarray(features, dtype=np.float64)
    num = int(labels.max()) + 1 if labels.size else 0
    centroids = np.zeros((num, f.shape[1]))
    radii = np.zeros(num)
    sizes = np.zeros(num, dtype=np.int64)
    for c in range(num):
        members = f[labels == c]
        sizes[c] = len(members)
        if len(members):
            total = members.sum(axis=0)
            centroids[c] = total / np.linalg.norm(total)
            radii[c] = max(0.0, float((1 - members @ centroids[c]).max()))
    return centroids, radii, sizes


def oae_round(features, jaccard, ranked, labels, k, rho, min_samples, rule="nearest", support=2, support_k=10,
              camids=None, shift=0.0):
    """One OAE round by brute force (docs/method.md section 3), against the clusters as they stand.

    `jaccard` is a dense N x N distance (1 = no shared support), `ranked` the (N, >= k+1) ranked
    lists, self first. Jaccard values equal to 1e-9 count as tied (cosine decides), and values
    within 1e-6 of 1 count as 1. With `shift` > 0, pairs with d < 1 from two cameras count as
    max(d - shift, 0) when j* is chosen and A is checked. The support rule then also needs `support`
    votes for c = y(j*) among o's `support_k` nearest others by (d, index), more than any other
    cluster gets, and c the nearest centroid. Returns {outlier: cluster} and, per outlier that passed
    A, |d(f_o, mu_c) - rho r_c| (how far it is from the B boundary)."""
    f = np.asarray(features, dtype=np.float64)
    jac = np.round(np.where(jaccard > 1 - 1e-6, 1.0, jaccard), 9)
    chosen = jac.copy()
    if shift > 0:
        cams = np.asarray(camids)
        across = (cams[:, None] != cams[None, :]) & (jac < 1)
        chosen[across] = np.maximum(jac[across] - shift, 0)
    centroids, radii, sizes = cluster_centroids(f, labels)
    clustered = np.flatnonzero(labels >= 0)
    accepted, gaps = {}, {}
    if clustered.size == 0:
        return accepted, gaps
    for o in np.flatnonzero(labels == -1):
        cosine = 1 - f[clustered] @ f[o]
        j = clustered[np.lexsort((clustered, cosine, chosen[o, clustered]))[0]]
        if not chosen[o, j] < 1:
            continue
        if j not in ranked[o, : k + 1] or o not in ranked[j, : k + 1]:
            continue  # A: mutual k-nearest neighbours
        c = labels[j]
        distance = 1 - f[o] @ centroids[c]
        gaps[o] = abs(distance - rho * radii[c])
        if not (sizes[c] >= min_samples and distance <= rho * radii[c]):  # B
            continue
        if rule == "support":
            others = [x for x in range(len(labels)) if x != o and jac[o, x] < 1]
            nearest = sorted(others, key=lambda x: (jaccard[o, x], x))[:support_k]
            votes = {}
            for x in nearest:
                if labels[x] >= 0:
                    votes[labels[x]] = votes.get(labels[x], 0) + 1
            best_other = max((v for cluster, v in votes.items() if cluster != c), default=0)
            if not (votes.get(c, 0) >= support and votes.get(c, 0) > best_other):
                continue  # S
            present = np.flatnonzero(sizes > 0)
            if present[np.argmax(centroids[present] @ f[o])] != c:
                continue  # N
        accepted[o] = c
    return accepted, gaps


def oae_rounds(features, jaccard, ranked, labels, k, rho, rounds, min_samples, **rule):
    """Repeated `oae_round`, assigning all accepted outliers at once after each round."""
    labels = np.array(labels, dtype=np.int64)
    per_round, all_gaps = [], {}
    for _ in range(rounds):
        if not (labels == -1).any():
            break
        accepted, gaps = oae_round(features, jaccard, ranked, labels, k, rho, min_samples, **rule)
        all_gaps.update(gaps)
        for o, c in accepted.items():
            labels[o] = c
        per_round.append(len(accepted))
        if not accepted:
            break
    return labels, per_round, all_gaps


def cmlr_soft_labels(features, labels, lam, tau_r, top_k=None):
    """Refined labels q_i of the clustered samples (docs/method.md section 4), in float64."""
    f = np.asarray(features, dtype=np.float64)
    centroids, radii, _ = cluster_centroids(f, labels)
    index = np.flatnonzero(labels >= 0)
    out = np.zeros((index.size, centroids.shape[0]))
    for r, i in enumerate(index):
        logits = centroids @ f[i] / tau_r
        if top_k is not None and top_k < len(logits):
            cutoff = np.sort(logits)[-top_k]
            logits = np.where(logits < cutoff, -np.inf, logits)
        p = np.exp(logits - logits.max())
        p /= p.sum()
        y = labels[i]
        delta = 0.0 if radii[y] == 0 else min(1.0, max(0.0, (1 - f[i] @ centroids[y]) / radii[y]))
        out[r] = lam * delta * p
        out[r, y] += 1 - lam * delta
    return out, index


def loop_cmc(distmat, q_pids, g_pids, q_camids, g_camids, max_rank=50):
    """Per-query CMC as in `loop_evaluate`, each valid query's curve padded with its last value
    (1) up to min(max_rank, gallery size), for galleries whose kept lists are shorter."""
    num_q, num_g = distmat.shape
    max_rank = min(max_rank, num_g)
    indices = np.argsort(distmat, axis=1, kind="stable")
    curves = []
    for q in range(num_q):
        order = indices[q]
        remove = (g_pids[order] == q_pids[q]) & (g_camids[order] == q_camids[q])
        raw = (g_pids[order] == q_pids[q])[~remove].astype(np.int64)
        if not raw.any():
            continue
        cmc = np.minimum(raw.cumsum(), 1)[:max_rank]
        curves.append(np.concatenate([cmc, np.ones(max_rank - cmc.size, dtype=np.int64)]))
    return np.mean(curves, axis=0)


def propagated_soft_labels(features, labels, jaccard, lam, radius, candidates, min_spread):
    """Neighbour-propagated labels (docs/method.md section 4) in float64, one sample at a time;
    `jaccard` dense, 1 where no pair is stored."""
    f = np.asarray(features, dtype=np.float64)
    centroids, _, _ = cluster_centroids(f, labels)
    num = centroids.shape[0]
    mean, spread = np.zeros(num), np.zeros(num)
    for c in range(num):
        similarity = f[labels == c] @ centroids[c]
        mean[c], spread[c] = similarity.mean(), max(similarity.std(), min_spread)
    index = np.flatnonzero(labels >= 0)
    p = {}
    for i in index:
        z = (centroids @ f[i] - mean) / spread
        keep = np.argsort(-z, kind="stable")[:candidates]
        e = np.zeros(num)
        e[keep] = np.exp(z[keep] - z[keep].max())
        p[i] = e / e.sum()
    out = np.zeros((index.size, num))
    for r, i in enumerate(index):
        near = [i] + [j for j in index if j != i and jaccard[i, j] <= radius]
        out[r] = lam * np.mean([p[j] for j in near], axis=0)
        out[r, labels[i]] += 1 - lam
    return out, index


def matched_soft_labels(labels, previous_labels, previous_soft, lam):
    """RLCC's carried labels (docs/method.md section 4) by loops: IoU of every previous and current
    cluster, rows normalised, the sample's previous row carried across and renormalised."""
    labels, previous_labels = np.asarray(labels), np.asarray(previous_labels)
    index = np.flatnonzero(labels >= 0)
    num, num_previous = int(labels.max()) + 1, int(previous_labels.max()) + 1
    iou = np.zeros((num_previous, num))
    for a in range(num_previous):
        for b in range(num):
            inter = np.sum((previous_labels == a) & (labels == b))
            union = np.sum((previous_labels == a) | (labels == b))
            iou[a, b] = inter / union if union else 0.0
    transfer = iou / np.where(iou.sum(axis=1, keepdims=True) > 0, iou.sum(axis=1, keepdims=True), 1)
    previous_index = list(np.flatnonzero(previous_labels >= 0))
    out = np.zeros((index.size, num))
    for r, i in enumerate(index):
        onehot = np.eye(num)[labels[i]]
        carried = onehot
        if previous_labels[i] >= 0:
            moved = np.asarray(previous_soft[previous_index.index(i)], dtype=np.float64) @ transfer
            if moved.sum() > 0:
                carried = moved / moved.sum()
        out[r] = (1 - lam) * onehot + lam * carried
    return out, index
