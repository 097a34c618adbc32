"""Training throughput against the hardware limit, and the per-epoch overhead.

It measures, in one run on one device:
1. pure compute: forward + backward + Adam step of the model on random normalised tensors;
2. the real loop: the engine's own `train_epoch` (uint8 image cache, sampler, device-side
   augmentation, forward, memory loss, backward, step, memory update), on a synthetic
   Market-sized image set, so no dataset is needed;
3. the per-epoch overhead: feature extraction, pseudo-labels, OAE and CMLR (`epoch_labels`);
and prints images/s for 1 and 2, their ratio, the stages of 3, and the projected time of the
full 50 x 400 recipe (the Market recipe has 200 iterations; 400 is MSMT17's and the issue's figure).

    python benchmarks/bench_train.py                      # CPU: small sizes
    python benchmarks/bench_train.py --full               # GPU: ResNet-50, 12,936 images at 256x128, batch 256
    python benchmarks/bench_train.py --full --ddp         # also the distributed path at world size 1 (NCCL)
    python benchmarks/bench_train.py --full --msmt        # MSMT17 sizes: 32,621 train + 93,820 eval images
    python benchmarks/bench_train.py --full --no-amp --sync-count 5   # float32, and the host syncs of 5 iterations

`--msmt` checks that MSMT17-sized training fits: the image caches are placed by the engine's rule
(GPU memory while 24 GiB stay free, else pinned host memory; `--image-cache host` forces the host)
and one `evaluate()` runs at that size (11,659 queries x 82,161 gallery images), so the peak GPU
memory covers an evaluation too.

`--sync-count N` (CUDA) counts the host synchronisations of the epoch's set-up and of its last N
iterations with `torch.cuda.set_sync_debug_mode`, by source line. The peak GPU memory is printed
both as allocated and as reserved by PyTorch's caching allocator (what other processes cannot use).

`--ddp` times the real loop a second time through the distributed code path (DDP, SyncBatchNorm,
collectives; NCCL on CUDA, gloo on CPU) at world size 1, and prints its ratio to the plain loop.
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import time
import warnings
from collections import Counter
from pathlib import Path

import numpy as np
import torch

from oaecmlr.config import load_config
from oaecmlr.engine.devices import configure_kernels, resolve_device
from oaecmlr.engine.distributed import SINGLE, Dist, init_group
from oaecmlr.engine.evaluate import evaluate
from oaecmlr.engine.features import autocast
from oaecmlr.engine.loop import EpochLabels
from oaecmlr.engine.placement import place_images
from oaecmlr.engine.rundata import RunData, Split
from oaecmlr.engine.usl import UnsupervisedLoop
from oaecmlr.store.runs import RunDir
from oaecmlr.store.schema import Cluster


class Recording(UnsupervisedLoop):
    """The real loop, with its events kept in memory instead of a run folder."""

    def emit(self, event) -> None:
        self.events.append(event)


def synthetic_split(images: int, ids: int, height: int, width: int, seed: int) -> Split:
    """Id-dependent uint8 images on the host (a bank of 2,000 noise images keeps drawing cheap)."""
    g = torch.Generator().manual_seed(seed)
    pids = np.arange(images) % ids
    base = torch.randint(0, 256, (ids, 3, height, width), generator=g, dtype=torch.uint8)
    noise = torch.randint(0, 40, (min(images, 2000), 3, height, width), generator=g, dtype=torch.uint8)
    pixels = base[torch.from_numpy(pids)] // 2 + noise[torch.arange(images) % noise.shape[0]]
    return Split(pixels, pids, np.arange(images) % 6)


def synthetic_data(images: int, ids: int, height: int, width: int, device: torch.device,
                   query: int = 0, gallery: int = 0, image_cache: str = "auto") -> RunData:
    """Training and evaluation splits, placed by the engine's own rule (GPU memory or pinned host)."""
    train = synthetic_split(images, ids, height, width, 0)
    q = synthetic_split(query, ids, height, width, 1) if query else Split(train.images[:ids], train.pids[:ids], train.camids[:ids])
    g = synthetic_split(gallery, ids, height, width, 2) if gallery else q
    return place_images(RunData("bench", train, q, g, {}), device, image_cache)


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def pure_compute(loop: Recording, batch: int, steps: int) -> float:
    cfg = loop.config
    x = torch.randn(batch, 3, cfg.data.height, cfg.data.width, device=loop.device)
    if loop.channels_last:
        x = x.contiguous(memory_format=torch.channels_last)
    labels = torch.randint(0, loop.memory.num_clusters, (batch,), device=loop.device)
    loop.core.train()
    for step in range(steps + 3):
        if step == 3:
            sync(loop.device)
            start = time.perf_counter()
        with autocast(loop.device, loop.amp):
            features = loop.core(x)
        loss = loop.memory(features.float(), labels)
        loop.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        loop.optimizer.step()
    sync(loop.device)
    return batch * steps / (time.perf_counter() - start)


def real_loop(loop: Recording, phase: EpochLabels, batch: int, iterations: int) -> float:
    """Images/s of the engine's own train_epoch, after one warm-up epoch."""
    loop.train_epoch(EpochLabels(1, phase.labels, phase.soft, phase.soft_index))
    sync(loop.device)
    start = time.perf_counter()
    loop.train_epoch(EpochLabels(2, phase.labels, phase.soft, phase.soft_index))
    sync(loop.device)
    return batch * iterations / (time.perf_counter() - start)


def distributed_world_of_one(device: torch.device) -> Dist:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    return Dist(0, 1, 0, forced=True, device=init_group(device, 0, 1, timeout_s=300))


def count_syncs(loop: Recording, phase: EpochLabels, iterations: int) -> dict:
    """Host syncs of an epoch's set-up (train_epoch with no iteration left) and of its last
    `iterations` iterations, by source line (CUDA only: the sync debug mode watches CUDA calls)."""
    total = loop.config.run.iterations

    def syncs(first: int) -> Counter:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            torch.cuda.set_sync_debug_mode("warn")
            try:
                loop.train_epoch(EpochLabels(3, phase.labels, phase.soft, phase.soft_index, first))
                sync(loop.device)
            finally:
                torch.cuda.set_sync_debug_mode("default")
        return Counter(f"{Path(w.filename).name}:{w.lineno}" for w in caught if "synchroniz" in str(w.message))

    setup = syncs(total)
    both = syncs(total - iterations)
    return {"setup": sum(setup.values()), "iterations": iterations, "in_iterations": sum((both - setup).values()),
            "by_line": dict((both - setup).most_common()), "setup_by_line": dict(setup.most_common())}


def build(config, data, device, dist=SINGLE) -> Recording:
    loop = Recording(config, RunDir(Path("/nonexistent")), data, device, None, dist)
    loop.events = []
    return loop


def arguments() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--full", action="store_true", help="ResNet-50, 12,936 images at 256x128, batch 16x16")
    parser.add_argument("--arch", default=None)
    parser.add_argument("--images", type=int, default=None)
    parser.add_argument("--iterations", type=int, default=None)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--ddp", action="store_true", help="also time the distributed path at world size 1")
    parser.add_argument("--msmt", action="store_true", help="MSMT17 sizes: 32,621 train, 11,659 query, 82,161 gallery")
    parser.add_argument("--image-cache", default="auto", choices=("auto", "device", "host"))
    parser.add_argument("--no-amp", action="store_true", help="float32 throughout (train.amp=false), to measure what bf16 gives")
    parser.add_argument("--sync-count", type=int, default=0, metavar="N",
                        help="CUDA: count the host syncs of the epoch set-up and of N iterations")
    return parser


def main() -> None:
    args = arguments().parse_args()
    device = resolve_device(args.device)
    if args.full:
        arch, images, height, width, p, k, iterations = args.arch or "resnet50", args.images or 12936, 256, 128, 16, 16, args.iterations or 60
    else:
        arch, images, height, width, p, k, iterations = args.arch or "resnet18", args.images or 1200, 64, 32, 8, 4, args.iterations or 30
    config = load_config("market", sets=[f"model.arch={arch}", f"data.height={height}", f"data.width={width}",
                                         f"data.num_ids={p}", f"data.num_instances={k}", f"run.iterations={iterations}",
                                         "run.log_every=20", f"run.gpus={'0' if device.type == 'cuda' else 'cpu'}",
                                         f"train.amp={'false' if args.no_amp else 'true'}"])
    query, gallery = (11659, 82161) if args.msmt else (0, 0)
    images = 32621 if args.msmt and not args.images else images
    data = synthetic_data(images, max(p, images // 17), height, width, device, query, gallery, args.image_cache)
    configure_kernels(device, config.train.deterministic)  # cudnn.benchmark, as training sets it
    loop = build(config, data, device)
    batch = p * k
    print(f"device {device} ({torch.cuda.get_device_name(device) if device.type == 'cuda' else torch.get_num_threads()} "
          f"{'GPU' if device.type == 'cuda' else 'CPU threads'}), {arch}, {images} images at {height}x{width}, "
          f"batch {p}x{k}, bf16 {loop.amp}, channels_last {loop.channels_last}")
    print("image cache: " + ", ".join(f"{name} {where}" for name, where in data.stats["image_cache"].items()))

    start = time.perf_counter()
    phase = loop.epoch_labels(1)
    sync(device)
    overhead = time.perf_counter() - start
    stages = next(e for e in loop.events if isinstance(e, Cluster)).timings
    print(f"epoch overhead {overhead:.2f} s: " + ", ".join(f"{k} {v:.2f}" for k, v in stages.items()))

    compute = pure_compute(loop, batch, iterations)
    clustered = np.flatnonzero(phase.labels.numpy() >= 0)
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    real = real_loop(loop, phase, batch, iterations)
    per_iteration = batch / real
    projected = 50 * (400 * per_iteration + overhead)
    result = {"device": str(device), "arch": arch, "images": images, "clustered": int(clustered.size),
              "pure_compute_images_per_s": round(compute, 1), "real_loop_images_per_s": round(real, 1),
              "ratio": round(real / compute, 3), "epoch_overhead_s": round(overhead, 2), "stages_s": stages,
              "projected_50x400_min": round(projected / 60, 1)}
    result["image_cache"] = data.stats["image_cache"]
    if args.msmt:
        scored = evaluate(loop.extract, data.query, data.gallery)
        result["evaluate_s"] = scored.seconds
        print(f"evaluate() of {scored.num_query} queries x {scored.num_gallery} gallery images: "
              f"{scored.seconds:.1f} s (extraction, distances, ranking)")
    if device.type == "cuda":
        result["peak_gpu_gb"] = round(torch.cuda.max_memory_allocated(device) / 2**30, 2)
        result["peak_gpu_reserved_gb"] = round(torch.cuda.max_memory_reserved(device) / 2**30, 2)
        print(f"peak GPU memory {result['peak_gpu_gb']} GiB allocated, {result['peak_gpu_reserved_gb']} GiB reserved "
              f"(training + image cache{' + an evaluation' if args.msmt else ''})")
    if args.sync_count and device.type == "cuda":
        result["syncs"] = count_syncs(loop, phase, min(args.sync_count, iterations))
        found = result["syncs"]
        print(f"host syncs: {found['setup']} in the epoch set-up, {found['in_iterations']} in {found['iterations']} "
              f"iterations: " + (", ".join(f"{k} x{v}" for k, v in found["by_line"].items()) or "none"))
    if args.ddp:
        ddp_loop = build(config, data, device, distributed_world_of_one(device))  # its device: cuda:N
        ddp_phase = ddp_loop.epoch_labels(1)  # its own memory; the same labels (same weights, same features)
        ddp = real_loop(ddp_loop, ddp_phase, batch, iterations)
        backend = torch.distributed.get_backend()
        result.update(distributed_backend=backend, distributed_images_per_s=round(ddp, 1),
                      distributed_vs_plain=round(ddp / real, 3))
        print(f"distributed path at world size 1 ({backend}): {ddp:.0f} img/s, {100 * ddp / real:.1f}% of the plain loop")
        torch.distributed.destroy_process_group()
    print(f"pure compute {compute:.0f} img/s, real loop {real:.0f} img/s: {100 * real / compute:.0f}% of compute")
    print(f"projected 50 epochs x 400 iterations: {projected / 60:.1f} min")
    print(json.dumps(result))


if __name__ == "__main__":
    main()
