"""Collectives the training loop needs, identical in one process and under torch.distributed, and
joining a process group (spawned workers or torchrun).

With world size 1 every call is a no-op or an identity, so the loop has one code path.
`forced=True` takes the distributed path (DDP, global BatchNorm, collectives) even at world size
1: that is how the NCCL path is measured against the plain one on a single GPU.
NCCL joins CUDA workers, gloo CPU workers; a collective that waits longer than the timeout fails
its worker, so a hung peer cannot hang the run. Start-up, where rank 0 may decode images for far
longer than that, waits on a gloo group of its own with a long timeout (`wait_at_startup`).

`Dist.device` is the device of the collectives (the worker's GPU under NCCL, the CPU under gloo):
every tensor handed to one must be on it, and each collective checks that, on every backend.
"""

from __future__ import annotations

import os
import socket
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any

import torch
import torch.distributed as tdist

from oaecmlr.engine.devices import resolve_device

STARTUP_TIMEOUT_S = 6 * 3600.0  # decoding MSMT17's 126,441 JPEGs on few cores; a dead peer is ended by its supervisor


@dataclass
class Dist:
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    forced: bool = False
    device: torch.device = field(default_factory=lambda: torch.device("cpu"))

    def __post_init__(self) -> None:
        self.device = resolve_device(self.device)

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def active(self) -> bool:
        return self.world_size > 1 or self.forced

    def on_device(self, *tensors: torch.Tensor) -> None:
        """Refuse a tensor that is not on the collectives' device (NCCL would fail on a CPU tensor;
        this says where, on gloo as well)."""
        for tensor in tensors:
            if tensor.device != self.device:
                raise RuntimeError(f"a collective got a tensor on {tensor.device}; this worker's collectives run on "
                                   f"{self.device} (Dist.device)")

    def wait_at_startup(self) -> None:
        """A barrier that waits up to STARTUP_TIMEOUT_S, not `train.dist_timeout`: on a gloo group of
        its own, so an NCCL watchdog cannot abort a rank that waits while another decodes images."""
        if not self.active:
            return
        group = tdist.new_group(backend="gloo", timeout=timedelta(seconds=STARTUP_TIMEOUT_S))  # every rank creates it
        tdist.barrier(group=group)  # the group goes with the default group at `leave_group`

    def broadcast_object(self, obj: Any, src: int = 0) -> Any:
        if not self.active:
            return obj
        holder = [obj if self.rank == src else None]
        tdist.broadcast_object_list(holder, src)
        return holder[0]

    def all_gather_object(self, obj: Any) -> list:
        """Every rank's `obj`, in rank order."""
        if not self.active:
            return [obj]
        out: list = [None] * self.world_size
        tdist.all_gather_object(out, obj)
        return out

    def broadcast_buffers(self, module: torch.nn.Module, src: int = 0) -> None:
        """Make every buffer of `module` rank `src`'s, bit for bit, whatever its shape on the others
        (they are resized first): one shape message, then one broadcast per buffer."""
        if not self.active:
            return
        names = [name for name, _ in module.named_buffers()]
        shapes = self.broadcast_object([(tuple(b.shape), b.dtype) for _, b in module.named_buffers()], src)
        for name, (shape, dtype) in zip(names, shapes):
            owner, _, attr = name.rpartition(".")
            holder = module.get_submodule(owner)
            buffer = getattr(holder, attr)
            if self.rank != src and (tuple(buffer.shape) != shape or buffer.dtype != dtype):
                buffer = torch.empty(shape, dtype=dtype, device=self.device)
                setattr(holder, attr, buffer)
            self.on_device(buffer)
            tdist.broadcast(buffer, src)

    def gather_rows(self, local: torch.Tensor, counts: list[int]) -> torch.Tensor:
        """Concatenate every rank's rows in rank order (ranks may hold different row counts)."""
        if not self.active:
            return local
        self.on_device(local)
        width = max(counts)
        padded = torch.zeros((width, *local.shape[1:]), dtype=local.dtype, device=self.device)
        padded[: local.shape[0]] = local
        parts = [torch.empty_like(padded) for _ in range(self.world_size)]
        tdist.all_gather(parts, padded)
        return torch.cat([p[:c] for p, c in zip(parts, counts)])

    def all_gather_cat(self, local: torch.Tensor) -> torch.Tensor:
        """Concatenate equally sized tensors from all ranks in rank order."""
        if not self.active:
            return local
        self.on_device(local)
        parts = [torch.empty_like(local) for _ in range(self.world_size)]
        tdist.all_gather(parts, local.contiguous())
        return torch.cat(parts)

    def mean(self, value: torch.Tensor) -> torch.Tensor:
        """The mean over ranks of a tensor (each rank's own value in one process)."""
        if not self.active:
            return value
        self.on_device(value)
        total = value.detach().clone()
        tdist.all_reduce(total)
        return total / self.world_size

    def any(self, flag: bool) -> bool:
        """True on every rank when any rank passes True (stop requests, NaN losses)."""
        if not self.active:
            return flag
        t = torch.tensor([1.0 if flag else 0.0], device=self.device)
        tdist.all_reduce(t, op=tdist.ReduceOp.MAX)
        return bool(t.item() > 0)


SINGLE = Dist()


def torchrun_env() -> tuple[int, int, int] | None:
    """(rank, world size, local rank) when started by torchrun with more than one worker."""
    if "RANK" in os.environ and int(os.environ.get("WORLD_SIZE", "1")) > 1:
        return int(os.environ["RANK"]), int(os.environ["WORLD_SIZE"]), int(os.environ.get("LOCAL_RANK", "0"))
    return None


def init_group(device: torch.device, rank: int, world: int, timeout_s: float) -> torch.device:
    """Join the default group (NCCL on a GPU, gloo on the CPU); returns the resolved device, which
    the worker's `Dist` carries. An index-less `cuda` is made `cuda:N` first: `set_device` and
    NCCL's `device_id` need the index."""
    device = resolve_device(device)
    backend = "nccl" if device.type == "cuda" else "gloo"
    if device.type == "cuda":
        torch.cuda.set_device(device)
    tdist.init_process_group(backend, rank=rank, world_size=world, timeout=timedelta(seconds=timeout_s),
                             device_id=device if device.type == "cuda" else None)
    return device


def leave_group() -> None:
    if tdist.is_initialized():
        tdist.destroy_process_group()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]
