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
from typing import TYPE_CHECKING, Any

from oaecmlr.errors import RunError
from oaecmlr.store.events import EventWriter, read_events
from oaecmlr.store.processes import not_the_run_process, recycled, valid_pid
from oaecmlr.store.schema import Event, Failure
from oaecmlr.store.summary import RunFold, RunSummary
from oaecmlr.tempfiles import pid_alive, remove_files, temp_name

if TYPE_CHECKING:
    from oaecmlr.config import Config

NAME_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._=,+-]{0,127}$")
STALE_AFTER_S = 600  # a running run on another host with no heartbeat for this long is stale




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

    @property
    def meta(self) -> Path:
        return self.path / "meta.json"

    @property
    def discarded_events(self) -> Path:
        return self.path / "events.discarded.jsonl"

    def checkpoint(self, which: str) -> Path:
        """best.pt or last.pt."""
        return {"best": self.best, "last": self.last}[which]

    def exists(self) -> bool:
        return self.events.exists() or self.config.exists()

    def read_status(self) -> dict[str, Any]:
        try:
            return json.loads(self.status_file.read_text())
        except (OSError, ValueError):
            return {}

    def write_status(self, state: str, **fields: Any) -> None:
        """Replace status.json whole (temp file + rename). When that fails (a full disk), no temp file
        is left, and the old file is overwritten in place if the new text fits in it, so a failed
        run still says failed; the OSError is raised after that."""
        status = {**self.read_status(), **fields, "state": state, "updated": time.time()}
        text = json.dumps(status)
        tmp = temp_name(self.status_file)
        try:
            tmp.write_text(text)
            os.replace(tmp, self.status_file)
        except OSError:
            tmp.unlink(missing_ok=True)
            compact = {k: status[k] for k in ("state", "updated", "pid", "host", "error") if k in status}
            _overwrite_in_place(self.status_file, text, json.dumps(compact), json.dumps({"state": state}))
            raise


def _overwrite_in_place(path: Path, *texts: str) -> None:
    """Best effort without new disk blocks: rewrite an existing file with the first of `texts` that
    is no longer than it."""
    try:
        size = path.stat().st_size
        text = next((t for t in texts if len(t.encode()) <= size), None)
        if text is not None:
            with open(path, "r+", encoding="utf-8") as f:
                f.write(text)
                f.truncate()
    except OSError:
        pass


def run_dir(name: str, runs_dir: str | Path | None = None) -> RunDir:
    """The folder of run `name` under the runs root; a path to a run folder works too."""
    candidate = Path(name)
    try:
        if candidate.is_dir() and (candidate / "events.jsonl").exists():
            return RunDir(candidate)
    except OSError:  # e.g. a name too long for the file system: check_name below says what is wrong
        pass
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


def live_state(status: dict[str, Any], last_event: str | None) -> str:
    """running / finished / failed / stopped, or stale when a running run's process is gone."""
    state = status.get("state") or {"end": "finished", "failure": "failed", "stopped": "stopped"}.get(last_event or "", "running")
    if state not in ("running", "starting"):
        return state
    pid, host = status.get("pid"), status.get("host")
    if host == socket.gethostname():  # alive, and not another process that took the pid
        pid = valid_pid(pid)
        return "running" if pid is not None and pid_alive(pid) and not recycled(status, pid) else "stale"
    updated = status.get("updated", 0)
    return "stale" if time.time() - updated > STALE_AFTER_S else "running"


def summarize_run(run: RunDir, events: list[Event] | None = None, warn=None) -> RunSummary:
    """The summary of a run folder: its events folded, its status from status.json and liveness."""
    fold = RunFold().add(read_events(run.events, warn) if events is None else events)
    return fold.summary(run.name, str(run.path), live_state(run.read_status(), fold.last_event))


def clean_stale_temp_files(run: RunDir) -> list[str]:
    """Remove what writers killed mid-write left in a run folder (half-written checkpoints, status,
    events or metadata, all `*.tmp`); called only when no process of the run can be alive (start,
    resume). Returns the names removed."""
    paths = sorted(run.path.iterdir()) if run.path.is_dir() else []
    return remove_files(p for p in paths if p.name.endswith(".tmp") and p.is_file())


def checkpoint_file(path: str | Path) -> Path:
    """A checkpoint named by a file, or by a run folder (its best.pt, else last.pt): for --init and eval."""
    path = Path(path)
    if path.is_dir():
        for name in ("best.pt", "last.pt"):
            if (path / name).is_file():
                return path / name
    return path


def request_stop(run: RunDir) -> str:
    """Ask a run to stop gracefully: it checkpoints, writes a `stopped` event and exits.

    The STOP file, which the run polls every iteration, works everywhere (synced folders too). A
    SIGTERM also stops clustering and evaluation sooner, but it goes only to a pid that is provably
    the run's own (`not_the_run_process`). Returns what was done, for the user.
    """
    import signal

    status = run.read_status()
    claims_to_run = status.get("state") in ("running", "starting") and status.get("host") == socket.gethostname()
    if claims_to_run and valid_pid(status.get("pid")) is None:
        raise RunError(f"refusing to stop run {run.name}: its status.json names pid {status.get('pid')!r}, which is "
                       "not a process id; nothing was signalled")
    state = live_state(status, None)
    if state not in ("running", "starting"):
        raise RunError(f"run {run.name} is not running (it is {state})")
    run.stop_request.write_text(str(time.time()))
    why_not = not_the_run_process(status, run.events)
    if why_not is None:
        os.kill(status["pid"], signal.SIGTERM)
        return f"sent SIGTERM to pid {status['pid']} and wrote {run.stop_request}"
    return f"wrote {run.stop_request}; the run stops at its next iteration (no signal sent: {why_not})"


def record_death(run: RunDir, error: str, rank: int | None = None) -> None:
    """What a watcher saw end a run that could not say so itself (a worker or a sweep's run killed
    by a signal): a `failure` event and a failed status."""
    writer = EventWriter(run.events)
    try:
        writer.write(Failure(error=error, rank=rank))
    finally:
        writer.close()
    run.write_status("failed", error=error)


def resume_command(run: RunDir) -> str:
    """The command that resumes `run`: `oaecmlr resume NAME`, with --runs-dir unless it is the default."""
    import shlex

    default = runs_root().resolve() == run.path.parent.resolve()
    return f"oaecmlr resume {shlex.quote(run.name)}" + ("" if default else f" --runs-dir {shlex.quote(str(run.path.parent))}")


def load_run_config(run: RunDir) -> Config:
    """The Config a run folder was started with (as its code understood it; see config_from_dict)."""
    from oaecmlr.config import config_from_dict, read_toml  # lazily: watching runs needs no config module

    return config_from_dict(read_toml(run.config))


def read_meta(run: RunDir) -> dict[str, Any]:
    """The user's note and tags of a run (`oaecmlr note`): {"note": str, "tags": [str]}."""
    try:
        meta = json.loads(run.meta.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    if not isinstance(meta, dict):
        return {}
    note, tags = meta.get("note", ""), meta.get("tags", [])
    return {"note": note if isinstance(note, str) else "",
            "tags": [t for t in tags if isinstance(t, str)] if isinstance(tags, list) else []}


def write_meta(run: RunDir, meta: dict[str, Any]) -> None:
    tmp = temp_name(run.meta)
    tmp.write_text(json.dumps(meta, indent=1), encoding="utf-8")
    os.replace(tmp, run.meta)
