"""Feature extraction (eval mode, test transform) and query x gallery distances."""

from __future__ import annotations

import contextlib
from collections.abc import Callable

import torch

from oaecmlr.core.rerank import re_rank_bytes, re_rank_features
from oaecmlr.data.augment import eval_batch


def autocast(device: torch.device, enabled: bool):
    """bf16 autocast on the device when enabled (the engine enables it where bf16 is fast)."""
    if enabled:
        return torch.autocast(device.type, dtype=torch.bfloat16)
    return contextlib.nullcontext()


@torch.no_grad()
def extract_features(model: torch.nn.Module, images: torch.Tensor, *, out_size: tuple[int, int], batch_size: int,
                     device: torch.device, amp: bool = False, channels_last: bool = False,
                     rows: range | None = None) -> torch.Tensor:
    """L2-normalised float32 features of `images[rows]` (all rows by default), on `device`."""
    was_training = model.training
    model.eval()
    rows = rows if rows is not None else range(images.shape[0])
    parts = []
    for start in range(rows.start, rows.stop, batch_size):
        batch = images[start:min(start + batch_size, rows.stop)].to(device, non_blocking=True)
        x = eval_batch(batch, out_size, channels_last=channels_last)
        with autocast(device, amp):
            parts.append(model(x).float())
    model.train(was_training)
    if not parts:
        return torch.zeros(0, getattr(model, "feature_dim", 0), device=device)
    return torch.cat(parts)


def distance_matrix(query: torch.Tensor, gallery: torch.Tensor, rerank: bool = False,
                    say: Callable[[str], None] | None = None) -> torch.Tensor:
    """Query x gallery squared Euclidean distances of normalised features, or the re-ranked
    distance (k-reciprocal re-ranking, k1=20, k2=6, lambda=0.3), returned on the CPU. Re-ranking
    runs in blocks of rows on the features' device, or on the CPU (said through `say`) when that
    GPU has too little memory free for it."""
    q, g = query.float(), gallery.float()
    if not rerank:
        return (2 - 2 * q @ g.T).clamp_min(0).cpu()
    device = rerank_device(q.device, q.shape[0], g.shape[0], q.shape[1], say)
    return re_rank_features(q.to(device), g.to(device)).cpu()


def rerank_device(device: torch.device, num_query: int, num_gallery: int, dim: int,
                  say: Callable[[str], None] | None = None) -> torch.device:
    """The features' `device` where re-ranking fits in its free memory (PyTorch's cached blocks
    counted as free), else the CPU."""
    if device.type != "cuda":
        return device
    need = re_rank_bytes(num_query, num_gallery, dim)
    free = torch.cuda.mem_get_info(device)[0] + torch.cuda.memory_reserved(device) - torch.cuda.memory_allocated(device)
    if need <= free:
        return device
    if say:
        say(f"re-ranking on the CPU: it needs about {need / 2**30:.1f} GiB and {device} has {free / 2**30:.1f} GiB free")
    return torch.device("cpu")
