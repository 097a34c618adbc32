"""What looking for a stop request after every iteration costs (issue 25, item 4: stop within one
iteration, not at the next log interval): one process pays a stat of the STOP file
(`RunRecorder.stop_reason`); CPU workers also pay an all-reduce of one flag (`Dist.any`, gloo). Set
beside one training step of the demo (ResNet-18, 64x32, batch 64), the cheapest iteration there is.

    python benchmarks/bench_stop_check.py [--repeats 2000]
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time
from pathlib import Path

import torch
import torch.multiprocessing as mp

from oaecmlr.engine.distributed import Dist, free_port, init_group, leave_group
from oaecmlr.engine.recorder import RunRecorder
from oaecmlr.models import build_model
from oaecmlr.store.runs import RunDir


def per_call(fn, repeats: int) -> float:
    start = time.perf_counter()
    for _ in range(repeats):
        fn()
    return (time.perf_counter() - start) / repeats


def stop_file_check(repeats: int) -> float:
    with tempfile.TemporaryDirectory() as folder:
        recorder = RunRecorder(RunDir(Path(folder)))
        try:
            return per_call(recorder.stop_reason, repeats)
        finally:
            recorder.close()


def _all_reduce_worker(rank: int, port: int, repeats: int, out) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    torch.set_num_threads(1)
    init_group(torch.device("cpu"), rank, 2, 60)
    dist = Dist(rank, 2, rank)
    try:
        per_call(lambda: dist.any(False), 50)  # warm up
        seconds = per_call(lambda: dist.any(False), repeats)
        if rank == 0:
            out.put(seconds)
    finally:
        leave_group()


def gloo_flag_all_reduce(repeats: int) -> float:
    context = mp.get_context("spawn")
    out = context.Queue()
    port = free_port()
    workers = [context.Process(target=_all_reduce_worker, args=(rank, port, repeats, out)) for rank in range(2)]
    for worker in workers:
        worker.start()
    seconds = out.get(timeout=600)
    for worker in workers:
        worker.join()
    return seconds


def demo_step(repeats: int = 10) -> float:
    torch.manual_seed(0)
    model = build_model("resnet18", pooling="avg").train()
    optimizer = torch.optim.Adam(model.parameters(), lr=3.5e-4)
    x = torch.randn(64, 3, 64, 32)
    times = []
    for _ in range(repeats + 2):
        start = time.perf_counter()
        loss = model(x).square().mean()
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        times.append(time.perf_counter() - start)
    return statistics.median(times[2:])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=2000)
    args = parser.parse_args()
    step = demo_step()
    stat = stop_file_check(args.repeats)
    reduce = gloo_flag_all_reduce(args.repeats)
    print(f"one demo training step (ResNet-18 64x32, batch 64, CPU): {step * 1e3:.1f} ms")
    print(f"stop check, one process (stat of STOP):      {stat * 1e6:8.1f} us  = {100 * stat / step:.3f} % of a step")
    print(f"stop check, CPU workers (+ gloo all-reduce): {(stat + reduce) * 1e6:8.1f} us  = "
          f"{100 * (stat + reduce) / step:.3f} % of a step")


if __name__ == "__main__":
    main()
