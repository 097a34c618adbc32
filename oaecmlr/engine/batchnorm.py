"""Which images a BatchNorm layer normalises together, whatever the number of workers.

The published Cluster Contrast runs used 4 GPUs under nn.DataParallel: each replica got a chunk of
64 consecutive images of the PK-ordered batch of 256, so every BatchNorm (backbone and BN neck)
normalised groups of 4 identities x 16 images. `train.bn_group` reproduces that on any world size:
groups are consecutive chunks of the global batch, as DataParallel's chunks were.

- whole batch (`bn_group` 0, or at least the global batch): plain BatchNorm in one process,
  `GlobalBatchNorm` (CPU, gloo) or SyncBatchNorm (CUDA) across workers;
- a worker holding whole groups: `GroupBatchNorm` normalises each chunk with its own statistics
  (ghost BatchNorm), no communication;
- a group spanning several workers (8 GPUs x 32 images with groups of 64): neighbouring workers
  form process subgroups, and the global-batch layer runs within each subgroup.

Running statistics (eval mode: clustering features and the test) follow `train.bn_running`:
"first" keeps the first group's, as DataParallel keeps replica 0's; "mean" the mean over all
groups. Either way they do not depend on the world size: workers update their own copies and
`sync_running_stats` makes them equal (from rank 0, or averaged) before features are extracted or
a checkpoint is written. State-dict keys stay those of the BatchNorm replaced, so checkpoints move
between world sizes and load into plain models.
"""

from __future__ import annotations

import torch
import torch.distributed as tdist
import torch.nn.functional as F
from torch import nn

from oaecmlr.config import BatchNormPlan
from oaecmlr.config.settings import BN_RUNNING

_BatchNorm = nn.modules.batchnorm._BatchNorm


class GroupBatchNorm(_BatchNorm):
    """BatchNorm1d/2d that, in training, normalises each chunk of `group_size` consecutive samples
    with the chunk's own statistics (ghost BatchNorm). Eval mode uses the running statistics."""

    def __init__(self, num_features: int, group_size: int, running: str = "first", eps: float = 1e-5,
                 momentum: float | None = 0.1, affine: bool = True, track_running_stats: bool = True):
        super().__init__(num_features, eps, momentum, affine, track_running_stats)
        if running not in BN_RUNNING:
            raise ValueError(f"train.bn_running must be one of {', '.join(BN_RUNNING)}, got {running!r}")
        self.group_size, self.running = group_size, running

    def _check_input_dim(self, x):
        if x.dim() < 2:
            raise ValueError(f"expected at least 2-D input, got {x.dim()}-D")

    def forward(self, x):
        if not self.training or x.shape[0] <= self.group_size:
            return super().forward(x)
        if x.shape[0] % self.group_size:
            raise ValueError(f"a batch of {x.shape[0]} is not whole BatchNorm groups of {self.group_size}")
        chunks = x.split(self.group_size)
        if not self.track_running_stats:
            return torch.cat([self._normalise(c, None, None, 0.0) for c in chunks])
        self.num_batches_tracked.add_(1)
        factor = self.momentum if self.momentum is not None else 1.0 / float(self.num_batches_tracked)
        if self.running == "first":  # chunk 0 updates the running statistics, as replica 0 did
            return torch.cat([self._normalise(chunks[0], self.running_mean, self.running_var, factor)]
                             + [self._normalise(c, None, None, 0.0) for c in chunks[1:]])
        means, variances, outs = [], [], []
        for c in chunks:  # each chunk updates a copy; the running statistics move by their mean
            mean, var = self.running_mean.clone(), self.running_var.clone()
            outs.append(self._normalise(c, mean, var, factor))
            means.append(mean)
            variances.append(var)
        with torch.no_grad():
            self.running_mean.copy_(torch.stack(means).mean(0))
            self.running_var.copy_(torch.stack(variances).mean(0))
        return torch.cat(outs)

    def _normalise(self, x, running_mean, running_var, factor: float):
        return F.batch_norm(x, running_mean, running_var, self.weight, self.bias, True, factor, self.eps)


class _GlobalBatchNormFunction(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, weight, bias, eps, group):
        dims = [0] + list(range(2, x.dim()))
        shape = [1, -1] + [1] * (x.dim() - 2)
        xf = x.float()
        count = torch.tensor([x.numel() / x.shape[1]], dtype=torch.float32)
        stats = torch.cat([xf.sum(dims), (xf * xf).sum(dims), count])
        tdist.all_reduce(stats, group=group)
        channels = x.shape[1]
        total = stats[-1]
        mean = stats[:channels] / total
        var = (stats[channels:2 * channels] / total - mean * mean).clamp_min(0)
        invstd = torch.rsqrt(var + eps)
        xhat = (xf - mean.view(shape)) * invstd.view(shape)
        ctx.save_for_backward(xhat, weight, invstd)
        ctx.total, ctx.dims, ctx.shape, ctx.group = total, dims, shape, group
        return (xhat * weight.view(shape) + bias.view(shape)).to(x.dtype), mean, var, total

    @staticmethod
    def backward(ctx, grad_out, _mean, _var, _total):
        xhat, weight, invstd = ctx.saved_tensors
        dims, shape = ctx.dims, ctx.shape
        dy = grad_out.float()
        sums = torch.cat([dy.sum(dims), (dy * xhat).sum(dims)])
        local_dweight, local_dbias = sums[len(sums) // 2:].clone(), sums[: len(sums) // 2].clone()
        tdist.all_reduce(sums, group=ctx.group)
        channels = xhat.shape[1]
        mean_dy = (sums[:channels] / ctx.total).view(shape)
        mean_dy_xhat = (sums[channels:] / ctx.total).view(shape)
        dx = (weight * invstd).view(shape) * (dy - mean_dy - xhat * mean_dy_xhat)
        return dx.to(grad_out.dtype), local_dweight, local_dbias, None, None


class GlobalBatchNorm(_BatchNorm):
    """BatchNorm1d/2d whose training statistics span the workers of `process_group` (None: all).
    torch's SyncBatchNorm does this on CUDA; it refuses CPU tensors, so gloo workers use this."""

    def __init__(self, *args, process_group=None, **kwargs):
        super().__init__(*args, **kwargs)
        self.process_group = process_group

    def _check_input_dim(self, x):
        if x.dim() < 2:
            raise ValueError(f"expected at least 2-D input, got {x.dim()}-D")

    def forward(self, x):
        # One worker: the global batch is the local one (torch's SyncBatchNorm does the same).
        if not (self.training and tdist.is_available() and tdist.is_initialized()
                and tdist.get_world_size(self.process_group) > 1):
            return super().forward(x)
        out, mean, var, total = _GlobalBatchNormFunction.apply(x, self.weight, self.bias, self.eps, self.process_group)
        with torch.no_grad():
            if self.track_running_stats:
                self.num_batches_tracked += 1
                unbiased = var * total / (total - 1).clamp_min(1)
                self.running_mean.mul_(1 - self.momentum).add_(self.momentum * mean)
                self.running_var.mul_(1 - self.momentum).add_(self.momentum * unbiased)
        return out


def apply_plan(module: nn.Module, plan: BatchNormPlan, *, world_size: int, rank: int, cuda: bool,
               running: str = "first", distributed: bool | None = None) -> nn.Module:
    """Give every BatchNorm of `module` the plan's statistics groups (in place where possible; the
    returned module is the one to use). `distributed` (default: world_size > 1) puts whole-batch
    BatchNorm on the collective path even at world size 1, where it falls back to local BatchNorm."""
    if plan.mode == "whole":
        distributed = world_size > 1 if distributed is None else distributed
        return _replace(module, _global_factory(cuda, None)) if distributed else module
    if plan.mode == "local":
        if plan.groups_per_rank == 1:
            return module  # each worker's batch is one group: plain BatchNorm
        return _replace(module, lambda bn: _copy_into(GroupBatchNorm(bn.num_features, plan.group_size, running, bn.eps,
                                                                     bn.momentum, bn.affine, bn.track_running_stats), bn))
    subgroups = [tdist.new_group(list(range(start, start + plan.ranks_per_group)))  # every rank creates every group
                 for start in range(0, world_size, plan.ranks_per_group)]
    return _replace(module, _global_factory(cuda, subgroups[rank // plan.ranks_per_group]))


def _global_factory(cuda: bool, group):
    if cuda:
        def sync(bn):
            out = nn.SyncBatchNorm(bn.num_features, bn.eps, bn.momentum, bn.affine, bn.track_running_stats, group)
            return _copy_into(out, bn)
        return sync
    return lambda bn: _copy_into(GlobalBatchNorm(bn.num_features, bn.eps, bn.momentum, bn.affine,
                                                 bn.track_running_stats, process_group=group), bn)


def _copy_into(new: _BatchNorm, old: _BatchNorm) -> _BatchNorm:
    """`new` sharing `old`'s parameters and buffers (same state-dict keys)."""
    if old.affine:
        new.weight, new.bias = old.weight, old.bias
    if old.track_running_stats:
        new.running_mean, new.running_var = old.running_mean, old.running_var
        new.num_batches_tracked = old.num_batches_tracked
    new.train(old.training)
    return new


def _replace(module: nn.Module, make) -> nn.Module:
    if isinstance(module, _BatchNorm) and type(module) in (nn.BatchNorm1d, nn.BatchNorm2d, nn.BatchNorm3d):
        return make(module)
    for name, child in module.named_children():
        module.add_module(name, _replace(child, make))
    return module


def sync_running_stats(module: nn.Module, running: str, world_size: int) -> None:
    """Make every worker's running statistics the plan's: rank 0's ("first": it holds group 0) or
    the mean over workers ("mean": each worker's copy moved by the mean of its own groups, and the
    update is linear). A collective: every worker calls it at the same point."""
    if world_size < 2 or not tdist.is_initialized():
        return
    layers = [m for m in module.modules() if isinstance(m, _BatchNorm) and m.track_running_stats]
    if not layers:
        return
    flat = torch.cat([torch.cat([m.running_mean.float(), m.running_var.float()]) for m in layers])
    if running == "first":
        tdist.broadcast(flat, 0)
    else:
        tdist.all_reduce(flat)
        flat /= world_size
    offset = 0
    for m in layers:
        n = m.running_mean.numel()
        m.running_mean.copy_(flat[offset:offset + n])
        m.running_var.copy_(flat[offset + n:offset + 2 * n])
        offset += 2 * n
