"""Run folders written without training, for CLI and dashboard tests: finished, running, failed,
stopped. The events go through the real `EventWriter` and schema, with a clock of the fixture's own."""

from __future__ import annotations

import json
import os
import socket
import time
from pathlib import Path

from oaecmlr.config import Config, set_value, to_toml
from oaecmlr.store.events import SCHEMA_VERSION, EventWriter
from oaecmlr.store.schema import (
    Cluster,
    End,
    EpochEnd,
    EpochStart,
    Eval,
    Event,
    Failure,
    Iter,
    Start,
    Stopped,
)

DATA = {"train": {"images": 500, "ids": 50, "cams": 4}, "query": {"images": 80, "ids": 20, "cams": 4},
        "gallery": {"images": 160, "ids": 20, "cams": 4}}


def run_events(name: str, epochs: int = 4, iterations: int = 10, eval_every: int = 2, base_map: float = 0.1,
               gain: float = 0.05, dataset: str = "synthetic", world_size: int = 1, state: str = "finished",
               upto_epoch: int | None = None, provenance: dict | None = None) -> list[Event]:
    """A plausible event stream (times come from the writer's clock); `state` running stops
    mid-epoch, failed ends with a failure, stopped with a stop inside the last epoch."""
    events: list[Event] = [Start(schema=SCHEMA_VERSION, pid=os.getpid(), host=socket.gethostname(), kind="usl",
                                 run=name, dataset=dataset, epochs=epochs, iterations=iterations, arch="resnet18",
                                 world_size=world_size, per_rank_batch=64 // world_size, global_batch=64, lr=3.5e-4,
                                 device="cpu", seed=0, data=DATA, provenance=provenance or {})]

    def evaluation(epoch):
        m = base_map + gain * epoch
        events.append(Eval(epoch=epoch, mAP=m, rank1=min(1.0, m + 0.1), rank5=min(1.0, m + 0.2),
                           rank10=min(1.0, m + 0.25), mINP=m / 2, num_query=80, num_gallery=160, seconds=0.5))

    evaluation(0)
    last = epochs if upto_epoch is None else upto_epoch
    for epoch in range(1, last + 1):
        events.append(EpochStart(epoch=epoch, lr=3.5e-4))
        events.append(Cluster(epoch=epoch, clusters=40 + epoch, outliers_before=100 - 5 * epoch,
                              outliers_after=80 - 5 * epoch, oae_assigned=20, oae_passed_neighbourhood=30,
                              cmlr_entropy=0.3, cmlr_weight=0.2, size_histogram={"4-7": 30, "8-15": 10 + epoch},
                              knn_backend="torch", timings={"extract": 0.5, "knn": 0.1, "encode": 0.1, "jaccard": 0.1,
                                                            "dbscan": 0.01, "oae": 0.05, "cmlr": 0.02},
                              purity=0.8, nmi=0.85, oae_precision=0.7, cross_camera=0.05, cameras_per_cluster=1.1,
                              cross_camera_images=0.08))
        partial = state in ("running", "stopped") and epoch == last
        for it in range(1, (iterations // 2 if partial else iterations) + 1):
            events.append(Iter(epoch=epoch, iteration=it, total_iterations=iterations,
                               loss=5.0 - 0.1 * epoch - 0.01 * it, lr=3.5e-4, images_per_s=100.0))
        if partial:
            break
        if epoch % eval_every == 0 or epoch == epochs:
            evaluation(epoch)
        events.append(EpochEnd(epoch=epoch, seconds=12.0))
    if state == "finished":
        best = max((e for e in events if isinstance(e, Eval) and e.epoch > 0), key=lambda e: e.mAP, default=None)
        events.append(End(best=None if best is None else {k: getattr(best, k) for k in
                                                          ("epoch", "mAP", "rank1", "rank5", "rank10", "mINP")}))
    elif state == "failed":
        events.append(Failure(epoch=last, error="loss became nan at epoch 2 iteration 5; lower optim.lr", rank=0))
    elif state == "stopped":
        events.append(Stopped(epoch=last, iteration=iterations // 2, reason="SIGTERM"))
    return events


def write_events(path: str | Path, events: list[Event], start_time: float, step: float = 1.0) -> None:
    """Append `events` with the real writer, one `step` second apart from `start_time`."""
    clock = iter(start_time + step * i for i in range(len(events)))
    writer = EventWriter(Path(path), clock=lambda: next(clock))
    for event in events:
        writer.write(event)
    writer.close()


def make_run(root: str | Path, name: str, state: str = "finished", sets: dict | None = None, pid: int | None = None,
             start_time: float | None = None, **event_options) -> Path:
    """Write RUNS/name with config.toml, events.jsonl, status.json and log.txt; returns the folder."""
    path = Path(root) / name
    path.mkdir(parents=True, exist_ok=True)
    config = Config()
    config.data.dataset = event_options.get("dataset", "synthetic")
    for key, value in (sets or {}).items():
        set_value(config, key, value)
    (path / "config.toml").write_text(to_toml(config))
    events = run_events(name, state=state, eval_every=config.run.eval_every if sets and "run.eval_every" in sets else 2,
                        **event_options)
    start = start_time or time.time() - 3600
    write_events(path / "events.jsonl", events, start)
    status_state = {"finished": "finished", "failed": "failed", "stopped": "stopped", "running": "running"}[state]
    status = {"state": status_state, "pid": pid if pid is not None else os.getpid(), "host": socket.gethostname(),
              "started": start, "updated": start + len(events) - 1}
    (path / "status.json").write_text(json.dumps(status))
    (path / "log.txt").write_text("".join(f"line {i} of the log\n" for i in range(30)))
    return path


def dead_pid() -> int:
    """The pid of a process that has already exited."""
    import subprocess

    process = subprocess.Popen(["true"])
    process.wait()
    return process.pid


def append_events(path: str | Path, events: list[Event], start_time: float | None = None) -> None:
    write_events(Path(path) / "events.jsonl", events, start_time or time.time())


# A stand-in for a run's training process: it holds the run's events.jsonl open and records its own
# identity in status.json, as RunRecorder does; SIGTERM ends it (as a stop would) after writing "stopped".
STAND_IN = """
import os, signal, socket, sys, time
from pathlib import Path
from oaecmlr.store.processes import identity
from oaecmlr.store.runs import RunDir
run = RunDir(Path(sys.argv[1]))
held = open(run.events, "a")
def stop(signum, frame):
    run.write_status("stopped")
    sys.exit(0)
signal.signal(signal.SIGTERM, stop)
run.write_status("running", pid=os.getpid(), host=socket.gethostname(), process=identity(os.getpid()))
print("ready", flush=True)
time.sleep(float(sys.argv[2]) if len(sys.argv) > 2 else 120)
"""


def stand_in_process(run_path: str | Path, seconds: float = 120):
    """Start a process that is provably `run_path`'s own (see STAND_IN); returns its Popen once it
    has recorded itself."""
    import subprocess
    import sys

    process = subprocess.Popen([sys.executable, "-c", STAND_IN, str(run_path), str(seconds)], stdout=subprocess.PIPE,
                               text=True)
    assert process.stdout.readline().strip() == "ready"
    return process
