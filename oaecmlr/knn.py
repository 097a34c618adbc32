"""Exact k nearest neighbours of L2-normalised features, with interchangeable backends.

Every backend proposes a few more candidates than asked; one shared step then ranks them by the
same float32 distance (2 - 2 a.b) with ties broken by index, so all backends return the same
neighbours. A backend is a string, resolved in one place (`resolve_backend`).

On CPUs with native bfloat16 matrix units the torch backend searches in bfloat16 (about 3x faster
than float32 there) and certifies each row: bfloat16 rounding moves a dot product of unit vectors by
at most `_bf16_error(D)`, so when the last candidate trails the k-th by more than twice that, no
sample outside the candidates can belong to the exact top k. Rows without that certificate are
searched again in float32. The result is exact either way.
"""

from __future__ import annotations

import functools
import importlib.util
import logging
import time
from dataclasses import dataclass

import numpy as np
import torch

log = logging.getLogger(__name__)

BACKENDS = ("auto", "torch", "faiss", "numpy")
_EXTRA_CANDIDATES = 8  # margin so that near-ties at the k-th place are ranked by the shared step
_BF16_EXTRA_CANDIDATES = 24  # more room for the bf16 certificate
_SIMILARITY_ELEMENTS = 1 << 26  # largest (rows x N) similarity block
_GATHER_ELEMENTS = 1 << 24  # largest (rows x candidates x D) gather when ranking


@dataclass(frozen=True)
class Neighbours:
    """`index[i]` holds the k nearest samples of i (i itself first, normally), nearest first."""

    index: torch.Tensor  # (N, k) int64, on the features' device
    distance: torch.Tensor  # (N, k) float32 squared Euclidean distance 2 - 2 a.b
    backend: str  # the backend used, e.g. "torch", "torch-bf16" (certified), "faiss", "numpy"


def faiss_available() -> bool:
    return importlib.util.find_spec("faiss") is not None


def resolve_backend(backend: str, device: torch.device) -> str:
    """Turn "auto" into the fastest backend present: torch on CUDA or on CPUs with fast bfloat16
    matrix units (certified search), else faiss if installed, else torch."""
    if backend not in BACKENDS:
        raise ValueError(f"unknown kNN backend {backend!r}; choose one of {', '.join(BACKENDS)}")
    if backend == "faiss" and not faiss_available():
        raise ValueError("kNN backend 'faiss' requested but faiss is not installed: pip install 'oaecmlr[faiss]'")
    if backend != "auto":
        return backend
    if device.type == "cuda" or _bf16_is_faster():
        return "torch"
    return "faiss" if faiss_available() else "torch"


def check_features(features: torch.Tensor, name: str = "features") -> torch.Tensor:
    """Validate a feature matrix and return it as contiguous float32, L2-normalised.

    Refuses NaN/inf and zero rows. Rows whose norm is not 1 are normalised (and logged once), as
    every reference pipeline feeds normalised features here.
    """
    if not isinstance(features, torch.Tensor):
        features = torch.as_tensor(np.asarray(features))
    if features.dim() != 2:
        raise ValueError(f"{name} must be a 2-D (N, D) matrix, got shape {tuple(features.shape)}")
    features = features.detach().float().contiguous()
    if not torch.isfinite(features).all():
        bad = int((~torch.isfinite(features)).any(dim=1).sum())
        raise ValueError(f"{name} contain NaN or inf in {bad} rows; check the model output for divergence")
    norms = features.norm(dim=1)
    if (norms == 0).any():
        raise ValueError(f"{name} have {int((norms == 0).sum())} all-zero rows, which cannot be normalised")
    if (norms - 1).abs().max() > 1e-3:
        log.info("%s were not L2-normalised; normalising them", name)
        features = features / norms[:, None]
    return features


def knn(features: torch.Tensor, k: int, backend: str = "auto", chunk_size: int = 4096) -> Neighbours:
    """Exact k nearest neighbours of every row of `features` among all rows (itself included)."""
    features = check_features(features)
    n = features.shape[0]
    if not 1 <= k <= n:
        raise ValueError(f"k={k} nearest neighbours need 1 <= k <= N, and N is {n}")
    chosen = resolve_backend(backend, features.device)
    m = min(n, k + _EXTRA_CANDIDATES)
    if chosen == "torch" and features.device.type == "cpu" and _bf16_is_faster():
        candidates = _candidates_bf16_certified(features, k, chunk_size)
        chosen = "torch-bf16"
    elif chosen == "torch":
        candidates = _candidates_torch(features, m, chunk_size)
    elif chosen == "faiss":
        candidates = _candidates_faiss(features, m)
    else:
        candidates = _candidates_numpy(features, m, chunk_size)
    index, distance = rank_candidates(features, features, candidates.to(features.device), k, chunk_size)
    return Neighbours(index=index, distance=distance, backend=chosen)


def rank_candidates(queries: torch.Tensor, base: torch.Tensor, candidates: torch.Tensor, k: int,
                    chunk_size: int = 4096) -> tuple[torch.Tensor, torch.Tensor]:
    """Rank candidate columns by distance 2 - 2 q.b, ties by index; keep the first k."""
    out_index, out_dist = [], []
    chunk_size = max(1, min(chunk_size, _GATHER_ELEMENTS // (candidates.shape[1] * base.shape[1])))
    for start in range(0, queries.shape[0], chunk_size):
        q = queries[start:start + chunk_size]
        cand = candidates[start:start + chunk_size]
        dots = torch.bmm(base[cand], q.unsqueeze(2)).squeeze(2)  # (c, m)
        dist = (2 - 2 * dots).clamp_min(0)
        # Sort by index first, then stably by distance: equal distances keep index order.
        cand, order = cand.sort(dim=1)
        dist = dist.gather(1, order)
        dist, order = dist.sort(dim=1, stable=True)
        out_index.append(cand.gather(1, order)[:, :k])
        out_dist.append(dist[:, :k])
    return torch.cat(out_index), torch.cat(out_dist)


def _rows_per_chunk(n: int, chunk_size: int) -> int:
    return max(1, min(chunk_size, _SIMILARITY_ELEMENTS // n))


def _candidates_torch(features: torch.Tensor, m: int, chunk_size: int) -> torch.Tensor:
    parts = []
    step = _rows_per_chunk(features.shape[0], chunk_size)
    for start in range(0, features.shape[0], step):
        sims = features[start:start + step] @ features.T
        parts.append(sims.topk(m, dim=1).indices)
    return torch.cat(parts)


def _bf16_error(dim: int) -> float:
    """Bound on |bf16 dot - exact dot| for unit vectors: input rounding plus float32 accumulation."""
    unit = 2.0**-9
    return 2 * unit + unit * unit + dim * 2.0**-23 + 1e-5


def _candidates_bf16_certified(features: torch.Tensor, k: int, chunk_size: int) -> torch.Tensor:
    n, dim = features.shape
    m = min(n, k + _BF16_EXTRA_CANDIDATES)
    if m == n:
        return _candidates_torch(features, m, chunk_size)
    low = features.bfloat16()
    margin = 2 * _bf16_error(dim)
    parts = []
    step = _rows_per_chunk(n, chunk_size)
    for start in range(0, n, step):
        approx = (low[start:start + step] @ low.T).float().topk(m, dim=1)
        certified = approx.values[:, m - 1] < approx.values[:, k - 1] - margin
        top = approx.indices
        if not bool(certified.all()):
            redo = torch.nonzero(~certified).squeeze(1)
            exact = features[start + redo] @ features.T
            top[redo] = exact.topk(m, dim=1).indices
        parts.append(top)
    return torch.cat(parts)


@functools.lru_cache(maxsize=1)
def _bf16_is_faster() -> bool:
    """Time one bf16 and one float32 product once per process: native bf16 units win by ~3x."""
    a = torch.randn(512, 1024)
    timings = []
    for dtype in (torch.float32, torch.bfloat16):
        x = a.to(dtype)
        x @ x.T  # warm up
        start = time.perf_counter()
        for _ in range(3):
            x @ x.T
        timings.append(time.perf_counter() - start)
    return timings[1] < 0.6 * timings[0]


def _candidates_numpy(features: torch.Tensor, m: int, chunk_size: int) -> torch.Tensor:
    x = features.cpu().numpy()
    parts = []
    step = _rows_per_chunk(x.shape[0], chunk_size)
    for start in range(0, x.shape[0], step):
        sims = x[start:start + step] @ x.T
        top = np.argpartition(-sims, m - 1, axis=1)[:, :m]
        parts.append(top)
    return torch.from_numpy(np.concatenate(parts).astype(np.int64))


def _candidates_faiss(features: torch.Tensor, m: int) -> torch.Tensor:
    import faiss  # optional dependency, imported only when chosen

    x = np.ascontiguousarray(features.cpu().numpy(), dtype=np.float32)
    index = faiss.IndexFlatIP(x.shape[1])
    if features.device.type == "cuda" and hasattr(faiss, "StandardGpuResources"):
        resources = faiss.StandardGpuResources()
        index = faiss.index_cpu_to_gpu(resources, features.device.index or 0, index)
    index.add(x)
    _, top = index.search(x, m)
    return torch.from_numpy(top.astype(np.int64))


def rank_rows(distance: torch.Tensor, k: int) -> torch.Tensor:
    """The k smallest columns of each row of a dense distance matrix, ties broken by index."""
    m = min(distance.shape[1], k + _EXTRA_CANDIDATES)
    parts = []
    step = _rows_per_chunk(distance.shape[1], 4096)
    for start in range(0, distance.shape[0], step):
        block = distance[start:start + step]
        cand = block.topk(m, dim=1, largest=False).indices.sort(dim=1).values
        values = block.gather(1, cand)
        order = values.sort(dim=1, stable=True).indices
        parts.append(cand.gather(1, order)[:, :k])
    return torch.cat(parts)
