"""k-reciprocal re-ranking at test time (Zhong et al., CVPR 2017), on the sparse encoding of
`oaecmlr.core.jaccard`, with the reference semantics of the original `re_ranking` function:
squared distances, each row divided by its column's maximum, ranked lists of k1 + 1 entries.
"""

from __future__ import annotations

import numpy as np
import torch

from oaecmlr.core.jaccard import jaccard_rows, k_reciprocal_encoding, query_expansion
from oaecmlr.core.knn import rank_rows


def re_rank(q_g, q_q, g_g, k1: int = 20, k2: int = 6, lambda_value: float = 0.3) -> np.ndarray:
    """Re-ranked query x gallery distance: (1 - lambda) * Jaccard + lambda * original."""
    q_g, q_q, g_g = (torch.as_tensor(np.asarray(m, dtype=np.float32)) for m in (q_g, q_q, g_g))
    num_q, num_g = q_g.shape
    if q_q.shape != (num_q, num_q) or g_g.shape != (num_g, num_g):
        raise ValueError(f"re_rank: q_g {tuple(q_g.shape)}, q_q {tuple(q_q.shape)} and g_g {tuple(g_g.shape)} disagree")
    if not 0 <= lambda_value <= 1:
        raise ValueError(f"lambda_value must be in [0, 1], got {lambda_value}")
    total = num_q + num_g
    if total < k1 + 1:
        raise ValueError(f"re_rank needs at least k1 + 1 = {k1 + 1} images, got {total}")
    original = torch.cat([torch.cat([q_q, q_g], dim=1), torch.cat([q_g.T, g_g], dim=1)]).pow(2)
    original = (original / original.max(dim=0).values).T.contiguous()
    ranked = rank_rows(original, k1 + 1)

    def distance(rows: torch.Tensor, cols: torch.Tensor, valid: torch.Tensor) -> torch.Tensor:
        return original[rows[:, None], cols]

    encoding = query_expansion(k_reciprocal_encoding(ranked, k1, distance), ranked, k2)
    jaccard = torch.ones(num_q, total)
    sparse = jaccard_rows(encoding, torch.arange(num_q), 1.0)
    rows = torch.repeat_interleave(torch.arange(num_q), sparse.row_lengths())
    jaccard[rows, sparse.col] = sparse.val
    final = (1 - lambda_value) * jaccard + lambda_value * original[:num_q]
    return final[:, num_q:].numpy()
