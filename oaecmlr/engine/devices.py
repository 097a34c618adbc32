"""`--gpus` parsing: one worker per entry, CUDA indices ("0,1") or "cpu" entries ("cpu,cpu")."""

from __future__ import annotations

import torch

from oaecmlr.engine.config import ConfigError


def parse_gpus(spec: str) -> list[str]:
    """Device strings of the workers, e.g. "0,1" -> ["cuda:0", "cuda:1"], "cpu" -> ["cpu"]."""
    entries = [e.strip().lower() for e in str(spec).split(",") if e.strip()]
    if not entries:
        raise ConfigError("--gpus is empty; use cpu, 0 or 0,1")
    devices = []
    for entry in entries:
        if entry == "cpu":
            devices.append("cpu")
        elif entry.isdigit():
            devices.append(f"cuda:{entry}")
        else:
            raise ConfigError(f"--gpus entry {entry!r} is neither 'cpu' nor a CUDA index; e.g. --gpus 0,1 or --gpus cpu")
    cuda = [d for d in devices if d.startswith("cuda")]
    if cuda and len(cuda) != len(devices):
        raise ConfigError("--gpus mixes cpu and CUDA entries; use all-CUDA (0,1) or all-cpu (cpu,cpu)")
    if cuda:
        if not torch.cuda.is_available():
            raise ConfigError(f"--gpus {spec} needs CUDA, but no CUDA device is visible here "
                              "(torch.cuda.is_available() is False); use --gpus cpu")
        count = torch.cuda.device_count()
        for d in cuda:
            if int(d.split(":")[1]) >= count:
                raise ConfigError(f"--gpus {spec}: {d} does not exist; this machine has {count} CUDA device(s)")
        if len(set(cuda)) != len(cuda):
            raise ConfigError(f"--gpus {spec} names a GPU twice; NCCL needs one process per GPU")
    return devices


def fast_bf16(device: torch.device) -> bool:
    """Whether bf16 autocast speeds this device up: CUDA, or CPUs with AVX512-BF16 or AMX units
    (on 2 such cores, 1.3-1.5x for training and 1.6-1.8x for feature extraction; BENCHMARKS.md)."""
    if device.type == "cuda":
        return True
    cpu = getattr(torch, "cpu", None)
    try:
        return bool(cpu._is_avx512_bf16_supported() or cpu._is_amx_tile_supported())
    except AttributeError:
        return False
