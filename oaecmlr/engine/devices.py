"""The devices of a run: `--gpus` checked against this machine, every device made indexed, where
bf16 autocast pays, the cuDNN kernel choice, what identifies a GPU (name, capability, UUID), and how
much host memory is free for the image cache."""

from __future__ import annotations

import os

import torch

from oaecmlr.config import gpu_entries
from oaecmlr.errors import ConfigError

BF16_CAPABILITY = (8, 0)  # Ampere and later: bf16 tensor cores (V100 is 7.0, T4 7.5: none)


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


def resolve_device(device: torch.device | str) -> torch.device:
    """The device with an index where tensors carry one: `cuda` -> `cuda:N`, `cpu:0` -> `cpu`.

    A tensor on a GPU always reports an indexed device (`cuda:0`) and one on the CPU never does, so
    only resolved devices compare equal to `tensor.device`; `set_device` and NCCL's `device_id`
    need the index too. An index-less `cuda` means the current device, which is what torch itself
    would allocate on: `torch.cuda.current_device()` where CUDA is available, else 0 (the current
    device of every process that has not chosen one). The resolution needs no GPU.
    """
    device = torch.device(device)
    if device.type == "cpu":
        return torch.device("cpu")
    if device.index is not None:
        return device
    if device.type == "cuda":
        return torch.device("cuda", torch.cuda.current_device() if torch.cuda.is_available() else 0)
    return device


def bf16_is_fast(device_type: str, capability: tuple[int, int] | None = None, cpu_bf16_units: bool = False) -> bool:
    """Whether bf16 autocast speeds a device up: a GPU of compute capability >= 8.0 (bf16 tensor cores;
    on V100 and T4 bf16 is emulated and slower than float32), or a CPU with AVX512-BF16 or AMX units
    (on 2 such cores, 1.3-1.5x for training and 1.6-1.8x for feature extraction; BENCHMARKS.md)."""
    if device_type == "cuda":
        return capability is not None and tuple(capability) >= BF16_CAPABILITY
    return device_type == "cpu" and cpu_bf16_units


def fast_bf16(device: torch.device) -> bool:
    """`bf16_is_fast` for this machine's `device`."""
    device = resolve_device(device)
    if device.type == "cuda":
        return bf16_is_fast("cuda", torch.cuda.get_device_capability(device))
    return bf16_is_fast(device.type, cpu_bf16_units=_cpu_bf16_units())


def _cpu_bf16_units() -> bool:
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


def cudnn_benchmark(device: torch.device, deterministic: bool) -> bool:
    """Whether cuDNN should time its convolution algorithms and keep the fastest: on a GPU for
    training, whose input shapes never change (a fixed batch of fixed-size images), unless
    `train.deterministic` asks for deterministic kernels (benchmarking may pick a
    non-deterministic algorithm, and a different one from run to run)."""
    return resolve_device(device).type == "cuda" and not deterministic


def configure_kernels(device: torch.device, deterministic: bool) -> None:
    """Set cuDNN's process-wide flags for training on `device` (nothing changes on the CPU). The
    deterministic choice covers cuDNN only; scatter-adds such as `index_add_` stay non-deterministic
    on CUDA (`torch.use_deterministic_algorithms` is not set)."""
    if resolve_device(device).type != "cuda":
        return
    torch.backends.cudnn.benchmark = cudnn_benchmark(device, deterministic)
    torch.backends.cudnn.deterministic = deterministic


def gpu_identity(device: torch.device) -> dict:
    """Name, compute capability and NVML UUID of a GPU ({} for other devices). The UUID is what maps
    a run's `cuda:N` (numbered inside CUDA_VISIBLE_DEVICES) to NVML's own numbering."""
    device = resolve_device(device)
    if device.type != "cuda":
        return {}
    properties = torch.cuda.get_device_properties(device)
    out = {"device": str(device), "name": properties.name, "capability": f"{properties.major}.{properties.minor}"}
    uuid = getattr(properties, "uuid", None)  # a CUDA UUID; NVML writes the same bytes as GPU-<uuid>
    if uuid is not None:
        text = str(uuid)
        out["uuid"] = text if text.startswith(("GPU-", "MIG-")) else f"GPU-{text}"
    return out
