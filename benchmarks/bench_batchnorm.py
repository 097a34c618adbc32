"""What BatchNorm statistics groups (`train.bn_group`) cost: one training step (forward, backward,
Adam) of a re-ID model on a batch of 256 with plain whole-batch BatchNorm, and with groups of 64
(ghost BatchNorm, the reference's 4 x 64), measured alternately in one run.

    python benchmarks/bench_batchnorm.py                        # CPU: MobileNetV2 128x64 (the cuhk03 recipe), ResNet-18 64x32
    python benchmarks/bench_batchnorm.py --device cuda --arch resnet50 --size 256x128
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch

from oaecmlr.config import plan_batchnorm
from oaecmlr.engine.batchnorm import apply_plan
from oaecmlr.engine.devices import configure_kernels, resolve_device
from oaecmlr.models import build_model


def step_seconds(model: torch.nn.Module, x: torch.Tensor, optimizer: torch.optim.Optimizer) -> float:
    if x.device.type == "cuda":
        torch.cuda.synchronize(x.device)
    start = time.perf_counter()
    loss = model(x).square().sum()
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    optimizer.step()
    if x.device.type == "cuda":
        torch.cuda.synchronize(x.device)
    return time.perf_counter() - start


def measure(arch: str, size: tuple[int, int], batch: int, group: int, repeats: int, device: torch.device) -> None:
    torch.manual_seed(0)
    models = {}
    for name, bn_group in (("whole batch", 0), (f"groups of {group}", group)):
        model = build_model(arch, pooling="avg").to(device).train()
        apply_plan(model, plan_batchnorm(bn_group, batch, 1), world_size=1, rank=0, cuda=device.type == "cuda")
        models[name] = (model, torch.optim.Adam(model.parameters(), lr=1e-5))
    x = torch.randn(batch, 3, *size, device=device)
    times = {name: [] for name in models}
    for model, optimizer in models.values():  # warm-up
        step_seconds(model, x, optimizer)
    for _ in range(repeats):  # alternate, so load changes on a shared machine hit both alike
        for name, (model, optimizer) in models.items():
            times[name].append(step_seconds(model, x, optimizer))
    base = statistics.median(times["whole batch"])
    for name, values in times.items():
        median = statistics.median(values)
        print(f"{arch} {size[0]}x{size[1]} batch {batch}, {name:>14}: {median * 1000:8.1f} ms/step "
              f"({batch / median:6.1f} img/s), x{median / base:.3f} of whole-batch BatchNorm")


def arguments() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--arch", action="append", help="default: mobilenet_v2 and resnet18")
    parser.add_argument("--size", action="append", help="HxW per arch, default 128x64 and 64x32")
    parser.add_argument("--batch", type=int, default=256)
    parser.add_argument("--group", type=int, default=64)
    parser.add_argument("--repeats", type=int, default=7)
    return parser


def main() -> None:
    args = arguments().parse_args()
    archs = args.arch or ["mobilenet_v2", "resnet18"]
    sizes = args.size or ["128x64", "64x32"]
    device = resolve_device(args.device)
    configure_kernels(device, deterministic=False)  # cudnn.benchmark, as training sets it
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else f"{torch.get_num_threads()} threads"
    print(f"device {device} ({name}), torch {torch.__version__}, float32, cudnn.benchmark {torch.backends.cudnn.benchmark}")
    for arch, size in zip(archs, sizes):
        h, w = (int(v) for v in size.split("x"))
        measure(arch, (h, w), args.batch, args.group, args.repeats, device)


if __name__ == "__main__":
    main()
