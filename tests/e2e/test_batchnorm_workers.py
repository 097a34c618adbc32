"""Ghost BatchNorm over several gloo workers equals the single-process reference (tests/bnfixtures.py)."""

from __future__ import annotations

import os
import warnings

import pytest
import torch
import torch.distributed as tdist
import torch.multiprocessing as mp
from bnfixtures import reference_ghost_bn, reference_running, small_model
from torch import nn

from oaecmlr.config import plan_batchnorm
from oaecmlr.engine.batchnorm import apply_plan, sync_running_stats
from oaecmlr.engine.distributed import free_port

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
