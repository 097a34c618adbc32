"""Sparse k-reciprocal Jaccard distance (Zhong et al., "Re-ranking Person Re-identification with
k-reciprocal Encoding", CVPR 2017), with the exact semantics of the Cluster Contrast pipeline.

The widely used implementation holds several dense N x N arrays and loops over rows in Python.
Here every step works on padded (rows x width) tensors or CSR triplets, chunked over rows, so
memory is O(N * k) plus one chunk, and the same code runs on CPU or CUDA tensors.

Internal sparse matrices are `Csr(crow, col, val)` torch triplets with sorted columns per row.
"""

from __future__ import annotations

from collections.abc import Callable

import scipy.sparse as sp
import torch

from oaecmlr.core.camera_jaccard import camera_neighbours
from oaecmlr.core.knn import Neighbours, check_features, knn
from oaecmlr.core.sparse import (
    CHUNK_ELEMENTS,
    Csr,
    expand_over,
    expand_segments,
    row_chunks,
    segment_positions,
    transpose,
)

PairDistance = Callable[[torch.Tensor, torch.Tensor, torch.Tensor], torch.Tensor]


def jaccard_distance(features: torch.Tensor, *, k1: int = 30, k2: int = 6, max_distance: float = 1.0,
                     knn_backend: str = "auto", camids=None, **camera) -> sp.csr_matrix:
    """k-reciprocal Jaccard distance between all rows of L2-normalised `features` (N x D); with
    `camids`, the camera-aware CA-Jaccard distance (`oaecmlr.core.camera_jaccard`; `camera` takes
    k1_intra, k1_inter, k2_intra, k2_inter).

    Returns an N x N `scipy.sparse.csr_matrix` holding exactly the pairs with distance
    < `max_distance` (explicit zeros kept, the diagonal included); absent pairs are >= it.
    """
    return jaccard_from_features(features, k1=k1, k2=k2, max_distance=max_distance, knn_backend=knn_backend,
                                 camids=camids, **camera).to_scipy()


def jaccard_from_features(features: torch.Tensor, *, k1: int = 30, k2: int = 6, max_distance: float = 1.0,
                          knn_backend: str = "auto", camids=None, **camera) -> Csr:
    """`jaccard_distance` returning the torch `Csr` on the features' device."""
    features = check_features(features)
    n = features.shape[0]
    _check_k(n, k1, k2, max_distance)
    encoding, _ = encode(features, k1, k2, knn_backend, camids, **camera)
    distances = jaccard_rows(encoding, torch.arange(n, device=features.device), max_distance)
    return symmetrize(distances) if features.device.type == "cuda" else distances


def encode(features: torch.Tensor, k1: int, k2: int, knn_backend: str = "auto", camids=None,
           **camera) -> tuple[Csr, Neighbours]:
    """The query-expanded encoding V_qe and the ranked kNN lists (N, k1): Zhong et al.'s, or with
    `camids` CA-Jaccard's (whose lists are the same exact global ones, merged from its rankings)."""
    if camids is None:
        neighbours = knn(features, k1, backend=knn_backend)
        return encode_features(features, neighbours.index, neighbours.distance, k1, k2), neighbours
    return camera_neighbours(features, camids, k1, **camera)


def encode_features(features: torch.Tensor, ranked: torch.Tensor, ranked_distance: torch.Tensor, k1: int,
                    k2: int) -> Csr:
    """Query-expanded k-reciprocal encoding of features, V from the squared distance 2 - 2 a.b.

    Distances of pairs in the kNN lists are reused; only the other members of R*(i) are computed.
    """
    by_index, order = ranked.sort(dim=1)
    known_distance = ranked_distance.gather(1, order)

    def squared_distance(rows: torch.Tensor, cols: torch.Tensor, valid: torch.Tensor) -> torch.Tensor:
        listed = by_index[rows]
        position = torch.searchsorted(listed, cols).clamp_max(listed.shape[1] - 1)
        found = listed.gather(1, position) == cols
        dist = known_distance[rows].gather(1, position)
        r, c = torch.nonzero(valid & ~found, as_tuple=True)
        step = max(1, CHUNK_ELEMENTS // features.shape[1])
        for s in range(0, r.numel(), step):
            a, b = rows[r[s:s + step]], cols[r[s:s + step], c[s:s + step]]
            dist[r[s:s + step], c[s:s + step]] = (2 - 2 * (features[a] * features[b]).sum(dim=1)).clamp_min(0)
        return dist

    return query_expansion(k_reciprocal_encoding(ranked, k1, squared_distance), ranked, k2)


def _check_k(n: int, k1: int, k2: int, max_distance: float) -> None:
    if k1 < 1 or k2 < 1:
        raise ValueError(f"k1 and k2 must be >= 1, got k1={k1}, k2={k2}")
    if n < k1:
        raise ValueError(f"the Jaccard distance needs at least k1={k1} samples, got N={n}; lower k1")
    if not 0 < max_distance <= 1:
        raise ValueError(f"max_distance must be in (0, 1] (absent pairs mean distance 1), got {max_distance}")


def reciprocal_sets(ranked: torch.Tensor, k: int) -> tuple[torch.Tensor, torch.Tensor]:
    """R(i, k): the forward set F(i, k) = ranked[i, :k+1] and a mask of its reciprocal members."""
    forward = ranked[:, : k + 1]
    width = forward.shape[1]
    rows = torch.arange(ranked.shape[0], device=ranked.device)
    mask = torch.empty_like(forward, dtype=torch.bool)
    step = max(1, CHUNK_ELEMENTS // (width * width))
    for s in range(0, ranked.shape[0], step):
        backward = forward[forward[s:s + step]]  # (c, width, width)
        mask[s:s + step] = (backward == rows[s:s + step, None, None]).any(dim=2)
    return forward, mask


def k_reciprocal_encoding(ranked: torch.Tensor, k1: int, squared_distance: PairDistance) -> Csr:
    """V: for each i, softmax of -distance over the expanded k-reciprocal set R*(i).

    `squared_distance(rows (c,), cols (c, w), valid (c, w))` gives the (c, w) distances of the pairs;
    only the valid ones are read.
    """
    n = ranked.shape[0]
    device = ranked.device
    near, near_mask = reciprocal_sets(ranked, k1)
    half, half_mask = reciprocal_sets(ranked, round(k1 / 2))
    half_size = half_mask.sum(dim=1)
    w1, wh = near.shape[1], half.shape[1]
    sentinel = n  # sorts after every real index

    crows, cols, vals = [torch.zeros(1, dtype=torch.long, device=device)], [], []
    offset = 0
    step = max(1, CHUNK_ELEMENTS // (w1 * wh * w1))
    for s in range(0, n, step):
        rows = torch.arange(s, min(n, s + step), device=device)
        r_near = torch.where(near_mask[rows], near[rows], -1)  # (c, w1), -1 = not reciprocal
        cand = near[rows]  # candidates j (valid where near_mask)
        cand_half = torch.where(half_mask[cand], half[cand], -2)  # (c, w1, wh) R(j, h), -2 = absent
        overlap = _members_in(cand_half.flatten(1), r_near).view(cand_half.shape).sum(dim=2)  # |R(j,h) & R(i,k1)|
        accept = near_mask[rows] & (3 * overlap > 2 * half_size[cand])  # |R(j,h) & R(i,k1)| > 2/3 |R(j,h)|
        extra = torch.where(accept.unsqueeze(2) & (cand_half >= 0), cand_half, sentinel)
        members = torch.cat([torch.where(r_near >= 0, r_near, sentinel), extra.flatten(1)], dim=1)
        members, _ = members.sort(dim=1)
        duplicate = torch.zeros_like(members, dtype=torch.bool)
        duplicate[:, 1:] = members[:, 1:] == members[:, :-1]
        valid = (members != sentinel) & ~duplicate
        width = int(valid.sum(dim=1).max())
        # Compact each row's unique members to the left (sorted), then trim the padding.
        members = torch.where(valid, members, sentinel).sort(dim=1).values[:, :width]
        valid = members != sentinel
        dist = squared_distance(rows, members.clamp_max(n - 1), valid)
        weights = torch.softmax(torch.where(valid, -dist, float("-inf")), dim=1)
        lengths = valid.sum(dim=1)
        crows.append(offset + lengths.cumsum(0))
        offset += int(lengths.sum())
        cols.append(members[valid])
        vals.append(weights[valid].float())
    return Csr(torch.cat(crows), torch.cat(cols), torch.cat(vals), n)


def _members_in(values: torch.Tensor, sets: torch.Tensor) -> torch.Tensor:
    """values[i, t] in sets[i, :] for each row (sets padded with -1, values with other negatives)."""
    ordered = sets.sort(dim=1).values
    position = torch.searchsorted(ordered, values).clamp_max(ordered.shape[1] - 1)
    return ordered.gather(1, position) == values


def query_expansion(encoding: Csr, ranked: torch.Tensor, k2: int) -> Csr:
    """V_qe[i] = mean of V[j] over the first k2 entries of the ranked list of i (itself included)."""
    if k2 == 1:
        return encoding
    return expand_over(encoding, ranked[:, :k2])


def jaccard_rows(encoding: Csr, rows: torch.Tensor, max_distance: float = 1.0) -> Csr:
    """Jaccard distance d(i, j) = 1 - s/(2 - s), s = sum_k min(V[i,k], V[j,k]), for the given rows.

    Only pairs sharing support (s > 0) can be < 1; those with distance < max_distance are kept.
    For each chunk of rows, every (row, column, row') co-occurrence adds min(V[row,k], V[row',k]) into a
    dense chunk x N accumulator; the touched entries are its non-zeros.
    """
    n = encoding.num_rows
    device = encoding.col.device
    if rows.numel() == 0:
        empty = torch.zeros(0, dtype=torch.long, device=device)
        return Csr(torch.zeros(1, dtype=torch.long, device=device), empty, empty.float(), n)
    chunk_rows = max(1, min(rows.numel(), CHUNK_ELEMENTS // max(n, 1)))
    # int32 indices halve the memory traffic of the co-occurrence arrays when they fit.
    index = torch.int32 if max(encoding.col.numel() + 1, chunk_rows * n + 1) < 2**31 else torch.long
    by_column = transpose(encoding)
    row_start, col = encoding.crow.to(index), encoding.col.to(index)
    col_start, col_row = by_column.crow.to(index), by_column.col.to(index)
    col_lengths = col_start[1:] - col_start[:-1]
    row_lengths = row_start[1:] - row_start[:-1]
    # Work of each row: for each of its entries, the entries of that column.
    work = torch.zeros(encoding.col.numel() + 1, dtype=torch.long, device=device)
    work[1:] = col_lengths[encoding.col].cumsum(0)
    row_work = work[encoding.crow[rows + 1]] - work[encoding.crow[rows]]

    crows, cols, vals = [torch.zeros(1, dtype=torch.long, device=device)], [], []
    offset = 0
    accumulator = torch.zeros(chunk_rows, n, dtype=torch.float32, device=device)
    for local in row_chunks(row_work, CHUNK_ELEMENTS, max_rows=chunk_rows):
        chunk = rows[local]
        entry, entry_owner = expand_segments(row_start[chunk], row_lengths[chunk])
        k = col[entry]
        lengths = col_lengths[k]
        # Each entry (local row r, column k, value a) meets every entry (r', k, b) of its column.
        pos = segment_positions(col_start[k], lengths)
        key = torch.repeat_interleave(entry_owner * n, lengths) + col_row[pos]
        left = torch.repeat_interleave(encoding.val[entry], lengths)
        shared_flat = accumulator[: chunk.numel()].view(-1)
        shared_flat.index_add_(0, key, torch.minimum(left, by_column.val[pos]))
        touched = torch.nonzero(shared_flat).squeeze(1)
        shared = shared_flat[touched]
        shared_flat[touched] = 0
        distance = (1 - shared / (2 - shared)).clamp_min(0)
        keep = distance < max_distance
        touched, distance = touched[keep], distance[keep]
        counts = torch.bincount(touched // n, minlength=chunk.numel())
        crows.append(offset + counts.cumsum(0))
        offset += touched.numel()
        cols.append(touched % n)
        vals.append(distance)
    return Csr(torch.cat(crows), torch.cat(cols), torch.cat(vals), n)


def symmetrize(m: Csr) -> Csr:
    """Make d(i, j) == d(j, i) exactly by mirroring the upper triangle (i <= j).

    On the CPU the sums of (i, j) and (j, i) run in the same order and agree bit for bit; CUDA adds
    them with atomics in any order, so a one-ulp difference could make DBSCAN's graph asymmetric.
    """
    n = m.num_rows
    rows = torch.repeat_interleave(torch.arange(n, device=m.col.device), m.row_lengths())
    upper = rows <= m.col
    r, c, v = rows[upper], m.col[upper], m.val[upper]
    strict = r != c
    r, c, v = torch.cat([r, c[strict]]), torch.cat([c, r[strict]]), torch.cat([v, v[strict]])
    order = torch.argsort(r * n + c)
    counts = torch.bincount(r, minlength=n)
    crow = torch.zeros(n + 1, dtype=torch.long, device=m.col.device)
    crow[1:] = counts.cumsum(0)
    return Csr(crow, c[order], v[order], n)
