"""k-reciprocal re-ranking at test time (Zhong et al., CVPR 2017), on the sparse encoding of
`oaecmlr.core.jaccard`, with the reference semantics of the original `re_ranking` function:
squared distances, each row divided by its column's maximum, ranked lists of k1 + 1 entries.

`re_rank` takes the three distance matrices, as the reference does. `re_rank_features` computes
the same from the features, a block of rows at a time, so no N x N matrix ever exists (MSMT17's
82,161 gallery images make one of 27 GB): its memory is one block, the sparse encoding and the
num_q x num_g result (`re_rank_bytes` estimates it, for choosing the device).
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import torch

from oaecmlr.core.jaccard import jaccard_rows, k_reciprocal_encoding, query_expansion
from oaecmlr.core.knn import rank_rows

_BLOCK_ELEMENTS = 1 << 25  # largest (rows x N) block of distances, or (rows x members x D) gather


def re_rank(q_g, q_q, g_g, k1: int = 20, k2: int = 6, lambda_value: float = 0.3) -> np.ndarray:
    """Re-ranked query x gallery distance: (1 - lambda) * Jaccard + lambda * original."""
    q_g, q_q, g_g = (torch.as_tensor(np.asarray(m, dtype=np.float32)) for m in (q_g, q_q, g_g))
    num_q, num_g = q_g.shape
    if q_q.shape != (num_q, num_q) or g_g.shape != (num_g, num_g):
        raise ValueError(f"re_rank: q_g {tuple(q_g.shape)}, q_q {tuple(q_q.shape)} and g_g {tuple(g_g.shape)} disagree")
    _check(num_q + num_g, k1, lambda_value)
    original = torch.cat([torch.cat([q_q, q_g], dim=1), torch.cat([q_g.T, g_g], dim=1)]).pow(2)
    original = (original / original.max(dim=0).values).T.contiguous()

    def distance(rows: torch.Tensor, cols: torch.Tensor, valid: torch.Tensor) -> torch.Tensor:
        return original[rows[:, None], cols]

    return _re_rank(lambda start, stop: original[start:stop], distance, num_q, num_g, k1, k2, lambda_value,
                    original.shape[0]).numpy()


def re_rank_features(query: torch.Tensor, gallery: torch.Tensor, *, k1: int = 20, k2: int = 6,
                     lambda_value: float = 0.3, block_rows: int | None = None) -> torch.Tensor:
    """`re_rank` of the Euclidean distances of L2-normalised features, on their device, `block_rows`
    rows of the (N x N) distance at a time (default: blocks of about 2^25 elements). Rows are
    normalised by their own maximum, which is their column's in the symmetric distance."""
    features = torch.cat([query, gallery]).float()
    num_q, num_g, total = query.shape[0], gallery.shape[0], query.shape[0] + gallery.shape[0]
    _check(total, k1, lambda_value)
    step = block_rows or max(1, _BLOCK_ELEMENTS // total)
    row_max = torch.empty(total, device=features.device)

    def squared(dots: torch.Tensor) -> torch.Tensor:
        return (2 - 2 * dots).clamp_min(0).sqrt().pow(2)  # as the reference: Euclidean distance, squared

    def rows_of(start: int, stop: int) -> torch.Tensor:
        block = squared(features[start:stop] @ features.T)
        row_max[start:stop] = block.max(dim=1).values
        return block / row_max[start:stop, None]

    def distance(rows: torch.Tensor, cols: torch.Tensor, valid: torch.Tensor) -> torch.Tensor:
        out = torch.empty(cols.shape, device=features.device)
        sub = max(1, _BLOCK_ELEMENTS // max(1, cols.shape[1] * features.shape[1]))
        for s in range(0, rows.numel(), sub):
            r, c = rows[s:s + sub], cols[s:s + sub]
            dots = torch.bmm(features[c], features[r, :, None]).squeeze(2)
            out[s:s + sub] = squared(dots) / row_max[r, None]
        return out

    return _re_rank(rows_of, distance, num_q, num_g, k1, k2, lambda_value, step)


def re_rank_bytes(num_query: int, num_gallery: int, dim: int, k1: int = 20) -> int:
    """About the most memory `re_rank_features` holds at once: the features, a block of distances
    and its temporaries, the ranked lists, the sparse encodings, and three num_q x num_g arrays."""
    total = num_query + num_gallery
    block = 4 * min(_BLOCK_ELEMENTS, total * total) * 4
    encoding = 2 * total * 4 * (k1 + 1) * 12  # V and V_qe: int64 column + float32 value per entry
    return (4 * total * dim + block + 8 * total * (k1 + 1) + encoding + 3 * 4 * num_query * num_gallery
            + 8 * 4 * (1 << 24))  # jaccard_rows's accumulator and co-occurrence arrays


def _check(total: int, k1: int, lambda_value: float) -> None:
    if not 0 <= lambda_value <= 1:
        raise ValueError(f"lambda_value must be in [0, 1], got {lambda_value}")
    if total < k1 + 1:
        raise ValueError(f"re_rank needs at least k1 + 1 = {k1 + 1} images, got {total}")


def _re_rank(rows_of: Callable[[int, int], torch.Tensor], distance, num_q: int, num_g: int, k1: int, k2: int,
             lambda_value: float, step: int) -> torch.Tensor:
    """The algorithm over row blocks of the normalised distance (`rows_of(start, stop)`, each asked
    once, in order) and single pairs of it (`distance`): ranked lists, the query-expanded
    k-reciprocal encoding, the queries' Jaccard distance to the gallery, and the blend."""
    total = num_q + num_g
    ranked, query_rows = [], []
    for start in range(0, total, step):
        block = rows_of(start, min(total, start + step))
        ranked.append(rank_rows(block, k1 + 1))
        if start < num_q:
            query_rows.append(block[: num_q - start, num_q:].clone())
    ranked = torch.cat(ranked)
    device = ranked.device
    encoding = query_expansion(k_reciprocal_encoding(ranked, k1, distance), ranked, k2)
    sparse = jaccard_rows(encoding, torch.arange(num_q, device=device), 1.0)
    rows = torch.repeat_interleave(torch.arange(num_q, device=device), sparse.row_lengths())
    in_gallery = sparse.col >= num_q
    jaccard = torch.ones(num_q, num_g, device=device)
    jaccard[rows[in_gallery], sparse.col[in_gallery] - num_q] = sparse.val[in_gallery]
    return (1 - lambda_value) * jaccard + lambda_value * torch.cat(query_rows)
