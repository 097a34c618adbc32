"""Where the uint8 image cache lives during a run.

On a GPU the cache goes to device memory when it fits next to training (batches are then gathered
and augmented without touching the host); what does not fit stays in pinned host memory, from
which batches are copied asynchronously. The training split goes first: it is read every
iteration, the evaluation splits only once per evaluation. On the CPU nothing moves.
"""

from __future__ import annotations

import torch

from oaecmlr.engine.devices import resolve_device
from oaecmlr.engine.rundata import RunData, Split
from oaecmlr.errors import ConfigError

GiB = 2**30
MODES = ("auto", "device", "host")
SPLITS = ("train", "query", "gallery")


def plan_placement(split_bytes: dict[str, int], free_bytes: int, reserve_bytes: int, mode: str = "auto") -> dict[str, str]:
    """'device' or 'host' for each split, in the given order. `auto` puts a split on the device while
    at least `reserve_bytes` stay free for training; `device` puts all there or refuses."""
    if mode not in MODES:
        raise ConfigError(f"data.image_cache must be one of {', '.join(MODES)}, got {mode!r}")
    if mode == "host":
        return {name: "host" for name in split_bytes}
    left = free_bytes - reserve_bytes
    total = sum(split_bytes.values())
    if mode == "device" and total > left:
        raise ConfigError(f"data.image_cache=device needs {total / GiB:.1f} GiB on the GPU but only "
                          f"{max(left, 0) / GiB:.1f} GiB are free beyond data.device_reserve_gb; "
                          "use data.image_cache=auto (pinned host memory for what does not fit) or lower the reserve")
    plan = {}
    for name, size in split_bytes.items():
        plan[name] = "device" if size <= left else "host"
        left -= size if plan[name] == "device" else 0
    return plan


def place_images(data: RunData, device: torch.device, mode: str = "auto", reserve_gb: float = 24.0) -> RunData:
    """`data` with each split's images on `device` or in pinned host memory, per `plan_placement`;
    the choice is recorded in data.stats["image_cache"] (and so in the start event)."""
    device = resolve_device(device)  # the cache's tensors report cuda:N; the loop compares with its own device
    if device.type != "cuda":
        plan_placement({}, 0, 0, mode)  # still reject an unknown mode
        data.stats["image_cache"] = {name: "host" for name in SPLITS}
        return data
    splits = {name: getattr(data, name) for name in SPLITS}
    free, _ = torch.cuda.mem_get_info(device)
    plan = plan_placement({name: s.images.numel() * s.images.element_size() for name, s in splits.items()},
                          free, int(reserve_gb * GiB), mode)
    for name, split in splits.items():
        images = split.images.to(device) if plan[name] == "device" else split.images.pin_memory()
        setattr(data, name, Split(images, split.pids, split.camids))
    data.stats["image_cache"] = {name: "cuda" if where == "device" else "pinned host" for name, where in plan.items()}
    return data
