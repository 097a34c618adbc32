"""Comparing runs honestly: metrics side by side, per-evaluation deltas against the first run,
clusters per epoch, a config diff, warnings when runs are not comparable, and mean ± std over
seeds of the same config. Pure functions of run folders, shared by the CLI and the dashboard.
"""

from __future__ import annotations

import math
from collections import defaultdict
from typing import Any

from oaecmlr.store.events import read_events
from oaecmlr.store.runs import RunDir, run_summary

METRICS = ("mAP", "rank1", "rank5", "rank10", "mINP")
# Settings that make numbers incomparable when they differ (besides the dataset itself).
COMPARABILITY = {
    "data.dataset": "dataset",
    "data.height": "input height",
    "data.width": "input width",
    "data.num_ids": "identities per batch",
    "data.num_instances": "instances per identity",
}
NOT_CONFIG = ("run.seed", "run.gpus", "run.threads", "data.root", "data.cache_dir", "model.pretrained", "model.init")


def flatten(mapping: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    out = {}
    for key, value in mapping.items():
        if isinstance(value, dict):
            out.update(flatten(value, f"{prefix}{key}."))
        else:
            out[f"{prefix}{key}"] = value
    return out


def read_config(run: RunDir) -> dict[str, Any]:
    from oaecmlr.engine.config import read_toml

    return flatten({k: v for k, v in read_toml(run.config).items() if k not in ("preset", "pretrain")}) if run.config.exists() else {}


def run_record(run: RunDir, events: list[dict] | None = None, config: dict | None = None) -> dict[str, Any]:
    """One run's numbers for a comparison."""
    events = read_events(run.events) if events is None else events
    summary = run_summary(run, events)
    config = read_config(run) if config is None else config
    start = next((e for e in events if e["event"] == "start"), {})
    best, final = summary["best"] or {}, summary["final"] or {}
    best_event = next((e for e in events if e["event"] == "eval" and e["epoch"] == best.get("epoch")), None)
    return {
        "name": run.name,
        "status": summary["status"],
        "dataset": summary["dataset"],
        "epoch": summary["epoch"],
        "best": {k: best.get(k) for k in ("epoch", *METRICS)} if best else None,
        "final": {k: final.get(k) for k in ("epoch", *METRICS)} if final else None,
        "time_to_best_s": (best_event["time"] - start["time"]) if best_event and start else None,
        "elapsed_s": summary["elapsed"],
        "world_size": start.get("world_size"),
        "global_batch": start.get("global_batch"),
        "evaluations": summary["evaluations"],
        "clusters": [{k: c.get(k) for k in ("epoch", "clusters", "outliers_before", "outliers_after", "oae_assigned",
                                               "purity", "nmi", "oae_precision")} for c in summary["clusters"]],
        "config": config,
    }


def compare(records: list[dict[str, Any]]) -> dict[str, Any]:
    """The comparison of run records (first run = reference for the deltas)."""
    if len(records) < 2:
        raise ValueError("compare needs at least two runs")
    return {
        "runs": [{k: r[k] for k in ("name", "status", "dataset", "epoch", "best", "final", "time_to_best_s",
                                    "elapsed_s", "world_size", "global_batch")} for r in records],
        "deltas": _deltas(records),
        "clusters": _clusters(records),
        "config_diff": config_diff([r["config"] for r in records], [r["name"] for r in records]),
        "warnings": comparability_warnings(records),
        "seed_groups": seed_groups(records),
    }


def _deltas(records: list[dict]) -> list[dict]:
    """Per evaluated epoch: each run's mAP and R1, and the difference to the first run."""
    by_epoch: dict[int, dict[str, dict]] = defaultdict(dict)
    for r in records:
        for e in r["evaluations"]:
            by_epoch[e["epoch"]][r["name"]] = e
    rows = []
    reference = records[0]["name"]
    for epoch in sorted(by_epoch):
        entry = {"epoch": epoch, "runs": {}}
        ref = by_epoch[epoch].get(reference)
        for r in records:
            e = by_epoch[epoch].get(r["name"])
            if e is None:
                continue
            entry["runs"][r["name"]] = {
                "mAP": e["mAP"], "rank1": e["rank1"],
                "delta_mAP": None if ref is None else e["mAP"] - ref["mAP"],
                "delta_rank1": None if ref is None else e["rank1"] - ref["rank1"],
            }
        rows.append(entry)
    return rows


def _clusters(records: list[dict]) -> list[dict]:
    by_epoch: dict[int, dict[str, dict]] = defaultdict(dict)
    for r in records:
        for c in r["clusters"]:
            by_epoch[c["epoch"]][r["name"]] = {"clusters": c["clusters"], "outliers": c["outliers_after"],
                                               "oae_assigned": c["oae_assigned"]}
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


def comparability_warnings(records: list[dict]) -> list[str]:
    warnings = []
    for key, label in COMPARABILITY.items():
        values = {r["name"]: r["config"].get(key) for r in records}
        if len(set(map(repr, values.values()))) > 1:
            warnings.append(f"{label} differs: " + ", ".join(f"{n}={v}" for n, v in values.items()))
    for field, label in (("world_size", "world size"), ("global_batch", "global batch")):
        values = {r["name"]: r[field] for r in records if r[field] is not None}
        if len(set(values.values())) > 1:
            warnings.append(f"{label} differs: " + ", ".join(f"{n}={v}" for n, v in values.items()))
    statuses = [r["name"] for r in records if r["status"] != "finished"]
    if statuses:
        warnings.append("not finished: " + ", ".join(statuses))
    return warnings


def seed_groups(records: list[dict]) -> list[dict]:
    """Runs that differ only in their seed, with mean ± std (sample std) of best and final metrics."""
    groups: dict[tuple, list[dict]] = defaultdict(list)
    for r in records:
        key = tuple(sorted((k, repr(v)) for k, v in r["config"].items() if k not in NOT_CONFIG))
        groups[key].append(r)
    out = []
    for members in groups.values():
        if len(members) < 2:
            continue
        entry = {"runs": [m["name"] for m in members], "seeds": [m["config"].get("run.seed") for m in members]}
        for which in ("best", "final"):
            for metric in METRICS:
                values = [m[which][metric] for m in members if m[which] and m[which].get(metric) is not None]
                entry[f"{which}_{metric}"] = mean_std(values)
        out.append(entry)
    return out


def mean_std(values: list[float]) -> dict[str, float] | None:
    if not values:
        return None
    mean = sum(values) / len(values)
    std = math.sqrt(sum((v - mean) ** 2 for v in values) / (len(values) - 1)) if len(values) > 1 else 0.0
    return {"mean": mean, "std": std, "n": len(values)}
