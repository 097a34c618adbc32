"""GPU utilisation and memory through NVML (`pip install nvidia-ml-py`), when it is there."""

from __future__ import annotations

_state: dict = {}


def gpu_lines() -> tuple[str, ...]:
    """One line per GPU, or one line saying why there are none. Never raises."""
    try:
        import pynvml
    except ImportError:
        return ("GPU: not available (pynvml is not installed: pip install nvidia-ml-py)",)
    try:
        if not _state.get("init"):
            pynvml.nvmlInit()
            _state["init"] = True
        lines = []
        for index in range(pynvml.nvmlDeviceGetCount()):
            handle = pynvml.nvmlDeviceGetHandleByIndex(index)
            util = pynvml.nvmlDeviceGetUtilizationRates(handle)
            memory = pynvml.nvmlDeviceGetMemoryInfo(handle)
            lines.append(f"GPU {index}: {util.gpu:3d}% busy  memory {memory.used / 2**30:.1f}/"
                         f"{memory.total / 2**30:.1f} GiB")
        return tuple(lines) or ("GPU: NVML found no device",)
    except Exception as exc:  # NVML raises its own error types (no driver, no permission)
        return (f"GPU: not available ({type(exc).__name__}: {exc})",)
