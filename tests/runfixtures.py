"""Run folders written directly (no training) for CLI and dashboard tests: finished, running, failed."""

from __future__ import annotations

import json
import os
import socket
import time
from pathlib import Path

from oaecmlr.engine.config import Config, set_value, to_toml
from oaecmlr.store.events import SCHEMA_VERSION


def run_events(name: str, epochs: int = 4, iterations: int = 10, eval_every: int = 2, base_map: float = 0.1,
               gain: float = 0.05, dataset: str = "synthetic", world_size: int = 1, start_time: float | None = None,
               state: str = "finished", upto_epoch: int | None = None) -> list[dict]:
    """A plausible event stream; `state` running stops mid-epoch, failed ends with a failure."""
    t = start_time or time.time() - 3600
    events = [{"event": "start", "time": t, "schema": SCHEMA_VERSION, "pid": os.getpid(), "host": socket.gethostname(),
               "kind": "usl", "run": name, "dataset": dataset, "epochs": epochs, "iterations": iterations,
               "arch": "resnet18", "world_size": world_size, "per_rank_batch": 64 // world_size, "global_batch": 64,
               "lr": 3.5e-4, "device": "cpu", "seed": 0,
               "data": {"train": {"images": 500, "ids": 50, "cams": 4}, "query": {"images": 80, "ids": 20, "cams": 4},
                        "gallery": {"images": 160, "ids": 20, "cams": 4}}}]

    def ev(kind, **fields):
        nonlocal t
        t += 1.0
        events.append({"event": kind, "time": t, **fields})

    def evaluation(epoch):
        m = base_map + gain * epoch
        ev("eval", epoch=epoch, mAP=m, rank1=min(1.0, m + 0.1), rank5=min(1.0, m + 0.2), rank10=min(1.0, m + 0.25),
           mINP=m / 2, num_query=80, num_gallery=160, skipped_queries=0, rerank=False, seconds=0.5)

    evaluation(0)
    last = epochs if upto_epoch is None else upto_epoch
    for epoch in range(1, last + 1):
        ev("epoch_start", epoch=epoch, lr=3.5e-4)
        ev("cluster", epoch=epoch, clusters=40 + epoch, outliers_before=100 - 5 * epoch, outliers_after=80 - 5 * epoch,
           oae_assigned=20, oae_passed_neighbourhood=30, cmlr_entropy=0.3, cmlr_weight=0.2,
           size_histogram={"4-7": 30, "8-15": 10 + epoch}, knn_backend="torch",
           timings={"extract": 0.5, "knn": 0.1, "encode": 0.1, "jaccard": 0.1, "dbscan": 0.01, "oae": 0.05, "cmlr": 0.02},
           purity=0.8, nmi=0.85, oae_precision=0.7, cross_camera=0.05)
        partial = state == "running" and epoch == last
        for it in range(1, (iterations // 2 if partial else iterations) + 1):
            ev("iter", epoch=epoch, iteration=it, total_iterations=iterations, loss=5.0 - 0.1 * epoch - 0.01 * it,
               lr=3.5e-4, images_per_s=100.0)
        if partial:
            break
        if epoch % eval_every == 0 or epoch == epochs:
            evaluation(epoch)
        ev("epoch_end", epoch=epoch, seconds=12.0)
    if state == "finished":
        best = max((e for e in events if e["event"] == "eval" and e["epoch"] > 0), key=lambda e: e["mAP"], default=None)
        ev("end", status="finished", best=None if best is None else {k: best[k] for k in ("epoch", "mAP", "rank1", "rank5", "rank10", "mINP")})
    elif state == "failed":
        ev("failure", epoch=last, error="loss became nan at epoch 2 iteration 5; kept the last good checkpoint", rank=0)
    elif state == "stopped":
        ev("stopped", epoch=last, iteration=5, reason="SIGTERM")
    return events


def make_run(root: str | Path, name: str, state: str = "finished", sets: dict | None = None, pid: int | None = None,
             **event_options) -> Path:
    """Write RUNS/name with config.toml, events.jsonl and status.json; returns the folder."""
    path = Path(root) / name
    path.mkdir(parents=True, exist_ok=True)
    config = Config()
    config.data.dataset = event_options.get("dataset", "synthetic")
    for key, value in (sets or {}).items():
        set_value(config, key, value)
    (path / "config.toml").write_text(to_toml(config))
    events = run_events(name, state=state, eval_every=config.run.eval_every if sets and "run.eval_every" in sets else 2,
                        **event_options)
    (path / "events.jsonl").write_text("".join(json.dumps(e) + "\n" for e in events))
    status_state = {"finished": "finished", "failed": "failed", "stopped": "stopped", "running": "running"}[state]
    status = {"state": status_state, "pid": pid if pid is not None else os.getpid(), "host": socket.gethostname(),
              "started": events[0]["time"], "updated": events[-1]["time"]}
    (path / "status.json").write_text(json.dumps(status))
    (path / "log.txt").write_text("".join(f"line {i} of the log\n" for i in range(30)))
    return path


def dead_pid() -> int:
    """The pid of a process that has already exited."""
    import subprocess

    process = subprocess.Popen(["true"])
    process.wait()
    return process.pid


def append_events(path: str | Path, events: list[dict]) -> None:
    with open(Path(path) / "events.jsonl", "a") as f:
        for e in events:
            f.write(json.dumps(e) + "\n")
