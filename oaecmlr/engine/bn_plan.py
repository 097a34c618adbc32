"""The BatchNorm statistics groups of a global batch (`train.bn_group`), as plain arithmetic:
checked with the config before a run exists, applied to the model by `engine.batchnorm`."""

from __future__ import annotations

from dataclasses import dataclass

RUNNING = ("first", "mean")


@dataclass(frozen=True)
class BatchNormPlan:
    """How the global batch is split into statistics groups (see the module docstring)."""

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
