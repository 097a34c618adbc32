"""The compressed sparse rows shared by the k-reciprocal and the camera-aware Jaccard encodings, and
the chunked segment arithmetic both build on (docs/method.md section 2: memory stays O(N k))."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import scipy.sparse as sp
import torch

CHUNK_ELEMENTS = 1 << 24  # elements of the largest temporary a chunk may create


@dataclass(frozen=True)
class Csr:
    crow: torch.Tensor  # (N+1,) int64
    col: torch.Tensor  # (nnz,) int64, sorted within each row
    val: torch.Tensor  # (nnz,) float32
    num_cols: int

    @property
    def num_rows(self) -> int:
        return self.crow.numel() - 1

    def row_lengths(self) -> torch.Tensor:
        return self.crow[1:] - self.crow[:-1]

    def to_scipy(self) -> sp.csr_matrix:
        # Built from raw arrays so that explicit zeros (d(i, i) = 0) are kept.
        return sp.csr_matrix(
            (self.val.cpu().numpy(), self.col.cpu().numpy(), self.crow.cpu().numpy()),
            shape=(self.num_rows, self.num_cols),
        )


def expand_over(encoding: Csr, sources: torch.Tensor) -> Csr:
    """V_qe[i] = mean of V[j] over the valid entries j of sources[i] (-1 marks padding)."""
    n = encoding.num_rows
    device = encoding.col.device
    width = sources.shape[1]
    valid = sources >= 0
    safe = sources.clamp_min(0)
    lengths = encoding.row_lengths()
    per_row = valid.sum(dim=1)
    crows, cols, vals = [torch.zeros(1, dtype=torch.long, device=device)], [], []
    offset = 0
    for rows in row_chunks((lengths[safe] * valid).sum(dim=1), CHUNK_ELEMENTS):
        keep = valid[rows].flatten()
        src = safe[rows].flatten()[keep]
        out_row = rows.repeat_interleave(width)[keep]
        position, owner = expand_segments(encoding.crow[src], lengths[src])
        key = (out_row[owner] - rows[0]) * n + encoding.col[position]
        key, order = key.sort()
        unique_key, inverse = torch.unique_consecutive(key, return_inverse=True)
        summed = torch.zeros(unique_key.numel(), dtype=torch.float32, device=device)
        summed.index_add_(0, inverse, encoding.val[position][order])
        local_row = unique_key // n
        counts = torch.bincount(local_row, minlength=rows.numel())
        crows.append(offset + counts.cumsum(0))
        offset += unique_key.numel()
        cols.append(unique_key % n)
        vals.append(summed / per_row[rows][local_row].to(torch.float32))
    return Csr(torch.cat(crows), torch.cat(cols), torch.cat(vals), n)


def transpose(m: Csr) -> Csr:
    rows = torch.repeat_interleave(torch.arange(m.num_rows, device=m.col.device), m.row_lengths())
    order = torch.argsort(m.col * m.num_rows + rows)
    counts = torch.bincount(m.col, minlength=m.num_cols)
    crow = torch.zeros(m.num_cols + 1, dtype=torch.long, device=m.col.device)
    crow[1:] = counts.cumsum(0)
    return Csr(crow, rows[order], m.val[order], m.num_rows)


def segment_positions(starts: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
    """Concatenation of the ranges [starts[t], starts[t] + lengths[t])."""
    dtype = lengths.dtype
    shift = torch.repeat_interleave(starts - (lengths.cumsum(0, dtype=dtype) - lengths), lengths)
    return torch.arange(shift.numel(), device=lengths.device, dtype=dtype) + shift


def expand_segments(starts: torch.Tensor, lengths: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """The positions of `segment_positions` and the owner t of each."""
    owner = torch.repeat_interleave(torch.arange(lengths.numel(), device=lengths.device, dtype=lengths.dtype), lengths)
    return segment_positions(starts, lengths), owner


def row_chunks(work: torch.Tensor, budget: int, max_rows: int | None = None):
    """Yield consecutive row-index tensors whose summed `work` stays within `budget` (>= 1 row)."""
    n = work.numel()
    cumulative = np.concatenate([[0], work.cpu().numpy().cumsum()])
    start = 0
    while start < n:
        end = int(np.searchsorted(cumulative, cumulative[start] + budget, side="right")) - 1
        end = max(end, start + 1)
        if max_rows is not None:
            end = min(end, start + max_rows)
        end = min(end, n)
        yield torch.arange(start, end, device=work.device)
        start = end
