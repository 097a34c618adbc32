"""BatchNorm statistics groups (`train.bn_group`): the same normalisation on any number of workers as
one process normalising consecutive chunks of the global batch (DataParallel's replicas)."""

from __future__ import annotations

import os
import warnings

import pytest
import torch
import torch.distributed as tdist
import torch.multiprocessing as mp
from torch import nn

from oaecmlr.config import BatchNormPlan, plan_batchnorm
from oaecmlr.engine.batchnorm import GroupBatchNorm, apply_plan, sync_running_stats
from oaecmlr.engine.distributed import free_port

EPS, MOMENTUM = 1e-5, 0.1


def reference_ghost_bn(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor, group: int) -> torch.Tensor:
    """Each chunk of `group` consecutive samples normalised by its own mean and biased variance, written
    out by hand (no BatchNorm kernel): what each DataParallel replica's BatchNorm computed."""
    dims = [0] + list(range(2, x.dim()))
    shape = [1, -1] + [1] * (x.dim() - 2)
    outs = []
    for chunk in x.split(group):
        mean = chunk.mean(dims, keepdim=True)
        var = ((chunk - mean) ** 2).mean(dims, keepdim=True)
        outs.append((chunk - mean) / torch.sqrt(var + EPS) * weight.view(shape) + bias.view(shape))
    return torch.cat(outs)


def reference_running(x: torch.Tensor, group: int, running: str, steps: int = 1):
    """Running mean / unbiased variance after `steps` identical batches, from the first chunk only or
    from the mean of the chunks' statistics."""
    dims = [0] + list(range(2, x.dim()))
    chunks = x.split(group)
    count = chunks[0].numel() / chunks[0].shape[1]
    means = torch.stack([c.mean(dims) for c in chunks])
    variances = torch.stack([c.var(dims, unbiased=False) * count / (count - 1) for c in chunks])
    mean, var = (means[0], variances[0]) if running == "first" else (means.mean(0), variances.mean(0))
    rm, rv = torch.zeros(x.shape[1], dtype=torch.float64), torch.ones(x.shape[1], dtype=torch.float64)
    for _ in range(steps):
        rm, rv = (1 - MOMENTUM) * rm + MOMENTUM * mean.double(), (1 - MOMENTUM) * rv + MOMENTUM * var.double()
    return rm.float(), rv.float()


def test_plan_arithmetic():
    assert plan_batchnorm(0, 256, 4) == BatchNormPlan("whole", 256)
    assert plan_batchnorm(256, 256, 1) == plan_batchnorm(512, 256, 1) == BatchNormPlan("whole", 256)
    assert plan_batchnorm(64, 256, 1) == BatchNormPlan("local", 64, groups_per_rank=4)
    assert plan_batchnorm(64, 256, 4) == BatchNormPlan("local", 64, groups_per_rank=1)
    assert plan_batchnorm(64, 256, 8) == BatchNormPlan("ranks", 64, ranks_per_group=2)
    with pytest.raises(ValueError, match="does not divide the global batch of 256"):
        plan_batchnorm(48, 256, 1)
    with pytest.raises(ValueError, match="must divide one another"):
        plan_batchnorm(64, 192, 2)  # 96 images per worker: neither divides the other
    with pytest.raises(ValueError, match=">= 0"):
        plan_batchnorm(-1, 256, 1)


@pytest.mark.parametrize("shape", [(24, 5, 4, 3), (24, 7)])
@pytest.mark.parametrize("running", ["first", "mean"])
def test_group_batchnorm_equals_per_chunk_normalisation(shape, running):
    torch.manual_seed(0)
    x = torch.randn(*shape, dtype=torch.float64).float() * 3 + 1
    dy = torch.randn(*shape)
    bn = GroupBatchNorm(shape[1], group_size=8, running=running)
    with torch.no_grad():
        bn.weight.uniform_(0.5, 1.5)
        bn.bias.uniform_(-0.5, 0.5)
    weight, bias = bn.weight.detach().clone().requires_grad_(True), bn.bias.detach().clone().requires_grad_(True)
    xa, xb = x.clone().requires_grad_(True), x.clone().requires_grad_(True)
    out = bn(xa)
    expected = reference_ghost_bn(xb, weight, bias, 8)
    (out * dy).sum().backward()
    (expected * dy).sum().backward()
    torch.testing.assert_close(out, expected, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(xa.grad, xb.grad, rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(bn.weight.grad, weight.grad, rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(bn.bias.grad, bias.grad, rtol=1e-4, atol=1e-5)
    bn(x)
    rm, rv = reference_running(x, 8, running, steps=2)
    torch.testing.assert_close(bn.running_mean, rm, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(bn.running_var, rv, rtol=1e-5, atol=1e-6)
    assert int(bn.num_batches_tracked) == 2
    bn.eval()  # eval mode: the running statistics, like any BatchNorm
    plain = nn.BatchNorm1d(shape[1]) if len(shape) == 2 else nn.BatchNorm2d(shape[1])
    plain.load_state_dict(bn.state_dict())
    plain.eval()
    torch.testing.assert_close(bn(x), plain(x))


def small_model() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(3, 6, 3, padding=1), nn.BatchNorm2d(6), nn.ReLU(), nn.AdaptiveAvgPool2d(1),
                         nn.Flatten(), nn.Linear(6, 5), nn.BatchNorm1d(5))


def test_local_plan_keeps_the_state_dict_and_bn_group_zero_changes_nothing():
    model = small_model()
    keys = list(model.state_dict())
    apply_plan(model, plan_batchnorm(8, 32, 1), world_size=1, rank=0, cuda=False)
    assert [type(m).__name__ for m in model if "Norm" in type(m).__name__] == ["GroupBatchNorm", "GroupBatchNorm"]
    assert list(model.state_dict()) == keys
    small_model().load_state_dict(model.state_dict())  # loads into a plain model
    plain, untouched = small_model(), small_model()
    apply_plan(untouched, plan_batchnorm(0, 32, 1), world_size=1, rank=0, cuda=False)
    assert [type(m) for m in untouched] == [type(m) for m in plain]
    x = torch.randn(32, 3, 6, 4)
    assert torch.equal(untouched(x), plain(x))


# ------------------------------------------------------------------ several workers (gloo)

CASES = [(8, "first"), (16, "mean"), (8, "mean"), (32, "first")]  # (bn_group, running) at a global batch of 32


def _worker(rank, world, port, x, dy, queue):
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    tdist.init_process_group("gloo", rank=rank, world_size=world)
    torch.set_num_threads(1)
    results = []
    local = x.shape[0] // world
    for group, running in CASES:
        model = small_model()
        plan = plan_batchnorm(group, x.shape[0], world)
        apply_plan(model, plan, world_size=world, rank=rank, cuda=False, running=running, distributed=True)
        with warnings.catch_warnings():  # broadcast_buffers=False is what keeps rank-local statistics
            warnings.simplefilter("ignore", FutureWarning)
            ddp = nn.parallel.DistributedDataParallel(model, broadcast_buffers=plan.mode == "whole")
        mine = slice(rank * local, (rank + 1) * local)
        out = ddp(x[mine])
        (out * dy[mine]).sum().mul(world).backward()  # DDP averages gradients: this makes them the global sum's
        outputs = [torch.empty_like(out) for _ in range(world)]
        tdist.all_gather(outputs, out.detach().contiguous())
        if plan.mode != "whole":
            sync_running_stats(model, running, world)
        grads = torch.cat([p.grad.flatten() for p in model.parameters()])
        stats = torch.cat([model[1].running_mean, model[1].running_var, model[6].running_mean, model[6].running_var])
        results.append((plan.mode, *(t.detach().numpy().copy() for t in (torch.cat(outputs), grads, stats))))
    queue.put((rank, results))
    tdist.destroy_process_group()


def _reference(x, dy, group, running):
    """One process: the model with every BatchNorm computed by `reference_ghost_bn`."""
    model = small_model()
    out = x
    conv_out = model[0](out)
    h = reference_ghost_bn(conv_out, model[1].weight, model[1].bias, group)
    h = model[5](model[4](model[3](model[2](h))))
    out = reference_ghost_bn(h, model[6].weight, model[6].bias, group)
    (out * dy).sum().backward()
    grads = torch.cat([p.grad.flatten() for p in model.parameters()])
    stats = torch.cat([*reference_running(conv_out.detach(), group, running), *reference_running(h.detach(), group, running)])
    return out.detach(), grads, stats


@pytest.mark.e2e
@pytest.mark.parametrize("world", [1, 2, 4])
def test_any_number_of_workers_gives_the_single_process_ghost_batchnorm(world):
    torch.manual_seed(1)
    x, dy = torch.randn(32, 3, 6, 4) * 2 + 0.5, torch.randn(32, 5)
    context = mp.get_context("spawn")
    queue = context.Queue()
    port = free_port()
    workers = [context.Process(target=_worker, args=(r, world, port, x, dy, queue)) for r in range(world)]
    for w in workers:
        w.start()
    results = {rank: [(mode, *map(torch.from_numpy, arrays)) for mode, *arrays in cases]
               for rank, cases in (queue.get(timeout=240) for _ in workers)}
    for w in workers:
        w.join(timeout=30)
        assert w.exitcode == 0
    modes = set()
    for case, (group, running) in enumerate(CASES):
        out, grads, stats = _reference(x, dy, group, running)
        mode, worker_out, worker_grads, _ = results[0][case]
        modes.add(mode)
        torch.testing.assert_close(worker_out, out, rtol=1e-4, atol=1e-5, msg=lambda m, case=case: f"case {case} output: {m}")
        scale = float(grads.abs().max())  # float32 summation order differs: errors relative to the gradients' scale
        torch.testing.assert_close(worker_grads, grads, rtol=1e-3, atol=1e-5 * scale, msg=lambda m, case=case: f"case {case} grads: {m}")
        for rank in range(world):  # every worker holds the plan's running statistics
            torch.testing.assert_close(results[rank][case][3], stats, rtol=1e-4, atol=1e-5,
                                       msg=lambda m, rank=rank, case=case: f"case {case} rank {rank} running stats: {m}")
    expected_modes = {1: {"local", "whole"}, 2: {"local", "whole"}, 4: {"local", "ranks", "whole"}}[world]
    assert modes == expected_modes  # the cases reach every path at this world size
