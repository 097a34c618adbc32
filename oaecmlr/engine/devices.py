"""The devices of a run: `--gpus` checked against this machine, where bf16 autocast pays, and how
much host memory is free for the image cache."""

from __future__ import annotations

import os

import torch

from oaecmlr.config import gpu_entries
from oaecmlr.errors import ConfigError


def parse_gpus(spec: str) -> list[str]:
    """Device strings of the workers, e.g. "0,1" -> ["cuda:0", "cuda:1"], "cpu" -> ["cpu"], with a
    one-line error when the GPUs named are not there."""
    devices = gpu_entries(spec)
    cuda = [d for d in devices if d.startswith("cuda")]
    if cuda:
        if not torch.cuda.is_available():
            raise ConfigError(f"--gpus {spec} needs CUDA, but no CUDA device is visible here "
                              "(torch.cuda.is_available() is False); use --gpus cpu")
        count = torch.cuda.device_count()
        for d in cuda:
            if int(d.split(":")[1]) >= count:
                raise ConfigError(f"--gpus {spec}: {d} does not exist; this machine has {count} CUDA device(s)")
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


def available_memory() -> int | None:
    """Bytes of host memory a new allocation can take now: the kernel's MemAvailable, lowered to
    what the memory cgroup (a container's limit) still allows; None where neither can be read."""
    found = []
    try:
        with open("/proc/meminfo", encoding="ascii") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    found.append(int(line.split()[1]) * 1024)
                    break
    except (OSError, ValueError, IndexError):
        pass
    try:
        with open("/sys/fs/cgroup/memory.max", encoding="ascii") as f:
            limit = f.read().strip()
        with open("/sys/fs/cgroup/memory.current", encoding="ascii") as f:
            used = int(f.read().strip())
        if limit != "max":
            found.append(max(0, int(limit) - used))
    except (OSError, ValueError):
        pass
    if not found:
        try:
            found.append(os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE"))
        except (OSError, ValueError, AttributeError):
            return None
    return min(found)
