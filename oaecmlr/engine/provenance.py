"""Where a run's numbers come from, recorded in its `start` event: the code (git commit and whether
the working tree had uncommitted changes), the package versions, the host, its CPU and GPUs.
`oaecmlr show` prints it and `oaecmlr compare` warns when runs differ in it, as DVC and MLflow do."""

from __future__ import annotations

import platform
import socket
import subprocess
from functools import lru_cache
from pathlib import Path

import numpy as np
import torch

import oaecmlr
from oaecmlr.engine.devices import fast_bf16, gpu_identity, resolve_device

REPOSITORY = Path(oaecmlr.__file__).resolve().parents[1]


def _git(*args: str) -> str | None:
    try:
        done = subprocess.run(["git", "-C", str(REPOSITORY), *args], capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.TimeoutExpired):
        return None
    return done.stdout.strip() if done.returncode == 0 else None


@lru_cache(maxsize=1)
def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.lower().startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def provenance(device: torch.device, gpus: list[dict] | None = None, deterministic: bool = False) -> dict:
    """Plain data for the start event; fields that cannot be known are left out. On a GPU: its name
    and compute capability, whether bf16 is fast there (capability >= 8.0), the cuDNN flags in
    force, and `gpus`, every worker's GPU with its NVML UUID (the dashboard maps them to NVML)."""
    device = resolve_device(device)
    out = {"oaecmlr": oaecmlr.__version__, "torch": torch.__version__, "numpy": np.__version__,
           "python": platform.python_version(), "host": socket.gethostname(), "cpu": cpu_model()}
    commit = _git("rev-parse", "HEAD")
    if commit:
        status = _git("status", "--porcelain", "--untracked-files=no")
        out.update(commit=commit[:12], dirty=bool(status))
    if device.type == "cuda":
        identity = gpu_identity(device)
        out.update(gpu=identity["name"], capability=identity["capability"], gpus=gpus or [identity],
                   deterministic=deterministic, cudnn_benchmark=torch.backends.cudnn.benchmark,
                   cudnn_deterministic=torch.backends.cudnn.deterministic)
    out["bf16"] = fast_bf16(device)
    return out
