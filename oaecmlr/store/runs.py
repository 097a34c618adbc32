"""Run folders: `RUNS/NAME/` holds config.toml, events.jsonl, status.json, log.txt, last.pt, best.pt.

The folder is the only state. A run's summary is derived from its events, and its status from
status.json plus a liveness check of the recorded pid, so runs started anywhere look the same.
"""

from __future__ import annotations

import json
import os
import re
import socket
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from oaecmlr.store.events import read_events

NAME_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._=,+-]{0,127}$")
STALE_AFTER_S = 600  # a running run on another host with no heartbeat for this long is stale


class RunError(ValueError):
    """A bad run name, a missing run, or a run that already exists."""


def runs_root(runs_dir: str | Path | None = None) -> Path:
    return Path(runs_dir or os.environ.get("OAECMLR_RUNS") or "runs")


def check_name(name: str) -> str:
    if not NAME_PATTERN.match(name) or ".." in name:
        raise RunError(f"invalid run name {name!r}: use letters, digits and ._=,+- (no '/' or '..'), at most 128 characters")
    return name


@dataclass(frozen=True)
class RunDir:
    path: Path

    @property
    def name(self) -> str:
        return self.path.name

    @property
    def config(self) -> Path:
        return self.path / "config.toml"

    @property
    def events(self) -> Path:
        return self.path / "events.jsonl"

    @property
    def status_file(self) -> Path:
        return self.path / "status.json"

    @property
    def log(self) -> Path:
        return self.path / "log.txt"

    @property
    def last(self) -> Path:
        return self.path / "last.pt"

    @property
    def best(self) -> Path:
        return self.path / "best.pt"

    @property
    def stop_request(self) -> Path:
        return self.path / "STOP"

    def exists(self) -> bool:
        return self.events.exists() or self.config.exists()

    def read_status(self) -> dict[str, Any]:
        try:
            return json.loads(self.status_file.read_text())
        except (OSError, ValueError):
            return {}

    def write_status(self, state: str, **fields: Any) -> None:
        status = {**self.read_status(), **fields, "state": state, "updated": time.time()}
        tmp = self.status_file.with_suffix(".tmp")
        tmp.write_text(json.dumps(status))
        os.replace(tmp, self.status_file)


def run_dir(name: str, runs_dir: str | Path | None = None) -> RunDir:
    """The folder of run `name` under the runs root; a path to a run folder works too."""
    candidate = Path(name)
    if candidate.is_dir() and (candidate / "events.jsonl").exists():
        return RunDir(candidate)
    root = runs_root(runs_dir)
    check_name(name)
    path = (root / name).resolve()
    if root.resolve() not in path.parents:
        raise RunError(f"run name {name!r} escapes the runs folder {root}")
    return RunDir(path)


def find_run(name: str, runs_dir: str | Path | None = None) -> RunDir:
    run = run_dir(name, runs_dir)
    if not run.exists():
        known = ", ".join(r.name for r in list_runs(runs_dir)[:10]) or "none"
        raise RunError(f"no run {name!r} in {runs_root(runs_dir)} (runs there: {known}); pass --runs-dir")
    return run


def create_run(name: str, runs_dir: str | Path | None = None) -> RunDir:
    run = run_dir(name, runs_dir)
    if run.exists():
        raise RunError(f"run {name!r} already exists in {run.path.parent}; choose another --name or `oaecmlr resume {name}`")
    run.path.mkdir(parents=True, exist_ok=True)
    return run


def list_runs(runs_dir: str | Path | None = None) -> list[RunDir]:
    root = runs_root(runs_dir)
    if not root.is_dir():
        return []
    return sorted((RunDir(p) for p in root.iterdir() if p.is_dir() and (p / "events.jsonl").exists()),
                  key=lambda r: r.name)


def pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def live_state(status: dict[str, Any], last_event: str | None) -> str:
    """running / finished / failed / stopped, or stale when a running run's process is gone."""
    state = status.get("state") or {"end": "finished", "failure": "failed", "stopped": "stopped"}.get(last_event or "", "running")
    if state not in ("running", "starting"):
        return state
    pid, host = status.get("pid"), status.get("host")
    if host == socket.gethostname() and isinstance(pid, int):
        return "running" if pid_alive(pid) else "stale"
    updated = status.get("updated", 0)
    return "stale" if time.time() - updated > STALE_AFTER_S else "running"


def summarize(events: list[dict[str, Any]]) -> dict[str, Any]:
    """What the CLI, the dashboard and compare show of a run, derived from its events only."""
    start = next((e for e in events if e["event"] == "start"), {})
    evaluations = [{k: e.get(k) for k in ("epoch", "mAP", "rank1", "rank5", "rank10", "mINP", "time", "rerank")}
                   for e in events if e["event"] == "eval"]
    clusters = [{k: v for k, v in e.items() if k not in ("event",)} for e in events if e["event"] == "cluster"]
    # Epoch 0 is the untrained starting point: never a run's best (as best.pt and the end event).
    best = max((e for e in evaluations if e["epoch"] > 0), key=lambda e: e["mAP"] or 0, default=None)
    epochs_done = [e["epoch"] for e in events if e["event"] == "epoch_end"]
    iterations = [e for e in events if e["event"] == "iter"]
    last = events[-1] if events else {}
    started = start.get("time")
    return {
        "dataset": start.get("dataset"),
        "world_size": start.get("world_size"),
        "started": started,
        "last_time": last.get("time"),
        "elapsed": (last.get("time") - started) if started and last.get("time") else None,
        "epoch": max(epochs_done, default=0),
        "epochs": start.get("epochs"),
        "last_event": last.get("event"),
        "evaluations": evaluations,
        "clusters": clusters,
        "best": best,
        "final": evaluations[-1] if evaluations else None,
        "last_iteration": iterations[-1] if iterations else None,
        "failure": next((e for e in reversed(events) if e["event"] == "failure"), None),
    }


def run_summary(run: RunDir, events: list[dict[str, Any]] | None = None) -> dict[str, Any]:
    events = read_events(run.events) if events is None else events
    summary = summarize(events)
    status = run.read_status()
    summary.update(name=run.name, path=str(run.path), status=live_state(status, summary["last_event"]),
                   pid=status.get("pid"), host=status.get("host"))
    return summary


def request_stop(run: RunDir) -> str:
    """Ask a run to stop gracefully: it checkpoints, writes a `stopped` event and exits.

    A STOP file works across machines (synced folders); on this host the process also gets SIGTERM.
    Returns what was done, for the user.
    """
    import signal

    status = run.read_status()
    state = live_state(status, None)
    if state not in ("running", "starting"):
        raise RunError(f"run {run.name} is not running (it is {state})")
    run.stop_request.write_text(str(time.time()))
    pid, host = status.get("pid"), status.get("host")
    if host == socket.gethostname() and isinstance(pid, int) and pid_alive(pid):
        os.kill(pid, signal.SIGTERM)
        return f"sent SIGTERM to pid {pid} and wrote {run.stop_request}"
    return f"wrote {run.stop_request}; the run stops at its next log interval"
