"""Camera-aware Jaccard distance (Chen et al., "CA-Jaccard: Camera-aware Jaccard Distance for Person
Re-identification", CVPR 2024), in the same sparse O(N * k) form as `oaecmlr.core.jaccard`.

The k-reciprocal encoding of Zhong et al. is built from one ranking per sample; on data where every
camera forms its own tight group, that ranking is filled by the sample's own camera and the
encoding never overlaps across cameras. Here each sample has two rankings (docs/method.md, section 11):
- intra: the samples of its own camera, itself included (first, ties by index);
- inter: the samples of all other cameras;
and, with F(i, k) the first k+1 entries of a ranking and R(i, k) = {j in F(i, k): i in F(j, k)}
taken in the same ranking,
  R_CA(i)  = R_intra(i, k1_intra) united with R_inter(i, k1_inter)  (no 2/3 expansion),
  V[i, j]  = softmax over j in R_CA(i) of -(2 - 2 f_i.f_j),
  V_qe[i]  = mean of V[j] over the first k2_intra entries of the intra ranking and the first
             k2_inter of the inter ranking (camera-aware query expansion),
and then the usual Jaccard distance and DBSCAN. A camera with fewer samples than a list wants
contributes what it has. Published values: k1_intra 5, k1_inter 20, k2_intra 2, k2_inter 4.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from oaecmlr.core.knn import (
    _EXTRA_CANDIDATES,
    _FP32_ERROR,
    _SIMILARITY_ELEMENTS,
    Neighbours,
    _rows_per_chunk,
    check_features,
    exact_matmuls,
    rank_candidates,
)
from oaecmlr.core.sparse import CHUNK_ELEMENTS, Csr, expand_over


@dataclass(frozen=True)
class CameraRankings:
    """Each sample's nearest same-camera and other-camera samples, nearest first, ties by index;
    rows are padded with index -1 and distance inf where a camera has fewer samples."""

    intra: torch.Tensor  # (N, Wi) int64, the sample itself among them (first, but for exact duplicates)
    intra_distance: torch.Tensor  # (N, Wi) float32, 2 - 2 a.b
    inter: torch.Tensor  # (N, We) int64
    inter_distance: torch.Tensor  # (N, We) float32

    def merged(self, width: int) -> Neighbours:
        """The `width` nearest samples over all cameras, exactly: each one is among the first `width`
        of its own ranking. Rows where both rankings hold fewer are padded with -1."""
        index = torch.cat([self.intra[:, :width], self.inter[:, :width]], dim=1)
        distance = torch.cat([self.intra_distance[:, :width], self.inter_distance[:, :width]], dim=1)
        key_index = torch.where(index >= 0, index, torch.iinfo(torch.long).max)
        index_order = key_index.sort(dim=1).indices  # by index, then stably by distance: ties by index
        distance = distance.gather(1, index_order)
        index = index.gather(1, index_order)
        distance, order = distance.sort(dim=1, stable=True)
        return Neighbours(index.gather(1, order)[:, :width], distance[:, :width], "torch")


@exact_matmuls()  # the float32 certificate below holds only for float32 accumulation
def camera_rankings(features: torch.Tensor, camids, width_intra: int, width_inter: int,
                    chunk_size: int = 4096) -> CameraRankings:
    """The intra- and inter-camera rankings of L2-normalised `features`, exact.

    One symmetric blocked search, as `oaecmlr.core.knn` does for the plain lists (only blocks on and
    above the diagonal are multiplied): each block updates both running candidate lists, the
    same-camera pairs one and the other-camera pairs the other. Candidates are then ranked by the
    float32 distance 2 - 2 a.b with ties by index, and rows that the search error leaves uncertain
    are searched again over their whole camera (or all other cameras)."""
    features = check_features(features)
    n, device = features.shape[0], features.device
    cams = torch.as_tensor(np.asarray(camids), device=device).long()
    if cams.shape != (n,):
        raise ValueError(f"camids must hold one camera per feature row: {tuple(cams.shape)} for {n} rows")
    m_intra, m_inter = min(n, width_intra + _EXTRA_CANDIDATES), min(n, width_inter + _EXTRA_CANDIDATES)
    lists = {"intra": _Running(n, m_intra, device), "inter": _Running(n, m_inter, device)}
    block = max(256, min(chunk_size, int(_SIMILARITY_ELEMENTS**0.5)))
    for i in range(0, n, block):
        left, rows = features[i:i + block], slice(i, i + block)
        for j in range(i, n, block):
            sims = left @ features[j:j + block].T
            same = cams[rows, None] == cams[None, j:j + block]
            for name, mask in (("intra", ~same), ("inter", same)):
                masked = sims.masked_fill(mask, float("-inf"))
                lists[name].merge(rows, masked, j)
                if j != i:
                    lists[name].merge(slice(j, j + block), masked.T.contiguous(), i)
    out = []
    for name, width in (("intra", width_intra), ("inter", width_inter)):
        index, distance = _rank_masked(features, cams, lists[name], width, same_camera=name == "intra",
                                       chunk_size=chunk_size)
        out += [index, distance]
    return CameraRankings(*out)


class _Running:
    """The m most similar columns seen so far per row (similarity -inf: none yet)."""

    def __init__(self, n: int, m: int, device):
        self.m = m
        self.value = torch.full((n, m), float("-inf"), device=device)
        self.index = torch.zeros((n, m), dtype=torch.long, device=device)

    def merge(self, rows: slice, sims: torch.Tensor, column_offset: int) -> None:
        top = sims.topk(min(self.m, sims.shape[1]), dim=1)
        values = torch.cat([self.value[rows], top.values], dim=1)
        indices = torch.cat([self.index[rows], top.indices + column_offset], dim=1)
        keep = values.topk(self.m, dim=1)
        self.value[rows], self.index[rows] = keep.values, indices.gather(1, keep.indices)


def _rank_masked(features: torch.Tensor, cams: torch.Tensor, running: _Running, width: int, same_camera: bool,
                 chunk_size: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The first `width` entries of each row's camera-restricted ranking, padded with -1 / inf."""
    valid = torch.isfinite(running.value)
    index, distance = _ranked(features, features, running.index, valid, width, chunk_size)
    # Uncertain rows: the last candidate is within the search error of the width-th one.
    kth = running.value[:, min(width, running.m) - 1]
    uncertain = valid[:, -1] & (running.value[:, -1] >= kth - _FP32_ERROR)
    if running.m < features.shape[0] and bool(uncertain.any()):
        rows = torch.nonzero(uncertain).squeeze(1)
        step = _rows_per_chunk(features.shape[0], chunk_size)
        for start in range(0, rows.numel(), step):
            chunk = rows[start:start + step]
            allowed = (cams[chunk, None] == cams[None, :]) == same_camera
            exact = (features[chunk] @ features.T).masked_fill(~allowed, float("-inf"))
            top = exact.topk(min(width, exact.shape[1]), dim=1).values[:, -1:]
            wide_width = int((exact >= top - _FP32_ERROR).sum(dim=1).max())
            wide = exact.topk(wide_width, dim=1)
            index[chunk], distance[chunk] = _ranked(features[chunk], features, wide.indices,
                                                    torch.isfinite(wide.values), width, chunk_size)
    return index, distance


def _ranked(queries: torch.Tensor, base: torch.Tensor, candidates: torch.Tensor, valid: torch.Tensor, width: int,
            chunk_size: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The first `width` of the valid candidates by distance (ties by index), padded with -1 / inf."""
    width = min(width, candidates.shape[1])
    index, distance = rank_candidates(queries, base, torch.where(valid, candidates, 0), width, chunk_size, valid=valid)
    return torch.where(torch.isfinite(distance), index, -1), distance


def reciprocal_members(ranked: torch.Tensor, k: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The forward set F(i, k) = ranked[i, :k+1] (padded with -1) and a mask of its members j with
    i in F(j, k), both in the same ranking."""
    n = ranked.shape[0]
    forward = ranked[:, : k + 1]
    width = forward.shape[1]
    table = torch.cat([forward, torch.full((1, width), -2, dtype=forward.dtype, device=forward.device)])
    safe = torch.where(forward >= 0, forward, n)  # padding looks up the row of -2s: never reciprocal
    rows = torch.arange(n, device=ranked.device)
    mask = torch.empty_like(forward, dtype=torch.bool)
    step = max(1, CHUNK_ELEMENTS // (width * width))
    for s in range(0, n, step):
        backward = table[safe[s:s + step]]  # (c, width, width)
        mask[s:s + step] = (backward == rows[s:s + step, None, None]).any(dim=2) & (forward[s:s + step] >= 0)
    return forward, mask


def camera_encoding(rankings: CameraRankings, k1_intra: int, k1_inter: int, k2_intra: int, k2_inter: int) -> Csr:
    """V_qe of CA-Jaccard from the two rankings (see the module docstring)."""
    n = rankings.intra.shape[0]
    device = rankings.intra.device
    intra, intra_mask = reciprocal_members(rankings.intra, k1_intra)
    inter, inter_mask = reciprocal_members(rankings.inter, k1_inter)
    # The two sets are disjoint (same camera / other cameras), so their union is their concatenation.
    members = torch.cat([torch.where(intra_mask, intra, n), torch.where(inter_mask, inter, n)], dim=1)
    distance = torch.cat([rankings.intra_distance[:, : intra.shape[1]], rankings.inter_distance[:, : inter.shape[1]]],
                         dim=1)
    members, order = members.sort(dim=1)
    distance = distance.gather(1, order)
    valid = members != n
    weights = torch.softmax(torch.where(valid, -distance, float("-inf")), dim=1)
    weights = torch.where(valid, weights, torch.zeros_like(weights))  # a row with no member stays empty
    lengths = valid.sum(dim=1)
    crow = torch.zeros(n + 1, dtype=torch.long, device=device)
    crow[1:] = lengths.cumsum(0)
    encoding = Csr(crow, members[valid], weights[valid].float(), n)
    sources = torch.cat([rankings.intra[:, :k2_intra], rankings.inter[:, :k2_inter]], dim=1)
    return expand_over(encoding, sources)


DEFAULTS = {"k1_intra": 5, "k1_inter": 20, "k2_intra": 2, "k2_inter": 4}  # the published values


def camera_parameters(**camera) -> dict[str, int]:
    """k1_intra, k1_inter, k2_intra, k2_inter (missing ones at the published values), checked."""
    unknown = set(camera) - set(DEFAULTS)
    if unknown:
        raise TypeError(f"unknown CA-Jaccard parameter(s) {sorted(unknown)}; they are {', '.join(DEFAULTS)}")
    params = {**DEFAULTS, **camera}
    for name, value in params.items():
        if value < 1:
            raise ValueError(f"{name} must be >= 1, got {value}")
    return params


def rankings_for(features: torch.Tensor, camids, k1: int, params: dict[str, int]) -> CameraRankings:
    """Rankings wide enough for the encoding and for exact global lists of width k1."""
    return camera_rankings(features, camids, max(params["k1_intra"] + 1, params["k2_intra"], k1),
                           max(params["k1_inter"] + 1, params["k2_inter"], k1))


def camera_neighbours(features: torch.Tensor, camids, k1: int, **camera) -> tuple[Csr, Neighbours]:
    """The CA-Jaccard encoding and, for what reads the kNN lists afterwards (OAE's mutual
    neighbours), the plain ranked lists of width k1 (exact: merged from the two rankings)."""
    params = camera_parameters(**camera)
    rankings = rankings_for(features, camids, k1, params)
    return camera_encoding(rankings, **params), rankings.merged(k1)
