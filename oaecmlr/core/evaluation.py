"""Market-1501 evaluation protocol (docs/method.md section 5), vectorised over chunks of queries.

For each query, gallery images of the same identity seen by the same camera are removed; queries
left without a true match are skipped and counted. CMC, mAP (non-interpolated) and mINP
(Ye et al., "Deep Learning for Person Re-identification: A Survey and Outlook", 2021).
"""

from __future__ import annotations

import numpy as np
import torch

_CHUNK_ELEMENTS = 1 << 24


def _as_tensor(x, name: str, dtype=None) -> torch.Tensor:
    t = x if isinstance(x, torch.Tensor) else torch.as_tensor(np.asarray(x))
    if dtype is not None:
        t = t.to(dtype)
    if t.dim() != 1:
        raise ValueError(f"{name} must be 1-D, got shape {tuple(t.shape)}")
    return t.cpu()


def evaluate_rank(distmat, q_pids, g_pids, q_camids, g_camids, max_rank: int = 50) -> dict:
    """mAP, mINP (fractions in [0, 1]) and CMC (length max_rank) of a query x gallery distance matrix.

    Returns {"mAP", "mINP", "cmc", "num_valid_queries", "num_skipped_queries"}.
    """
    dist = distmat if isinstance(distmat, torch.Tensor) else torch.as_tensor(np.asarray(distmat))
    dist = dist.detach().float().cpu()
    if dist.dim() != 2:
        raise ValueError(f"distmat must be 2-D (queries x gallery), got shape {tuple(dist.shape)}")
    num_q, num_g = dist.shape
    q_pids, q_camids = _as_tensor(q_pids, "q_pids", torch.long), _as_tensor(q_camids, "q_camids", torch.long)
    g_pids, g_camids = _as_tensor(g_pids, "g_pids", torch.long), _as_tensor(g_camids, "g_camids", torch.long)
    for name, t, expected in (("q_pids", q_pids, num_q), ("q_camids", q_camids, num_q),
                              ("g_pids", g_pids, num_g), ("g_camids", g_camids, num_g)):
        if t.numel() != expected:
            raise ValueError(f"{name} has {t.numel()} entries but distmat is {num_q} x {num_g}")
    if num_q == 0 or num_g == 0:
        raise ValueError(f"nothing to evaluate: distmat is {num_q} x {num_g}")
    if torch.isnan(dist).any():
        raise ValueError("distmat contains NaN")
    max_rank = min(max_rank, num_g)

    ap, inp, first_hit, valid = [], [], [], []
    step = max(1, _CHUNK_ELEMENTS // num_g)
    for s in range(0, num_q, step):
        order = torch.argsort(dist[s:s + step], dim=1, stable=True)
        pids, cams = g_pids[order], g_camids[order]
        match = pids == q_pids[s:s + step, None]
        keep = ~(match & (cams == q_camids[s:s + step, None]))
        good = match & keep
        rank = keep.cumsum(dim=1)  # 1-based rank among the kept gallery items
        hits = good.cumsum(dim=1)
        num_rel = good.sum(dim=1)
        ok = num_rel > 0
        precision = torch.where(good, hits / rank.clamp_min(1), 0.0)
        ap.append(precision.sum(dim=1)[ok] / num_rel[ok])
        hit_rank = torch.where(good, rank, 0)
        inp.append(num_rel[ok] / hit_rank.max(dim=1).values[ok])
        first_hit.append(torch.where(good, rank, num_g + 1).min(dim=1).values[ok])
        valid.append(ok)
    valid_queries = int(torch.cat(valid).sum())
    if valid_queries == 0:
        raise ValueError("no query has a true match in the gallery from another camera; check the split")
    first = torch.cat(first_hit)
    cmc = (first[:, None] <= torch.arange(1, max_rank + 1)[None, :]).double().mean(dim=0)
    return {
        "mAP": float(torch.cat(ap).double().mean()),
        "mINP": float(torch.cat(inp).double().mean()),
        "cmc": cmc.numpy(),
        "num_valid_queries": valid_queries,
        "num_skipped_queries": num_q - valid_queries,
    }
