"""GPU utilisation and memory through NVML (`pip install nvidia-ml-py`), when it is there.

NVML numbers every GPU of the machine in its own order; a run's `cuda:N` counts only the GPUs that
CUDA_VISIBLE_DEVICES lets it see, in CUDA's order. So "GPU 0" of NVML need not be `--gpus 0`. The
run records each worker's GPU with its UUID (the `gpus` of its start or resume event), and the
UUID is what both sides agree on: the run's GPUs are shown first under the run's own names, the
machine's other GPUs after them under their NVML numbers.
"""

from __future__ import annotations

import glob
import os
from collections.abc import Sequence

_state: dict = {}


def gpu_lines(run_gpus: Sequence[dict] = ()) -> tuple[str, ...]:
    """One line per GPU (the run's first), or one line saying why there are none. Never raises."""
    try:
        import pynvml
    except ImportError:
        if not nvidia_driver():
            return ("GPU: none (no NVIDIA driver on this machine)",)
        return ("GPU: not available (pynvml is not installed: pip install nvidia-ml-py)",)
    try:
        if not _state.get("init"):
            pynvml.nvmlInit()
            _state["init"] = True
        usage = {}  # uuid -> (NVML index, the line's figures)
        for index in range(pynvml.nvmlDeviceGetCount()):
            handle = pynvml.nvmlDeviceGetHandleByIndex(index)
            util = pynvml.nvmlDeviceGetUtilizationRates(handle)
            memory = pynvml.nvmlDeviceGetMemoryInfo(handle)
            figures = f"{util.gpu:3d}% busy  memory {memory.used / 2**30:.1f}/{memory.total / 2**30:.1f} GiB"
            usage[_text(pynvml.nvmlDeviceGetUUID(handle))] = (index, figures)
    except Exception as exc:  # NVML raises its own error types (no driver, no permission)
        return (f"GPU: not available ({type(exc).__name__}: {exc})",)
    lines, shown = [], set()
    for gpu in (g for g in run_gpus if isinstance(g, dict)):  # as the run's events recorded them
        uuid, name = gpu.get("uuid"), gpu.get("device", "?")
        if uuid in usage and uuid not in shown:
            shown.add(uuid)
            index, figures = usage[uuid]
            lines.append(f"run {name} (NVML {index}): {figures}")
        elif uuid not in usage:
            lines.append(f"run {name}: not seen by NVML on this machine")
    lines += [f"NVML {index}: {figures}" for uuid, (index, figures) in usage.items() if uuid not in shown]
    return tuple(lines) or ("GPU: NVML found no device",)


def nvidia_driver() -> bool:
    """Whether this machine has an NVIDIA driver (its /proc entry or a device node): only then is
    NVML, and so `pip install nvidia-ml-py`, worth suggesting."""
    return os.path.exists("/proc/driver/nvidia") or bool(glob.glob("/dev/nvidia[0-9]*"))


def _text(value) -> str:
    """NVML strings: bytes in older pynvml versions, str in newer ones."""
    return value.decode() if isinstance(value, bytes) else str(value)
