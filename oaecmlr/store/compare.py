"""Comparing runs honestly: metrics side by side, per-evaluation deltas against the first run,
clusters per epoch, a config diff, warnings when runs are not comparable, and mean ± std over
seeds of the same config. Pure functions of run folders, shared by the CLI and the dashboard."""

from __future__ import annotations

import dataclasses
import math
from collections import defaultdict
from dataclasses import dataclass
from typing import Any

from oaecmlr.store.metrics import SCORES, Best
from oaecmlr.store.ondisk import silent
from oaecmlr.store.runs import RunDir, summarize_run
from oaecmlr.store.summary import RunSummary

METRICS = SCORES
# Settings that make numbers incomparable when they differ (besides the dataset itself).
COMPARABILITY = {
    "data.dataset": "dataset",
    "data.height": "input height",
    "data.width": "input width",
    "data.num_ids": "identities per batch",
    "data.num_instances": "instances per identity",
    "run.epochs": "epochs",
    "run.iterations": "iterations per epoch",
    "data.holdout_ids": "evaluation split (data.holdout_ids)",
}
# Keys that never make two runs different experiments.
NOT_CONFIG = ("run.seed", "run.gpus", "run.threads", "data.root", "data.cache_dir", "model.pretrained", "model.init")
PROVENANCE = {"commit": "git commit", "dirty": "uncommitted changes", "oaecmlr": "oaecmlr version",
              "torch": "torch version", "numpy": "numpy version", "host": "host", "gpu": "GPU", "cpu": "CPU"}


@dataclass(frozen=True)
class RunRecord:
    """A run's summary and its flat settings."""

    summary: RunSummary
    config: dict[str, Any]

    @property
    def name(self) -> str:
        return self.summary.name


def read_config(run: RunDir, warn=None) -> dict[str, Any]:
    """The run's settings, flat ("section.key": value), as the run understood them; what a
    hand-edited file says when they no longer check; {} (with a warning) when it cannot be read."""
    from oaecmlr.config import config_from_dict, read_toml
    from oaecmlr.errors import ConfigError

    if not run.config.exists():
        return {}
    try:
        mapping = read_toml(run.config)
    except ConfigError as exc:  # not TOML, too large, not a regular file: one bad run hides no other
        (warn or silent)(f"{exc}; {run.name}'s settings are not shown")
        return {}
    try:
        return config_from_dict(mapping).flat()
    except ConfigError:  # a hand-edited file: show what it says
        return {f"{s}.{k}": v for s, values in mapping.items() if isinstance(values, dict) for k, v in values.items()}


def run_record(run: RunDir, warn=None) -> RunRecord:
    return RunRecord(summarize_run(run, warn=warn), read_config(run, warn))


@dataclass(frozen=True)
class RunRow:
    """One run in a comparison: its best evaluation after epoch 0 and its last one (`Best`: the epoch
    and its `Metrics`), how long it took, and its last clustering."""

    name: str
    status: str
    dataset: str | None
    epoch: int
    epochs: int | None
    best: Best | None
    final: Best | None
    time_to_best_s: float | None
    elapsed_s: float | None
    world_size: int | None
    global_batch: int | None
    provenance: dict[str, Any]
    last_clusters: dict[str, Any] | None

    def to_json(self) -> dict[str, Any]:
        fields = {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}
        return {**fields, "best": _plain(self.best), "final": _plain(self.final)}


@dataclass(frozen=True)
class Comparison:
    """Runs side by side (the first is the reference of the deltas), the per-epoch deltas and
    clusters, the config diff, the comparability warnings and the seed groups."""

    runs: tuple[RunRow, ...]
    deltas: list[dict]
    clusters: list[dict]
    config_diff: dict[str, dict]
    warnings: list[str]
    seed_groups: list[dict]

    def to_json(self) -> dict[str, Any]:
        """As plain data (`oaecmlr compare --format json`)."""
        return {"runs": [r.to_json() for r in self.runs], "deltas": self.deltas, "clusters": self.clusters,
                "config_diff": self.config_diff, "warnings": self.warnings, "seed_groups": self.seed_groups}


def compare(records: list[RunRecord]) -> Comparison:
    """The comparison of run records (first run = reference for the deltas)."""
    if len(records) < 2:
        raise ValueError("compare needs at least two runs")
    return Comparison(
        runs=tuple(_run_row(r.summary) for r in records),
        deltas=_deltas(records),
        clusters=_clusters(records),
        config_diff=config_diff([r.config for r in records], [r.name for r in records]),
        warnings=comparability_warnings(records),
        seed_groups=seed_groups(records),
    )


def _best(evaluation) -> Best | None:
    return None if evaluation is None else Best(epoch=evaluation.epoch, metrics=evaluation.metrics)


def _plain(best: Best | None) -> dict | None:
    return None if best is None else best.to_dict()


def _run_row(s: RunSummary) -> RunRow:
    best = s.best
    return RunRow(
        name=s.name, status=s.status, dataset=s.dataset, epoch=s.epoch, epochs=s.epochs,
        best=_best(best), final=_best(s.final),
        time_to_best_s=best.time - s.started if best and s.started else None,
        elapsed_s=s.elapsed, world_size=s.start.world_size if s.start else None,
        global_batch=s.start.global_batch if s.start else None,
        provenance=s.start.provenance if s.start else {},
        last_clusters=_cluster_row(s.latest_clusters) if s.latest_clusters else None,
    )


# What says whether OAE and CMLR work (docs/method.md sections 3 and 4, Logged), in display order.
METHOD_DIAGNOSTICS = ("oae_precision", "oae_pairwise_precision", "oae_ceiling", "oae_assigned_share", "oae_same_camera",
                      "cmlr_mass_clean", "cmlr_mass_mislabelled", "cmlr_auroc", "cmlr_kl", "cmlr_mislabelled")


def _cluster_row(c) -> dict[str, Any]:
    return {k: getattr(c, k) for k in ("epoch", "clusters", "outliers_after", "oae_assigned", "cross_camera",
                                       "cameras_per_cluster", "cross_camera_images", "purity", "nmi", *METHOD_DIAGNOSTICS)}


def _deltas(records: list[RunRecord]) -> list[dict]:
    """Per evaluated epoch: each run's mAP and R1, and the difference to the first run."""
    by_epoch: dict[int, dict[str, Any]] = defaultdict(dict)
    for r in records:
        for e in r.summary.evaluations:
            by_epoch[e.epoch][r.name] = e
    rows = []
    reference = records[0].name
    for epoch in sorted(by_epoch):
        entry = {"epoch": epoch, "runs": {}}
        ref = by_epoch[epoch].get(reference)
        for r in records:
            e = by_epoch[epoch].get(r.name)
            if e is None:
                continue
            entry["runs"][r.name] = {
                "mAP": e.mAP, "rank1": e.rank1,
                "delta_mAP": None if ref is None else e.mAP - ref.mAP,
                "delta_rank1": None if ref is None else e.rank1 - ref.rank1,
            }
        rows.append(entry)
    return rows


def _clusters(records: list[RunRecord]) -> list[dict]:
    by_epoch: dict[int, dict[str, dict]] = defaultdict(dict)
    for r in records:
        for c in r.summary.clusters:
            by_epoch[c.epoch][r.name] = {"clusters": c.clusters, "outliers": c.outliers_after,
                                         "oae_assigned": c.oae_assigned, "cross_camera": c.cross_camera,
                                         "cross_camera_images": c.cross_camera_images}
    return [{"epoch": epoch, "runs": by_epoch[epoch]} for epoch in sorted(by_epoch)]


def config_diff(configs: list[dict[str, Any]], names: list[str]) -> dict[str, dict[str, Any]]:
    """Only the keys whose values differ: {key: {run: value}}."""
    keys = sorted(set().union(*configs))
    diff = {}
    for key in keys:
        values = [c.get(key) for c in configs]
        if any(v != values[0] for v in values[1:]):
            diff[key] = dict(zip(names, values))
    return diff


def _differs(label: str, values: dict[str, Any]) -> str | None:
    if len({repr(v) for v in values.values()}) > 1:
        return f"{label} differs: " + ", ".join(f"{n}={v}" for n, v in values.items())
    return None


def comparability_warnings(records: list[RunRecord]) -> list[str]:
    warnings = []
    for key, label in COMPARABILITY.items():
        warnings.append(_differs(label, {r.name: r.config.get(key) for r in records}))
    for attribute, label in (("world_size", "world size"), ("global_batch", "global batch")):
        warnings.append(_differs(label, {r.name: getattr(r.summary.start, attribute) for r in records
                                         if r.summary.start is not None}))
    for key, label in PROVENANCE.items():
        values = {r.name: r.summary.start.provenance.get(key) for r in records
                  if r.summary.start is not None and r.summary.start.provenance.get(key) is not None}
        if len(values) > 1:
            warnings.append(_differs(label, values))
    unfinished = [f"{r.name} ({r.summary.status}, epoch {r.summary.epoch}/{r.summary.epochs})" for r in records
                  if not r.summary.finished]
    if unfinished:
        warnings.append("not finished: " + ", ".join(unfinished))
    return [w for w in warnings if w]


def seed_groups(records: list[RunRecord]) -> list[dict]:
    """Runs that differ only in their seed, with mean ± std (sample std) of best and final metrics."""
    groups: dict[tuple, list[RunRecord]] = defaultdict(list)
    for r in records:
        key = tuple(sorted((k, repr(v)) for k, v in r.config.items() if k not in NOT_CONFIG))
        groups[key].append(r)
    out = []
    for members in groups.values():
        if len(members) < 2:
            continue
        entry = {"runs": [m.name for m in members], "seeds": [m.config.get("run.seed") for m in members]}
        for which in ("best", "final"):
            for metric in METRICS:
                values = [getattr(e, metric) for m in members if (e := getattr(m.summary, which)) is not None]
                entry[f"{which}_{metric}"] = mean_std(values)
        out.append(entry)
    return out


def mean_std(values: list[float]) -> dict[str, float] | None:
    if not values:
        return None
    mean = sum(values) / len(values)
    std = math.sqrt(sum((v - mean) ** 2 for v in values) / (len(values) - 1)) if len(values) > 1 else 0.0
    return {"mean": mean, "std": std, "n": len(values)}
