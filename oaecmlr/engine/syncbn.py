"""Batch normalisation over the global batch of all workers.

On CUDA, torch's SyncBatchNorm does this. It refuses CPU tensors, so CPU workers (gloo, `--gpus
cpu,cpu`) use `GlobalBatchNorm`: the same statistics and gradients, with the per-channel sums
all-reduced. Either way the result does not depend on how the batch is split across workers.
State-dict keys stay those of the BatchNorm it replaces, so checkpoints move between world sizes.
"""

from __future__ import annotations

import torch
import torch.distributed as tdist
from torch import nn


class _GlobalBatchNormFunction(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, weight, bias, eps):
        dims = [0] + list(range(2, x.dim()))
        shape = [1, -1] + [1] * (x.dim() - 2)
        xf = x.float()
        count = torch.tensor([x.numel() / x.shape[1]], dtype=torch.float32)
        stats = torch.cat([xf.sum(dims), (xf * xf).sum(dims), count])
        tdist.all_reduce(stats)
        channels = x.shape[1]
        total = stats[-1]
        mean = stats[:channels] / total
        var = (stats[channels:2 * channels] / total - mean * mean).clamp_min(0)
        invstd = torch.rsqrt(var + eps)
        xhat = (xf - mean.view(shape)) * invstd.view(shape)
        ctx.save_for_backward(xhat, weight, invstd)
        ctx.total, ctx.dims, ctx.shape = total, dims, shape
        return (xhat * weight.view(shape) + bias.view(shape)).to(x.dtype), mean, var, total

    @staticmethod
    def backward(ctx, grad_out, _mean, _var, _total):
        xhat, weight, invstd = ctx.saved_tensors
        dims, shape = ctx.dims, ctx.shape
        dy = grad_out.float()
        sums = torch.cat([dy.sum(dims), (dy * xhat).sum(dims)])
        local_dweight, local_dbias = sums[len(sums) // 2:].clone(), sums[: len(sums) // 2].clone()
        tdist.all_reduce(sums)
        channels = xhat.shape[1]
        mean_dy = (sums[:channels] / ctx.total).view(shape)
        mean_dy_xhat = (sums[channels:] / ctx.total).view(shape)
        dx = (weight * invstd).view(shape) * (dy - mean_dy - xhat * mean_dy_xhat)
        return dx.to(grad_out.dtype), local_dweight, local_dbias, None


class GlobalBatchNorm(nn.modules.batchnorm._BatchNorm):
    """BatchNorm1d/2d whose training statistics span every worker of the process group."""

    def _check_input_dim(self, x):
        if x.dim() < 2:
            raise ValueError(f"expected at least 2-D input, got {x.dim()}-D")

    def forward(self, x):
        # One worker: the global batch is the local one (torch's SyncBatchNorm does the same).
        if not (self.training and tdist.is_available() and tdist.is_initialized() and tdist.get_world_size() > 1):
            return super().forward(x)
        out, mean, var, total = _GlobalBatchNormFunction.apply(x, self.weight, self.bias, self.eps)
        with torch.no_grad():
            if self.track_running_stats:
                self.num_batches_tracked += 1
                unbiased = var * total / (total - 1).clamp_min(1)
                self.running_mean.mul_(1 - self.momentum).add_(self.momentum * mean)
                self.running_var.mul_(1 - self.momentum).add_(self.momentum * unbiased)
        return out


def convert_batchnorm(module: nn.Module, cuda: bool) -> nn.Module:
    """Replace every BatchNorm of `module` by its global-batch version (SyncBatchNorm on CUDA)."""
    if cuda:
        return nn.SyncBatchNorm.convert_sync_batchnorm(module)
    output = module
    if isinstance(module, nn.modules.batchnorm._BatchNorm) and not isinstance(module, GlobalBatchNorm):
        output = GlobalBatchNorm(module.num_features, module.eps, module.momentum, module.affine,
                                 module.track_running_stats)
        if module.affine:
            output.weight, output.bias = module.weight, module.bias
        output.running_mean, output.running_var = module.running_mean, module.running_var
        output.num_batches_tracked = module.num_batches_tracked
        output.train(module.training)
    for name, child in module.named_children():
        output.add_module(name, convert_batchnorm(child, cuda))
    return output
