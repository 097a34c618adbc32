"""Several workers (`--gpus cpu,cpu`, gloo): same pseudo-labels and nearly the same training as one
process, global-batch BatchNorm, worker death, resume with another world size, torchrun, a long
start-up, rank 0's memories on every rank, and every collective's tensors on the Dist's device.

The gloo workers here wrap torch.distributed's tensor collectives (`check_collectives`) and
assert that each tensor handed to one is on `Dist.device`. On a CPU that device is the CPU, so the
check can only catch a tensor on another device; on a GPU the same code is NCCL's, where `Dist`'s
own check (`Dist.on_device`) stops a CPU tensor before NCCL does."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
import torch
import torch.distributed as tdist
import torch.multiprocessing as mp
from enginefixtures import cli, events_of, tiny_config, tiny_sets

from oaecmlr.config import plan_batchnorm
from oaecmlr.engine.batchnorm import apply_plan
from oaecmlr.engine.distributed import Dist, free_port


def _bn_worker(rank, world, port, x, dy, queue):
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    tdist.init_process_group("gloo", rank=rank, world_size=world)
    torch.manual_seed(0)
    bn = apply_plan(torch.nn.Sequential(torch.nn.BatchNorm2d(3)), plan_batchnorm(0, x.shape[0], world), world_size=world, rank=rank,
                    cuda=False)
    half = x.shape[0] // world
    xs = x[rank * half:(rank + 1) * half].clone().requires_grad_(True)
    out = bn(xs)
    (out * dy[rank * half:(rank + 1) * half]).sum().backward()
    grads = torch.cat([bn[0].weight.grad, bn[0].bias.grad])
    tdist.all_reduce(grads)
    queue.put((rank, *(t.detach().numpy().copy() for t in (out, xs.grad, grads, bn[0].running_mean, bn[0].running_var))))
    tdist.destroy_process_group()


def test_global_batchnorm_equals_batchnorm_over_the_whole_batch():
    torch.manual_seed(1)
    x, dy = torch.randn(8, 3, 5, 4) * 3 + 1, torch.randn(8, 3, 5, 4)
    reference = torch.nn.BatchNorm2d(3)
    xr = x.clone().requires_grad_(True)
    out = reference(xr)
    (out * dy).sum().backward()
    context = mp.get_context("spawn")
    queue = context.Queue()
    port = free_port()
    workers = [context.Process(target=_bn_worker, args=(r, 2, port, x, dy, queue)) for r in range(2)]
    for w in workers:
        w.start()
    results = {r[0]: [torch.from_numpy(a) for a in r[1:]] for r in (queue.get(timeout=120) for _ in workers)}
    for w in workers:
        w.join(timeout=30)
    outs = torch.cat([results[0][0], results[1][0]])
    dxs = torch.cat([results[0][1], results[1][1]])
    torch.testing.assert_close(outs, out.detach(), rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(dxs, xr.grad, rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(results[0][2], torch.cat([reference.weight.grad, reference.bias.grad]), rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(results[0][3], reference.running_mean, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(results[0][4], reference.running_var, rtol=1e-5, atol=1e-6)


TENSOR_COLLECTIVES = ("all_reduce", "all_gather", "broadcast", "reduce_scatter_tensor", "all_gather_into_tensor")


def check_collectives(device: torch.device) -> list[str]:
    """In this worker, every tensor handed to a torch.distributed collective must be on `device`;
    returns the list of collectives seen, which grows as they are called."""
    seen: list[str] = []
    for name in TENSOR_COLLECTIVES:
        def checked(*args, _original=getattr(tdist, name), _name=name, **kwargs):
            tensors = [a for a in (*args, *kwargs.values()) if isinstance(a, torch.Tensor)]
            tensors += [t for a in args if isinstance(a, list) for t in a if isinstance(t, torch.Tensor)]
            for tensor in tensors:
                assert tensor.device == device, f"{_name} was handed a tensor on {tensor.device}, not {device}"
            seen.append(_name)
            return _original(*args, **kwargs)

        setattr(tdist, name, checked)
    return seen


def _labels_worker(rank, world, port, run_path, queue):
    from oaecmlr.engine.rundata import load_run_data
    from oaecmlr.engine.train_process import build_loop
    from oaecmlr.store.runs import RunDir

    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    tdist.init_process_group("gloo", rank=rank, world_size=world)
    config = tiny_config()
    dist = Dist(rank, world, device=torch.device("cpu"))
    seen = check_collectives(dist.device)
    loop = build_loop(config, RunDir(run_path), load_run_data(config.data), torch.device("cpu"), None, dist)
    phase = loop.epoch_labels(1)
    centroids = loop.memory.centroids.numpy().copy()  # plain arrays
    loop.train_epoch(phase)  # the training step's collectives too
    queue.put((rank, phase.labels.numpy().copy(), centroids, sorted(set(seen))))
    tdist.destroy_process_group()


def test_epoch_one_pseudo_labels_equal_single_process(tmp_path):
    from oaecmlr.engine.rundata import load_run_data
    from oaecmlr.engine.train_process import build_loop
    from oaecmlr.store.runs import RunDir

    config = tiny_config()
    single = build_loop(config, RunDir(tmp_path), load_run_data(config.data), torch.device("cpu"), None)
    expected = single.epoch_labels(1).labels
    context = mp.get_context("spawn")
    queue = context.Queue()
    port = free_port()
    workers = [context.Process(target=_labels_worker, args=(r, 2, port, tmp_path, queue)) for r in range(2)]
    for w in workers:
        w.start()
    got = [queue.get(timeout=600) for _ in workers]  # generous: the workers also train 3 iterations
    for w in workers:
        w.join(timeout=30)
    assert (expected >= 0).sum() > 0
    for _, labels, centroids, seen in got:
        assert torch.equal(torch.from_numpy(labels), expected)  # clustering ran once and was broadcast
        torch.testing.assert_close(torch.from_numpy(centroids), single.memory.centroids)  # same memory everywhere
        assert {"all_gather", "all_reduce"} <= set(seen)  # each on the Dist's device (check_collectives)


def _one_step(loop):
    """Gradients of one training batch through loop.model (DDP and global BatchNorm when forced)."""
    phase = loop.epoch_labels(1)
    torch.manual_seed(0)
    x = torch.randn(16, 3, loop.config.data.height, loop.config.data.width)
    labels = phase.labels[phase.labels >= 0][:16]
    loop.model.train()
    loss = loop.memory(loop.model(x), labels)
    loss.backward()
    return {name: p.grad.detach().clone() for name, p in loop.core.named_parameters() if p.grad is not None}


def _forced_worker(port, run_path, queue):
    from oaecmlr.engine.rundata import load_run_data
    from oaecmlr.engine.train_process import build_loop
    from oaecmlr.store.runs import RunDir

    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    tdist.init_process_group("gloo", rank=0, world_size=1)
    config = tiny_config("train.amp=false")
    dist = Dist(0, 1, 0, forced=True, device=torch.device("cpu"))
    seen = check_collectives(dist.device)
    loop = build_loop(config, RunDir(run_path), load_run_data(config.data), torch.device("cpu"), None, dist)
    kinds = sorted({type(m).__name__ for m in loop.model.modules()})
    queue.put((kinds, {k: v.numpy() for k, v in _one_step(loop).items()}, sorted(set(seen))))
    tdist.destroy_process_group()


def test_distributed_path_at_world_size_one_computes_the_plain_gradients(tmp_path):
    """The path the device check times against the plain loop (NCCL there, gloo here) computes the
    same gradients: DDP and global-batch BatchNorm are identities at world size 1."""
    from oaecmlr.engine.rundata import load_run_data
    from oaecmlr.engine.train_process import build_loop
    from oaecmlr.store.runs import RunDir

    config = tiny_config("train.amp=false")
    plain = _one_step(build_loop(config, RunDir(tmp_path), load_run_data(config.data), torch.device("cpu"), None))
    context = mp.get_context("spawn")
    queue = context.Queue()
    worker = context.Process(target=_forced_worker, args=(free_port(), tmp_path, queue))
    worker.start()
    kinds, forced, seen = queue.get(timeout=180)
    worker.join(timeout=30)
    assert "all_gather" in seen  # the features, gathered on the Dist's device
    assert "DistributedDataParallel" in kinds and "GlobalBatchNorm" in kinds and "BatchNorm2d" not in kinds
    assert forced.keys() == plain.keys()
    for key, value in plain.items():
        scale = float(value.abs().max())  # float32 summation order differs: errors relative to the tensor
        torch.testing.assert_close(torch.from_numpy(forced[key]), value, rtol=1e-3, atol=1e-4 * scale,
                                   msg=lambda m, key=key: f"{key}: {m}")


def test_two_cpu_workers_train_like_one_process(tmp_path):
    sets = [*tiny_sets(), "--set", "run.epochs=3"]
    assert cli("run", "demo", "--name", "one", "--runs-dir", str(tmp_path), *sets).returncode == 0
    result = cli("run", "demo", "--name", "two", "--gpus", "cpu,cpu", "--runs-dir", str(tmp_path), *sets)
    assert result.returncode == 0, result.stderr
    one, two = events_of(tmp_path / "one"), events_of(tmp_path / "two")
    start = two[0]
    assert start["world_size"] == 2 and start["per_rank_batch"] * 2 == start["global_batch"] == 16
    assert [e["epoch"] for e in two if e["event"] == "epoch_end"] == [1, 2, 3]
    maps_one = [e["mAP"] for e in one if e["event"] == "eval"]
    maps_two = [e["mAP"] for e in two if e["event"] == "eval"]
    assert maps_one[0] == pytest.approx(maps_two[0], abs=1e-6)  # the same starting point
    clusters_one = [e["clusters"] for e in one if e["event"] == "cluster"]
    clusters_two = [e["clusters"] for e in two if e["event"] == "cluster"]
    assert clusters_one[0] == clusters_two[0]
    # The same computation, summed in another order (BatchNorm statistics and gradients are
    # all-reduced): epoch 1's losses agree to float tolerance ...
    losses_one = [e["loss"] for e in one if e["event"] == "iter" and e["epoch"] == 1]
    losses_two = [e["loss"] for e in two if e["event"] == "iter" and e["epoch"] == 1]
    assert losses_one == pytest.approx(losses_two, rel=1e-3) and len(losses_one) == 3
    # ... while later epochs drift apart as rounding differences change clustering decisions, so
    # the end is only checked to be the same training, not the same number.
    assert abs(maps_one[-1] - maps_two[-1]) < 0.15


def test_a_dead_worker_fails_the_run_quickly_and_leaves_nothing_running(tmp_path):
    sets = [*tiny_sets(), "--set", "run.epochs=50", "--set", "run.iterations=50", "--set", "train.dist_timeout=30"]
    process = subprocess.Popen([sys.executable, "-m", "oaecmlr.cli.app", "run", "demo", "--name", "dies", "--gpus",
                                "cpu,cpu", "--runs-dir", str(tmp_path), *sets],
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    status_path = tmp_path / "dies" / "status.json"
    deadline = time.time() + 180
    while time.time() < deadline:
        if (tmp_path / "dies" / "events.jsonl").exists() and any(e["event"] == "iter" for e in events_of(tmp_path / "dies")):
            break
        time.sleep(0.1)
    workers = json.loads(status_path.read_text())["workers"]
    os.kill(workers[1], signal.SIGKILL)
    killed_at = time.time()
    _, stderr = process.communicate(timeout=120)
    assert time.time() - killed_at < 30
    assert process.returncode == 1
    assert "rank 1" in stderr and "SIGKILL" in stderr and "Traceback" not in stderr
    last = events_of(tmp_path / "dies")[-1]
    assert last["event"] == "failure" and last["rank"] == 1
    for pid in workers:
        with pytest.raises(ProcessLookupError):
            os.kill(pid, 0)
    assert json.loads(status_path.read_text())["state"] == "failed"


def test_resume_with_another_world_size(tmp_path):
    sets = [*tiny_sets(), "--set", "run.epochs=1"]
    assert cli("run", "demo", "--name", "grow", "--gpus", "cpu,cpu", "--runs-dir", str(tmp_path), *sets).returncode == 0
    result = cli("resume", "grow", "--runs-dir", str(tmp_path), "--epochs", "2", "--gpus", "cpu")
    assert result.returncode == 0, result.stderr
    assert 'gpus = "cpu"' in (tmp_path / "grow" / "config.toml").read_text()
    events = events_of(tmp_path / "grow")
    resumed = next(e for e in events if e["event"] == "resume")
    assert resumed["world_size"] == 1 and resumed["from_epoch"] == 1
    assert [e["epoch"] for e in events if e["event"] == "epoch_end"] == [1, 2]
    assert events[-1]["event"] == "end"


def _memories_worker(rank, world, port, queue):
    from oaecmlr.core.camera_memory import CameraProxyMemory
    from oaecmlr.core.clusters import cluster_geometry
    from oaecmlr.core.memory import ClusterMemory
    from oaecmlr.engine.memories import initialise_memories

    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    tdist.init_process_group("gloo", rank=rank, world_size=world)
    dist = Dist(rank, world, rank, device=torch.device("cpu"))
    seen = check_collectives(dist.device)
    g = torch.Generator().manual_seed(0)
    features = torch.nn.functional.normalize(torch.randn(60, 8, generator=g), dim=1)
    features = features + rank * 1e-6 * torch.randn(60, 8)  # each rank's own rounding, as on a GPU
    labels = torch.randint(-1, 5, (60,), generator=g)
    camids = torch.randint(0, 3, (60,), generator=g)
    memory, proxies = ClusterMemory(8), CameraProxyMemory(8)
    if rank:  # memories left from an earlier epoch with other shapes
        memory.initialise(torch.randn(9, 8))
        proxies.initialise(torch.randn(30, 8), torch.arange(30) % 9, torch.arange(30) % 4)
    geometry = cluster_geometry(features, labels.numpy()) if dist.is_main else None
    own = cluster_geometry(features, labels.numpy()).centroids.numpy().copy()
    initialise_memories(dist, memory, proxies, geometry, features, labels, camids)
    state = {f"memory.{k}": v.numpy().copy() for k, v in memory.state_dict().items()}
    state.update({f"proxies.{k}": v.numpy().copy() for k, v in proxies.state_dict().items()})
    queue.put((rank, state, own, sorted(set(seen))))
    tdist.destroy_process_group()


def test_every_rank_holds_rank_0s_memory_and_proxies_bit_for_bit():
    """CUDA's index_add_ sums in a non-deterministic order, so each rank building its own centroids
    would hold slightly different ones (simulated here by rank 1's features differing by 1e-6)."""
    context = mp.get_context("spawn")
    queue = context.Queue()
    port = free_port()
    workers = [context.Process(target=_memories_worker, args=(r, 2, port, queue)) for r in range(2)]
    for w in workers:
        w.start()
    got = dict((r, rest) for r, *rest in (queue.get(timeout=600) for _ in workers))
    for w in workers:
        w.join(timeout=30)
    (state0, own0, seen), (state1, own1, _) = got[0], got[1]
    assert not np.array_equal(own0, own1)  # what rank 1 would have built itself
    assert state0.keys() == state1.keys() and len(state0) == 5
    for key, value in state0.items():
        assert value.dtype == state1[key].dtype and np.array_equal(value, state1[key]), key
    np.testing.assert_array_equal(state0["memory.centroids"], torch.nn.functional.normalize(torch.from_numpy(own0)))
    assert "broadcast" in seen


SLOW_FIRST_LOAD = '''
"""`oaecmlr` whose first image load in any process sleeps, as a first MSMT17 decode does."""
import os
import time

import oaecmlr.engine.train_process as process

_load = process.load_run_data


def slow_first_load(*args, **kwargs):
    try:
        os.close(os.open(os.environ["SLOW_MARKER"], os.O_CREAT | os.O_EXCL))
        time.sleep(float(os.environ["SLOW_SECONDS"]))
    except FileExistsError:
        pass
    return _load(*args, **kwargs)


process.load_run_data = slow_first_load  # spawned workers run this file too (as __mp_main__)

if __name__ == "__main__":
    from oaecmlr.cli.app import main

    main()
'''


def test_a_start_up_longer_than_the_collective_timeout_does_not_fail_the_run(tmp_path):
    """Rank 0 decodes the images for 25 s while rank 1 waits; train.dist_timeout is 10 s."""
    script = tmp_path / "slow_oaecmlr.py"
    script.write_text(SLOW_FIRST_LOAD)
    sets = [*tiny_sets(), "--set", "run.epochs=1", "--set", "train.dist_timeout=10"]
    result = subprocess.run([sys.executable, str(script), "run", "demo", "--name", "slow", "--gpus", "cpu,cpu",
                             "--runs-dir", str(tmp_path), *sets], capture_output=True, text=True, timeout=600,
                            env={**os.environ, "SLOW_MARKER": str(tmp_path / "slept"), "SLOW_SECONDS": "25"})
    assert (tmp_path / "slept").exists()
    assert result.returncode == 0, result.stderr[-3000:]
    events = events_of(tmp_path / "slow")
    assert events[0]["world_size"] == 2 and events[-1]["event"] == "end"


def _torchrun(*args: str) -> subprocess.CompletedProcess:
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2", "-m", "oaecmlr"]
    return subprocess.run([*command, *args], capture_output=True, text=True, timeout=600)


def test_torchrun_workers_train_and_resume_a_run(tmp_path):
    """`torchrun --nproc-per-node 2 -m oaecmlr ... --gpus cpu`: two gloo workers, rank 0's run folder."""
    result = _torchrun("run", "demo", "--name", "tr", "--gpus", "cpu", "--runs-dir", str(tmp_path), *tiny_sets())
    assert result.returncode == 0, result.stderr[-3000:]
    assert result.stderr.count("run folder:") == 1  # rank 0 speaks for the run
    events = events_of(tmp_path / "tr")
    start = events[0]
    assert start["event"] == "start" and start["world_size"] == 2
    assert start["per_rank_batch"] * 2 == start["global_batch"] == 16 and start["device"] == "cpu"
    assert [e["epoch"] for e in events if e["event"] == "epoch_end"] == [1, 2]
    assert [e["epoch"] for e in events if e["event"] == "eval"] == [0, 1, 2] and events[-1]["event"] == "end"
    assert json.loads((tmp_path / "tr" / "status.json").read_text())["state"] == "finished"

    result = _torchrun("resume", "tr", "--runs-dir", str(tmp_path), "--epochs", "3")
    assert result.returncode == 0, result.stderr[-3000:]
    events = events_of(tmp_path / "tr")
    resumed = next(e for e in events if e["event"] == "resume")
    assert resumed["world_size"] == 2 and resumed["from_epoch"] == 2 and resumed["gpus"] == []
    assert [e["epoch"] for e in events if e["event"] == "epoch_end"] == [1, 2, 3] and events[-1]["event"] == "end"
