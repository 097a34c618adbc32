"""Slow, obviously-correct dense implementations used as test oracles (never by the product).

They follow the reference procedures line by line: the Cluster Contrast `compute_jaccard_distance`,
the original `re_ranking`, and the per-query Market-1501 evaluation loop.
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


def encode(dist: np.ndarray, ranked: np.ndarray, k1: int, k2: int) -> np.ndarray:
    """Dense V after query expansion: softmax(-dist) over R*(i), then mean over k2 neighbours."""
    n = dist.shape[0]
    half = int(np.around(k1 / 2))
    near = [k_reciprocal(ranked, i, k1) for i in range(n)]
    near_half = [k_reciprocal(ranked, i, half) for i in range(n)]
    V = np.zeros((n, dist.shape[1]), dtype=np.float64)
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
    out = np.zeros((len(rows), V.shape[0]))
    for r, i in enumerate(rows):
        shared = np.minimum(V[i][None, :], V).sum(axis=1)
        out[r] = 1 - shared / (2 - shared)
    return np.maximum(out, 0)


def dense_jaccard(features: np.ndarray, k1: int, k2: int) -> np.ndarray:
    """The training-time Jaccard distance: ranked lists of k1 entries including the sample itself."""
    f = features.astype(np.float64)
    dist = np.maximum(2 - 2 * f @ f.T, 0)
    ranked = ranked_lists(dist, k1)
    return jaccard_from_encoding(encode(dist, ranked, k1, k2), range(len(f)))


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
