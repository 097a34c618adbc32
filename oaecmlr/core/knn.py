"""Exact k nearest neighbours of L2-normalised features, with interchangeable backends.

Every backend proposes candidates with their approximate similarities; one shared step then ranks
them by the same float32 distance (2 - 2 a.b) with ties broken by index, so all backends return
the same neighbours. A backend is a string, resolved in one place (`resolve_backend`).

Candidates are certified per row: when the last candidate trails the k-th by more than the
similarity error of the search, no sample outside them can be in the exact top k (nor tie with
it). Rows without that certificate (exact duplicates, near ties) are searched again over the whole
row in float32, keeping every sample within the error of the k-th. The "torch-bf16" backend
searches in bfloat16 (about 2x faster on CPUs with native bf16 units) under the same certificate,
with the larger bfloat16 error bound `_bf16_error(D)`; it pays only when neighbours are well
separated, since uncertified rows are searched again in float32. The result is exact either way.

Both error bounds assume float32 accumulation. CUDA may accumulate bf16 products in reduced
precision (`allow_bf16_reduced_precision_reduction`, on by default) and float32 ones in TF32
(`set_float32_matmul_precision("high")`), so every search runs under `exact_matmuls`, which turns
both off and restores them.

faiss on a GPU searches the features where they are (no host round-trip), with one
`StandardGpuResources` per device for the process (allocated once, outside PyTorch's caching
allocator, whose unused blocks are freed first), and falls back to the torch search, with one
warning, when the GPU has no memory left for it.
"""

from __future__ import annotations

import contextlib
import importlib.util
import logging
from dataclasses import dataclass

import numpy as np
import torch

log = logging.getLogger(__name__)

BACKENDS = ("auto", "torch", "torch-bf16", "faiss", "numpy")
_EXTRA_CANDIDATES = 8  # candidates beyond k, so that near ties at the k-th place are certified
_BF16_EXTRA_CANDIDATES = 64  # more room for the wider bf16 error
_FP32_ERROR = 1e-4  # bound on |float32 dot - exact dot| of unit vectors from different kernels
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
    """Turn "auto" into the fastest backend: torch, whose symmetric blocked search beat faiss's flat
    index on CPU (5.3 s vs 6.0 s at N=12,936, 23.8 s vs 28.5 s at N=32,621, D=2048, 2 cores) and
    needs no extra package on CUDA."""
    if backend not in BACKENDS:
        raise ValueError(f"unknown kNN backend {backend!r}; choose one of {', '.join(BACKENDS)}")
    if backend == "faiss" and not faiss_available():
        raise ValueError("kNN backend 'faiss' requested but faiss is not installed: pip install 'oaecmlr[faiss]'")
    return "torch" if backend == "auto" else backend


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


@contextlib.contextmanager
def exact_matmuls():
    """Matrix products accumulated in float32, as the certificates' error bounds assume: no TF32 for
    float32 products and no reduced-precision reductions for bf16 ones (both CUDA-only options;
    the CPU's products are the same either way). Process-wide flags, restored on exit."""
    matmul = torch.backends.cuda.matmul
    precision, reduced = torch.get_float32_matmul_precision(), matmul.allow_bf16_reduced_precision_reduction
    torch.set_float32_matmul_precision("highest")
    matmul.allow_bf16_reduced_precision_reduction = False
    try:
        yield
    finally:
        torch.set_float32_matmul_precision(precision)
        matmul.allow_bf16_reduced_precision_reduction = reduced


def knn(features: torch.Tensor, k: int, backend: str = "auto", chunk_size: int = 4096) -> Neighbours:
    """Exact k nearest neighbours of every row of `features` among all rows (itself included)."""
    features = check_features(features)
    n = features.shape[0]
    if not 1 <= k <= n:
        raise ValueError(f"k={k} nearest neighbours need 1 <= k <= N, and N is {n}")
    chosen = resolve_backend(backend, features.device)
    error = _FP32_ERROR
    with exact_matmuls():
        if chosen == "torch-bf16":
            error = 2 * _bf16_error(features.shape[1])
            candidates, similarity = _candidates_torch(features, min(n, k + _BF16_EXTRA_CANDIDATES), chunk_size,
                                                       bf16=True)
        elif chosen == "torch":
            candidates, similarity = _candidates_torch(features, min(n, k + _EXTRA_CANDIDATES), chunk_size)
        elif chosen == "faiss":
            candidates, similarity, chosen = _candidates_faiss(features, min(n, k + _EXTRA_CANDIDATES), chunk_size)
        else:
            candidates, similarity = _candidates_numpy(features, min(n, k + _EXTRA_CANDIDATES), chunk_size)
        return Neighbours(*_rank_and_certify(features, features, candidates, similarity, k, error, chunk_size), chosen)


def _rank_and_certify(queries: torch.Tensor, base: torch.Tensor, candidates: torch.Tensor, similarity: torch.Tensor,
                      k: int, error: float, chunk_size: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The exact top k of each query among `candidates` (sorted by similarity, descending); rows whose
    last candidate is within `error` of the k-th are searched again over the whole base."""
    n = base.shape[0]
    candidates, similarity = candidates.to(queries.device), similarity.to(queries.device)
    index, distance = rank_candidates(queries, base, candidates, k, chunk_size)
    uncertain = similarity[:, -1] >= similarity[:, k - 1] - error
    if candidates.shape[1] < n and bool(uncertain.any()):
        rows = torch.nonzero(uncertain).squeeze(1)
        for start in range(0, rows.numel(), _rows_per_chunk(n, chunk_size)):
            chunk = rows[start:start + _rows_per_chunk(n, chunk_size)]
            exact = queries[chunk] @ base.T
            kth = exact.topk(k, dim=1).values[:, -1:]
            width = int((exact >= kth - _FP32_ERROR).sum(dim=1).max())
            wide = exact.topk(width, dim=1).indices
            index[chunk], distance[chunk] = rank_candidates(queries[chunk], base, wide, k, chunk_size)
    return index, distance


def rank_candidates(queries: torch.Tensor, base: torch.Tensor, candidates: torch.Tensor, k: int,
                    chunk_size: int = 4096, valid: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Rank candidate columns by distance 2 - 2 q.b, ties by index; keep the first k. With `valid`,
    the other candidates get distance inf and sort last."""
    out_index, out_dist = [], []
    m, dim = candidates.shape[1], base.shape[1]
    chunk_size = max(1, min(chunk_size, _GATHER_ELEMENTS // (m * dim), queries.shape[0]))
    # One gather buffer for all chunks: fresh large buffers cost more in page faults than the gather.
    gathered = torch.empty((chunk_size * m, dim), dtype=base.dtype, device=base.device)
    for start in range(0, queries.shape[0], chunk_size):
        q = queries[start:start + chunk_size]
        cand = candidates[start:start + chunk_size]
        rows = torch.index_select(base, 0, cand.reshape(-1), out=gathered[:cand.numel()])
        dots = torch.bmm(rows.view(cand.shape[0], m, dim), q.unsqueeze(2)).squeeze(2)  # (c, m)
        dist = (2 - 2 * dots).clamp_min(0)
        if valid is not None:
            ok = valid[start:start + chunk_size]
            dist = torch.where(ok, dist, float("inf"))
            cand = torch.where(ok, cand, base.shape[0])  # invalid ones after every real index
        index, dist = _sort_by_distance_then_index(cand, dist)
        out_index.append(index[:, :k])
        out_dist.append(dist[:, :k])
    return torch.cat(out_index), torch.cat(out_dist)


def _sort_by_distance_then_index(index: torch.Tensor, dist: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    # Sort by index first, then stably by distance: equal distances keep index order.
    index, order = index.sort(dim=1)
    dist, order2 = dist.gather(1, order).sort(dim=1, stable=True)
    return index.gather(1, order2), dist


def _rows_per_chunk(n: int, chunk_size: int) -> int:
    return max(1, min(chunk_size, _SIMILARITY_ELEMENTS // n))


def _candidates_torch(features: torch.Tensor, m: int, chunk_size: int,
                      bf16: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
    """The m most similar columns of each row and their similarities, sorted (bf16 products if asked).

    The similarity matrix is symmetric, so only blocks on and above the diagonal are multiplied;
    each block updates the running top m of its rows and, transposed, of its columns.
    """
    search = features.bfloat16() if bf16 else features
    n = features.shape[0]
    block = max(256, min(chunk_size, int(_SIMILARITY_ELEMENTS**0.5)))
    best_value = torch.full((n, m), float("-inf"), device=features.device)
    best_index = torch.zeros((n, m), dtype=torch.long, device=features.device)

    def merge(rows: slice, sims: torch.Tensor, column_offset: int) -> None:
        top = sims.topk(min(m, sims.shape[1]), dim=1)
        values = torch.cat([best_value[rows], top.values], dim=1)
        indices = torch.cat([best_index[rows], top.indices + column_offset], dim=1)
        keep = values.topk(m, dim=1)
        best_value[rows], best_index[rows] = keep.values, indices.gather(1, keep.indices)

    for i in range(0, n, block):
        left = search[i:i + block]
        for j in range(i, n, block):
            sims = (left @ search[j:j + block].T).float()
            merge(slice(i, i + block), sims, j)
            if j != i:
                merge(slice(j, j + block), sims.T.contiguous(), i)
    return best_index, best_value


def _bf16_error(dim: int) -> float:
    """Bound on |bf16 product - exact dot| for unit vectors: both inputs rounded to bfloat16 (unit
    roundoff 2^-8), float32 accumulation over `dim` terms, and the result rounded to bfloat16."""
    unit = 2.0**-8
    inputs = 2 * unit + unit * unit
    return inputs + dim * 2.0**-23 + unit * (1 + inputs) + 1e-5


def _candidates_numpy(features: torch.Tensor, m: int, chunk_size: int) -> tuple[torch.Tensor, torch.Tensor]:
    x = features.cpu().numpy()
    index, values = [], []
    step = _rows_per_chunk(x.shape[0], chunk_size)
    for start in range(0, x.shape[0], step):
        sims = x[start:start + step] @ x.T
        top = np.argpartition(-sims, m - 1, axis=1)[:, :m]
        top_values = np.take_along_axis(sims, top, axis=1)
        order = np.argsort(-top_values, axis=1, kind="stable")
        index.append(np.take_along_axis(top, order, axis=1))
        values.append(np.take_along_axis(top_values, order, axis=1))
    return torch.from_numpy(np.concatenate(index).astype(np.int64)), torch.from_numpy(np.concatenate(values))


def _candidates_faiss(features: torch.Tensor, m: int, chunk_size: int,
                      on_gpu: bool | None = None) -> tuple[torch.Tensor, torch.Tensor, str]:
    """faiss's flat inner-product search: on the GPU where the features are (faiss-gpu), else on
    the CPU. Returns the backend that searched: "faiss", or "torch" after a GPU out-of-memory."""
    import faiss  # optional dependency, imported only when chosen

    if on_gpu is None:
        on_gpu = features.device.type == "cuda" and hasattr(faiss, "StandardGpuResources")
    if on_gpu:
        try:
            return (*_faiss_gpu_search(features, m), "faiss")
        except (RuntimeError, MemoryError) as exc:  # faiss reports a failed cudaMalloc as a RuntimeError
            if not _out_of_memory(exc):
                raise
            log.warning("faiss ran out of GPU memory for the kNN of %d features; the torch search is used instead "
                        "(%s)", features.shape[0], " ".join(str(exc).split())[:160])
            return (*_candidates_torch(features, m, chunk_size), "torch")
    x = np.ascontiguousarray(features.cpu().numpy(), dtype=np.float32)
    index = faiss.IndexFlatIP(x.shape[1])
    index.add(x)
    values, top = index.search(x, m)
    return torch.from_numpy(top.astype(np.int64)), torch.from_numpy(values), "faiss"


_GPU_RESOURCES: dict[int, object] = {}  # one faiss StandardGpuResources per GPU, kept for the process


def _faiss_gpu_search(features: torch.Tensor, m: int) -> tuple[torch.Tensor, torch.Tensor]:
    """faiss's brute-force GPU search over the CUDA tensor itself (`faiss.contrib.torch_utils` lets
    `knn_gpu` take torch tensors, on PyTorch's current stream): candidates and similarities, on the
    features' device. PyTorch's cached free blocks are released first, since faiss allocates its
    own memory with cudaMalloc."""
    import faiss
    import faiss.contrib.torch_utils  # noqa: F401  (teaches faiss.knn_gpu torch tensors)

    device = features.device.index or 0  # a CUDA tensor's device always has its index
    if device not in _GPU_RESOURCES:
        _GPU_RESOURCES[device] = faiss.StandardGpuResources()
    torch.cuda.empty_cache()
    values, index = faiss.knn_gpu(_GPU_RESOURCES[device], features, features, m,
                                  metric=faiss.METRIC_INNER_PRODUCT, device=device)
    return index, values


def _out_of_memory(exc: BaseException) -> bool:
    """Whether a faiss or torch error says the GPU had no memory left."""
    text = str(exc).lower()
    return isinstance(exc, (MemoryError, torch.cuda.OutOfMemoryError)) or "out of memory" in text or "alloc fail" in text


def rank_rows(distance: torch.Tensor, k: int) -> torch.Tensor:
    """The k smallest columns of each row of a dense distance matrix, ties broken by index."""
    n = distance.shape[1]
    m = min(n, k + _EXTRA_CANDIDATES)
    parts = []
    for start in range(0, distance.shape[0], _rows_per_chunk(n, 4096)):
        block = distance[start:start + _rows_per_chunk(n, 4096)]
        top = block.topk(m, dim=1, largest=False)
        index = _sort_by_distance_then_index(top.indices, top.values)[0][:, :k]
        # A tie at the k-th value that reaches the last candidate may hold lower indices outside.
        tied = top.values.max(dim=1).values <= top.values.kthvalue(k, dim=1).values
        if m < n and bool(tied.any()):
            rows = torch.nonzero(tied).squeeze(1)
            full = torch.arange(n, device=block.device).expand(rows.numel(), n)
            index[rows] = _sort_by_distance_then_index(full, block[rows])[0][:, :k]
        parts.append(index)
    return torch.cat(parts)
