"""Every value of a Config checked at once, before any run folder exists: names against the known
choices, numbers against their ranges, and the arithmetic of the batch (workers, BatchNorm groups).
Paths and datasets on disk are checked by `oaecmlr.engine.launch.check_inputs`."""

from __future__ import annotations

import math
import os
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from oaecmlr.config import settings as s
from oaecmlr.config.settings import Config
from oaecmlr.errors import ConfigError

Rule = tuple[Callable[[Any], bool], str]
MAX_SIDE = 1024  # pixels of data.height and data.width (the reference trains at 256 x 128)
SEED_MAX = 2**64 - 1  # torch.manual_seed takes seeds of 64 bits


def one_of(*choices) -> Rule:
    return (lambda v: v in choices), f"one of {', '.join(map(str, choices))}"


def between(low: float, high: float) -> Rule:
    return (lambda v: low <= v <= high), f"between {_number(low)} and {_number(high)}"


def _number(value: float) -> str:
    return f"{value:,}" if isinstance(value, int) else f"{value:g}"


def inside(low: float, high: float) -> Rule:
    return (lambda v: low < v < high), f"strictly between {low:g} and {high:g}"


def positive_up_to(high: float) -> Rule:
    return (lambda v: 0 < v <= high), f"> 0 and <= {high:g}"


def cores() -> int:
    """CPU cores of this machine (run.threads and CPU workers are bounded by them)."""
    return os.cpu_count() or 1


def threads_rule() -> Rule:
    """0 (torch's default) up to 4 threads per core: more only thrashes, and torch crashes (a
    segfault) on tens of thousands."""
    return (lambda v: 0 <= v <= 4 * cores()), f"between 0 and {4 * cores()} (4 x the {cores()} cores of this machine)"


# Every number has an upper bound that a real run could need and that no run's memory or time
# overflows on; the image cache's memory is checked against the machine by `check_memory`.
IDS = 100_000  # identities of a synthetic set or a held-out split (MSMT17 has 4,101)
NEIGHBOURS = 1_000  # k of any neighbour list
EPOCHS = 10_000
RULES: dict[str, Rule] = {
    "run.kind": one_of(*s.RUN_KINDS), "run.seed": between(0, SEED_MAX),
    "run.epochs": between(0, EPOCHS), "run.iterations": between(1, 1_000_000), "run.eval_every": between(1, EPOCHS),
    "run.log_every": between(1, 1_000_000), "run.threads": threads_rule(),
    "data.height": between(8, MAX_SIDE), "data.width": between(8, MAX_SIDE), "data.num_ids": between(1, 1024),
    "data.num_instances": between(1, 256), "data.eval_batch": between(1, 16_384), "data.holdout_ids": between(0, IDS),
    "data.flip_p": between(0, 1), "data.pad": between(0, MAX_SIDE // 2), "data.erase_p": between(0, 1),
    "data.image_cache": one_of(*s.IMAGE_CACHE), "data.device_reserve_gb": between(0, 4096),
    "data.sampler": one_of(*s.SAMPLERS), "data.resize": one_of(*s.RESIZE_FILTERS),
    "data.cuhk03": one_of(*s.CUHK03_VARIANTS),
    "data.synthetic_ids": between(1, IDS), "data.synthetic_test_ids": between(1, IDS),
    "data.synthetic_cams": between(2, 64), "data.synthetic_images": between(1, 1_000),
    "data.synthetic_seed": between(0, SEED_MAX),
    "model.arch": one_of(*s.ARCHS), "model.pooling": one_of(*s.POOLINGS), "model.last_stride": one_of(1, 2),
    "optim.lr": positive_up_to(10), "optim.weight_decay": between(0, 1), "optim.step_size": between(1, EPOCHS),
    "optim.gamma": positive_up_to(10),
    "cluster.eps": inside(0, 1), "cluster.min_samples": between(1, NEIGHBOURS), "cluster.k1": between(1, NEIGHBOURS),
    "cluster.k2": between(1, NEIGHBOURS), "cluster.knn_backend": one_of(*s.KNN_BACKENDS),
    "cluster.k1_intra": between(1, NEIGHBOURS), "cluster.k1_inter": between(1, NEIGHBOURS),
    "cluster.k2_intra": between(1, NEIGHBOURS), "cluster.k2_inter": between(1, NEIGHBOURS),
    "cluster.camera_norm": one_of(*s.CAMERA_NORMS),
    "oae.k": between(1, NEIGHBOURS), "oae.rho": between(0, 100), "oae.rounds": between(0, 100),
    "oae.rule": one_of(*s.OAE_RULES), "oae.support": between(1, NEIGHBOURS), "oae.support_k": between(1, NEIGHBOURS),
    "oae.camera_shift": between(0, 0.99),
    "cmlr.mode": one_of(*s.CMLR_MODES), "cmlr.lam": between(0, 1), "cmlr.tau_r": positive_up_to(100),
    "cmlr.top_k": between(0, IDS), "cmlr.weight": between(0, 100), "cmlr.warmup": between(0, EPOCHS),
    "cmlr.radius": inside(0, 1), "cmlr.candidates": between(1, NEIGHBOURS), "cmlr.min_spread": positive_up_to(1),
    "memory.temperature": positive_up_to(10), "memory.momentum": between(0, 1), "memory.mode": one_of(*s.MEMORY_MODES),
    "memory.camera_weight": between(0, 100), "memory.camera_temperature": positive_up_to(10),
    "memory.camera_negatives": between(0, IDS),
    "supervised.label_smoothing": between(0, 0.99), "supervised.triplet_margin": between(0, 100),
    "train.bn_group": between(0, 262_144), "train.bn_running": one_of(*s.BN_RUNNING),
    "train.dist_timeout": positive_up_to(7 * 86_400),
    "train.deterministic": one_of(False, True),
}


def validate(config: Config) -> None:
    """ConfigError naming the first value that is out of range, or a batch that cannot be formed."""
    for dotted, (ok, wanted) in {**RULES, "run.threads": threads_rule()}.items():  # the cores of the machine now
        value = config.get(dotted)
        if isinstance(value, float) and not math.isfinite(value) or not ok(value):
            raise ConfigError(f"{dotted} must be {wanted}, got {value!r}")
    if config.oae.support > config.oae.support_k:
        raise ConfigError(f"oae.support ({config.oae.support}) cannot exceed oae.support_k ({config.oae.support_k}): "
                          "it counts votes among the outlier's support_k nearest neighbours")
    dataset = config.data.dataset
    if dataset_name(dataset) is None:
        raise ConfigError(f"data.dataset {dataset!r} is not a dataset; choose one of {', '.join(s.DATASETS)}")
    entries = gpu_entries(config.run.gpus)
    world = len(entries)
    if entries[0] == "cpu" and world > max(2, cores()):
        raise ConfigError(f"--gpus {config.run.gpus[:40]} starts {world} CPU workers on the {cores()} cores of this "
                          f"machine; use at most {max(2, cores())} (e.g. --gpus cpu,cpu), or --gpus cpu")
    if config.data.num_ids % world:
        raise ConfigError(f"data.num_ids ({config.data.num_ids}) must divide by the {world} workers of --gpus "
                          f"{config.run.gpus}: each takes num_ids / workers identities of the batch")
    try:
        plan_batchnorm(config.train.bn_group, config.data.num_ids * config.data.num_instances, world)
    except ValueError as exc:
        raise ConfigError(str(exc)) from None


def notes(config: Config) -> list[str]:
    """Settings that are valid but act otherwise than they read."""
    out = []
    if config.oae.k >= config.cluster.k1:
        out.append(f"oae.k = {config.oae.k} acts as {config.cluster.k1 - 1}: OAE's mutual neighbours come from the "
                   f"clustering's kNN lists of cluster.k1 = {config.cluster.k1} entries, the sample itself first")
    if config.cluster.k2 > config.cluster.k1:
        out.append(f"cluster.k2 = {config.cluster.k2} acts as {config.cluster.k1}: query expansion averages over "
                   "the first k2 entries of lists of cluster.k1 entries")
    return out


GB = 1e9


def image_cache_bytes(config: Config, images: int) -> int:
    """Host memory the uint8 image cache takes for `images` images at data.height x data.width (a
    synthetic set is drawn in chunks and then joined: twice that)."""
    return images * 3 * config.data.height * config.data.width * (2 if config.data.dataset == "synthetic" else 1)


def synthetic_images(config: Config) -> int:
    """The most images a synthetic set of these settings holds (each identity seen by every camera)."""
    d = config.data
    return (d.synthetic_ids + d.synthetic_test_ids) * d.synthetic_cams * d.synthetic_images


def check_image_memory(config: Config, images: int, available: int | None) -> None:
    """ConfigError naming the settings to lower when the image cache of `images` images cannot fit
    in the `available` bytes of memory (None: unknown, nothing is refused). Checked before decoding,
    so a run too large for the machine stops with this line instead of being killed by the kernel."""
    need = image_cache_bytes(config, images)
    if available is None or need <= available:
        return
    d = config.data
    lower = (f"data.synthetic_ids (now {d.synthetic_ids:,}), data.synthetic_images (now {d.synthetic_images:,}) or "
             if d.dataset == "synthetic" else "")
    raise ConfigError(f"the image cache needs {_size(need)} for {images:,} images of data.height x data.width = "
                      f"{d.height} x {d.width}, but this machine has {_size(available)} of memory available; lower "
                      f"{lower}data.height and data.width")


def _size(size: int) -> str:
    return f"{size / GB:.1f} GB" if size >= GB else f"{size / 1e6:.1f} MB"


def dataset_name(name: str) -> str | None:
    """The canonical dataset name of `name` or an alias (case, '-' and '_' ignored)."""
    key = name.strip().lower().replace("-", "").replace("_", "")
    for canonical, aliases in s.DATASETS.items():
        if key == canonical or key in aliases:
            return canonical
    return None


def gpu_entries(spec: str) -> list[str]:
    """The worker devices of `--gpus`: "0,1" -> ["cuda:0", "cuda:1"], "cpu,cpu" -> ["cpu", "cpu"].
    Only the syntax; `oaecmlr.engine.devices.parse_gpus` also checks the GPUs exist."""
    entries = [e.strip().lower() for e in str(spec).split(",") if e.strip()]
    if not entries:
        raise ConfigError("--gpus is empty; use cpu, 0 or 0,1")
    devices = []
    for entry in entries:
        if entry == "cpu":
            devices.append("cpu")
        elif entry.isdigit() and len(entry) < 4:
            devices.append(f"cuda:{int(entry)}")
        else:
            raise ConfigError(f"--gpus entry {entry!r} is neither 'cpu' nor a CUDA index; e.g. --gpus 0,1 or --gpus cpu")
    cuda = [d for d in devices if d.startswith("cuda")]
    if cuda and len(cuda) != len(devices):
        raise ConfigError("--gpus mixes cpu and CUDA entries; use all-CUDA (0,1) or all-cpu (cpu,cpu)")
    if len(set(cuda)) != len(cuda):
        raise ConfigError(f"--gpus {spec} names a GPU twice; NCCL needs one process per GPU")
    return devices


@dataclass(frozen=True)
class BatchNormPlan:
    """How the global batch is split into BatchNorm statistics groups (`train.bn_group`; applied to
    the model by `oaecmlr.engine.batchnorm`)."""

    mode: str  # "whole", "local" (whole groups on each worker) or "ranks" (groups span workers)
    group_size: int  # images per group (the global batch for "whole")
    groups_per_rank: int = 1  # "local"
    ranks_per_group: int = 1  # "ranks"


def plan_batchnorm(bn_group: int, global_batch: int, world_size: int) -> BatchNormPlan:
    """The plan for groups of `bn_group` images; ValueError with the fix when they cannot be formed."""
    if bn_group < 0:
        raise ValueError(f"train.bn_group must be >= 0 (0 = the whole global batch), got {bn_group}")
    if bn_group == 0 or bn_group >= global_batch:
        return BatchNormPlan("whole", global_batch)
    if global_batch % bn_group:
        raise ValueError(f"train.bn_group={bn_group} does not divide the global batch of {global_batch} images "
                         f"(data.num_ids x data.num_instances); use a divisor such as {_divisor(global_batch, bn_group)}")
    per_rank = global_batch // world_size
    if per_rank % bn_group == 0:
        return BatchNormPlan("local", bn_group, groups_per_rank=per_rank // bn_group)
    if bn_group % per_rank == 0:
        return BatchNormPlan("ranks", bn_group, ranks_per_group=bn_group // per_rank)
    raise ValueError(f"train.bn_group={bn_group} and the {per_rank} images each of the {world_size} workers holds "
                     "must divide one another; change train.bn_group or the number of workers")


def _divisor(n: int, near: int) -> int:
    return min((d for d in range(1, n + 1) if n % d == 0), key=lambda d: (abs(d - near), d))
