"""Every value of a Config checked at once, before any run folder exists: names against the known
choices, numbers against their ranges, and the arithmetic of the batch (workers, BatchNorm groups).
Paths and datasets on disk are checked by `oaecmlr.engine.launch.check_inputs`."""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from oaecmlr.config import settings as s
from oaecmlr.config.settings import Config
from oaecmlr.errors import ConfigError

Rule = tuple[Callable[[Any], bool], str]


def one_of(*choices) -> Rule:
    return (lambda v: v in choices), f"one of {', '.join(map(str, choices))}"


def at_least(low: float) -> Rule:
    return (lambda v: v >= low), f">= {low:g}"


def positive() -> Rule:
    return (lambda v: v > 0), "> 0"


def between(low: float, high: float) -> Rule:
    return (lambda v: low <= v <= high), f"between {low:g} and {high:g}"


def inside(low: float, high: float) -> Rule:
    return (lambda v: low < v < high), f"strictly between {low:g} and {high:g}"


RULES: dict[str, Rule] = {
    "run.kind": one_of(*s.RUN_KINDS),
    "run.epochs": at_least(0), "run.iterations": at_least(1), "run.eval_every": at_least(1),
    "run.log_every": at_least(1), "run.threads": at_least(0),
    "data.height": at_least(8), "data.width": at_least(8), "data.num_ids": at_least(1),
    "data.num_instances": at_least(1), "data.eval_batch": at_least(1), "data.holdout_ids": at_least(0),
    "data.flip_p": between(0, 1), "data.pad": at_least(0), "data.erase_p": between(0, 1),
    "data.image_cache": one_of(*s.IMAGE_CACHE), "data.device_reserve_gb": at_least(0),
    "data.sampler": one_of(*s.SAMPLERS), "data.resize": one_of(*s.RESIZE_FILTERS),
    "data.cuhk03": one_of(*s.CUHK03_VARIANTS),
    "data.synthetic_ids": at_least(1), "data.synthetic_test_ids": at_least(1), "data.synthetic_cams": at_least(2),
    "data.synthetic_images": at_least(1),
    "model.arch": one_of(*s.ARCHS), "model.pooling": one_of(*s.POOLINGS), "model.last_stride": one_of(1, 2),
    "optim.lr": positive(), "optim.weight_decay": at_least(0), "optim.step_size": at_least(1), "optim.gamma": positive(),
    "cluster.eps": inside(0, 1), "cluster.min_samples": at_least(1), "cluster.k1": at_least(1),
    "cluster.k2": at_least(1), "cluster.knn_backend": one_of(*s.KNN_BACKENDS),
    "cluster.k1_intra": at_least(1), "cluster.k1_inter": at_least(1), "cluster.k2_intra": at_least(1),
    "cluster.k2_inter": at_least(1), "cluster.camera_norm": one_of(*s.CAMERA_NORMS),
    "oae.k": at_least(1), "oae.rho": at_least(0), "oae.rounds": at_least(0), "oae.rule": one_of(*s.OAE_RULES),
    "oae.support": at_least(1), "oae.support_k": at_least(1), "oae.camera_shift": between(0, 0.99),
    "cmlr.mode": one_of(*s.CMLR_MODES), "cmlr.lam": between(0, 1), "cmlr.tau_r": positive(), "cmlr.top_k": at_least(0),
    "cmlr.weight": at_least(0), "cmlr.warmup": at_least(0), "cmlr.radius": inside(0, 1),
    "cmlr.candidates": at_least(1), "cmlr.min_spread": positive(),
    "memory.temperature": positive(), "memory.momentum": between(0, 1), "memory.mode": one_of(*s.MEMORY_MODES),
    "memory.camera_weight": at_least(0), "memory.camera_temperature": positive(), "memory.camera_negatives": at_least(0),
    "supervised.label_smoothing": between(0, 0.99), "supervised.triplet_margin": at_least(0),
    "train.bn_group": at_least(0), "train.bn_running": one_of(*s.BN_RUNNING), "train.dist_timeout": positive(),
    "train.deterministic": one_of(False, True),
}


def validate(config: Config) -> None:
    """ConfigError naming the first value that is out of range, or a batch that cannot be formed."""
    for dotted, (ok, wanted) in RULES.items():
        value = config.get(dotted)
        if isinstance(value, float) and not math.isfinite(value) or not ok(value):
            raise ConfigError(f"{dotted} must be {wanted}, got {value!r}")
    if config.oae.support > config.oae.support_k:
        raise ConfigError(f"oae.support ({config.oae.support}) cannot exceed oae.support_k ({config.oae.support_k}): "
                          "it counts votes among the outlier's support_k nearest neighbours")
    dataset = config.data.dataset
    if dataset_name(dataset) is None:
        raise ConfigError(f"data.dataset {dataset!r} is not a dataset; choose one of {', '.join(s.DATASETS)}")
    world = len(gpu_entries(config.run.gpus))
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
