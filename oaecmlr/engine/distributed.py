"""Collectives the training loop needs, identical in one process and under torch.distributed, and
joining a process group (spawned workers or torchrun).

With world size 1 every call is a no-op or an identity, so the loop has one code path.
`forced=True` takes the distributed path (DDP, global BatchNorm, collectives) even at world size
1: that is how the NCCL path is measured against the plain one on a single GPU.
NCCL joins CUDA workers, gloo CPU workers; a collective that waits longer than the timeout fails
its worker, so a hung peer cannot hang the run.
"""

from __future__ import annotations

import os
import socket
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

import torch
import torch.distributed as tdist


@dataclass
class Dist:
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    forced: bool = False

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def active(self) -> bool:
        return self.world_size > 1 or self.forced

    def barrier(self) -> None:
        if self.active:
            tdist.barrier()

    def broadcast_object(self, obj: Any, src: int = 0) -> Any:
        if not self.active:
            return obj
        holder = [obj if self.rank == src else None]
        tdist.broadcast_object_list(holder, src)
        return holder[0]

    def gather_rows(self, local: torch.Tensor, counts: list[int]) -> torch.Tensor:
        """Concatenate every rank's rows in rank order (ranks may hold different row counts)."""
        if not self.active:
            return local
        width = max(counts)
        padded = torch.zeros((width, *local.shape[1:]), dtype=local.dtype, device=local.device)
        padded[: local.shape[0]] = local
        parts = [torch.empty_like(padded) for _ in range(self.world_size)]
        tdist.all_gather(parts, padded)
        return torch.cat([p[:c] for p, c in zip(parts, counts)])

    def all_gather_cat(self, local: torch.Tensor) -> torch.Tensor:
        """Concatenate equally sized tensors from all ranks in rank order."""
        if not self.active:
            return local
        parts = [torch.empty_like(local) for _ in range(self.world_size)]
        tdist.all_gather(parts, local.contiguous())
        return torch.cat(parts)

    def mean(self, value: torch.Tensor) -> torch.Tensor:
        """The mean over ranks of a tensor (each rank's own value in one process)."""
        if not self.active:
            return value
        total = value.detach().clone()
        tdist.all_reduce(total)
        return total / self.world_size

    def any(self, flag: bool, device: torch.device) -> bool:
        """True on every rank when any rank passes True (stop requests, NaN losses)."""
        if not self.active:
            return flag
        t = torch.tensor([1.0 if flag else 0.0], device=device)
        tdist.all_reduce(t, op=tdist.ReduceOp.MAX)
        return bool(t.item() > 0)


SINGLE = Dist()


def torchrun_env() -> tuple[int, int, int] | None:
    """(rank, world size, local rank) when started by torchrun with more than one worker."""
    if "RANK" in os.environ and int(os.environ.get("WORLD_SIZE", "1")) > 1:
        return int(os.environ["RANK"]), int(os.environ["WORLD_SIZE"]), int(os.environ.get("LOCAL_RANK", "0"))
    return None


def init_group(device: torch.device, rank: int, world: int, timeout_s: float) -> None:
    backend = "nccl" if device.type == "cuda" else "gloo"
    if device.type == "cuda":
        torch.cuda.set_device(device)
    tdist.init_process_group(backend, rank=rank, world_size=world, timeout=timedelta(seconds=timeout_s),
                             device_id=device if device.type == "cuda" else None)


def leave_group() -> None:
    if tdist.is_initialized():
        tdist.destroy_process_group()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]
