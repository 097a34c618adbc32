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

from oaecmlr.errors import ConfigError, RunError
from oaecmlr.formatting import printable
from oaecmlr.store import ondisk
from oaecmlr.store.events import EventTail, EventWriter
from oaecmlr.store.ondisk import Warn, silent
from oaecmlr.store.processes import not_the_run_process, recycled, valid_pid
from oaecmlr.store.schema import Event, Failure
from oaecmlr.store.summary import RunFold, RunSummary
from oaecmlr.tempfiles import pid_alive, remove_files, replace_text

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
    def console_lost(self) -> Path:
        """Written by the supervisor of `--gpus cpu,cpu` workers when it lost the console; rank 0
        reads it at its next safe point and records the `warning` event."""
        return self.path / "CONSOLE_LOST"

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

    def note_console_lost(self, why: str) -> None:
        """CONSOLE_LOST, whole (temp file + rename): the supervisor lost the console, for `why`."""
        replace_text(self.console_lost, why)

    def console_lost_reason(self) -> str | None:
        """Why the supervisor lost the console, once it has (CONSOLE_LOST), else None."""
        try:
            return self.console_lost.read_text() or "unknown"
        except FileNotFoundError:
            return None

    def read_status(self, warn: Warn | None = None) -> dict[str, Any]:
        """status.json, every known field checked (`oaecmlr.store.ondisk`); {} when absent or unusable."""
        return ondisk.read_status(self.status_file, warn)

    def write_status(self, state: str, **fields: Any) -> None:
        """Replace status.json whole (temp file + rename). When that fails (a full disk), no temp file
        is left, and the old file is overwritten in place if the new text fits in it, so a failed
        run still says failed; the OSError is raised after that."""
        status = {**self.read_status(), **fields, "state": state, "updated": time.time()}
        text = json.dumps(status)
        try:
            replace_text(self.status_file, text)
        except OSError:
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
    """The folder of run `name` under the runs root; a path to a run folder works too.

    A name is one plain folder name (`check_name`: no '/', no '..'), so it always names an entry of
    the runs folder; that entry may be a symlink to a run folder elsewhere, which `list_runs` lists
    too (whoever can write the runs folder chose it)."""
    candidate = Path(name)
    try:
        if candidate.is_dir() and (candidate / "events.jsonl").exists():
            return RunDir(candidate)
    except OSError:  # e.g. a name too long for the file system: check_name below says what is wrong
        pass
    root = runs_root(runs_dir)
    check_name(name)
    return RunDir(Path(os.path.abspath(root / name)))


def find_run(name: str, runs_dir: str | Path | None = None) -> RunDir:
    run = run_dir(name, runs_dir)
    try:
        exists = run.exists()
    except OSError as exc:
        raise RunError(f"cannot read run {name!r} in {runs_root(runs_dir)} ({exc.strerror or exc}); "
                       "check the folder's permissions or pass --runs-dir") from None
    if not exists:
        known = ", ".join(r.name for r in list_runs(runs_dir)[:10]) or "none"
        raise RunError(f"no run {name!r} in {runs_root(runs_dir)} (runs there: {known}); pass --runs-dir")
    return run


def create_run(name: str, runs_dir: str | Path | None = None) -> RunDir:
    run = run_dir(name, runs_dir)
    try:
        if run.exists():
            raise RunError(f"run {name!r} already exists in {run.path.parent}; choose another --name or "
                           f"`oaecmlr resume {name}`")
        run.path.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise RunError(f"cannot create the run folder {run.path} ({exc.strerror or exc}); pass --runs-dir (or set "
                       "OAECMLR_RUNS to) a folder you can write") from None
    return run


def list_runs(runs_dir: str | Path | None = None, warn: Warn | None = None) -> list[RunDir]:
    """The run folders of the runs root (those holding events.jsonl), by name; [] when the root does
    not exist yet, RunError when it cannot be read. A folder whose name no run can have is skipped
    (with a warning), since no command could name it."""
    root = runs_root(runs_dir)
    try:
        entries = list(os.scandir(root))
    except FileNotFoundError:
        return []
    except NotADirectoryError:
        raise RunError(f"the runs folder {root} is a file, not a folder; pass --runs-dir (or set OAECMLR_RUNS to) "
                       "a folder") from None
    except OSError as exc:
        raise RunError(f"cannot read the runs folder {root} ({exc.strerror or exc}); check its permissions, or "
                       "pass --runs-dir (or set OAECMLR_RUNS to) another folder") from None
    runs = []
    for entry in entries:
        try:
            if not (entry.is_dir() and os.path.exists(os.path.join(entry.path, "events.jsonl"))):
                continue
        except OSError:
            continue
        if not NAME_PATTERN.match(entry.name) or ".." in entry.name:
            (warn or silent)(f"{printable(entry.path)}: not a valid run name; skipped")
            continue
        runs.append(RunDir(Path(entry.path)))
    return sorted(runs, key=lambda r: r.name)


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


def planned_epochs(run: RunDir, epochs: int | None) -> int | None:
    """The target epochs of the events (`epochs`), else, for a run still starting (no `start` event
    yet), those of its config.toml; None when neither says."""
    if epochs is not None or not run.config.exists():
        return epochs
    from oaecmlr.config import read_toml

    try:
        configured = read_toml(run.config).get("run", {}).get("epochs")
    except (ConfigError, AttributeError):  # unreadable or hand-edited: the summary's warnings say so
        return None
    return configured if isinstance(configured, int) and not isinstance(configured, bool) else None


def check_resumable(run: RunDir, epochs: int | None = None) -> None:
    """Refuse in one line to resume a run that is running, or a finished one to no more epochs
    (`--epochs`: the new target). Reads only the run folder, so the dashboard answers at once."""
    status = run.read_status()
    if live_state(status, None) == "running":
        raise RunError(f"run {run.name} is still running (pid {status.get('pid')} on {status.get('host')}); "
                       f"stop it first with `oaecmlr stop {run.name}`")
    summary = summarize_run(run, warn=lambda message: None, history=False)
    if epochs is not None and epochs < 1:
        raise ConfigError(f"--epochs must be >= 1, got {epochs}")
    if summary.finished and (epochs is None or epochs <= summary.epoch):
        more = "" if epochs is None else f"; --epochs {epochs} is not more than that"
        raise RunError(f"run {run.name} finished its {summary.epoch} epochs{more}; to train it further, resume with "
                       f"--epochs N above {summary.epoch} (or start a new run with --init {run.name})")
    if epochs is not None and not summary.finished and epochs < summary.epoch:
        raise ConfigError(f"run {run.name} has already finished {summary.epoch} epochs; --epochs {epochs} would end it "
                          "in the past")


def summarize_run(run: RunDir, events: list[Event] | None = None, warn=None, history: bool = True) -> RunSummary:
    """The summary of a run folder: its events folded, its status from status.json and liveness.

    history=False (`oaecmlr runs`) reads the events as a stream and keeps only what a listing
    shows (the best and last evaluations, the last clustering; no losses, no last_iter): memory
    stays that of one chunk of the file, whatever its size, and `iter` lines, most of a long
    run's file, are only skimmed for their time. status.json and the events are checked as
    `oaecmlr.store.ondisk` says; what is skipped is warned about through `warn`."""
    fold = RunFold(history=history)
    if events is None:
        for event in EventTail(run.events, warn, skim=() if history else ("iter",)).each_new():
            fold.add((event,))
    else:
        fold.add(events)
    return fold.summary(run.name, str(run.path), live_state(run.read_status(warn), fold.last_event))


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


@dataclass(frozen=True)
class RunMeta:
    """The user's note and tags of a run (`oaecmlr note RUN "text" --tag T`, in RUN/meta.json)."""

    note: str = ""
    tags: tuple[str, ...] = ()

    @classmethod
    def from_dict(cls, meta: dict[str, Any]) -> RunMeta:
        """From what `read_meta` returns ({} gives the empty meta)."""
        return cls(meta.get("note", "").strip(), tuple(meta.get("tags", ())))

    def text(self) -> str:
        """`#tag1 #tag2 note`, as the runs table and the dashboard show it."""
        return " ".join([f"#{tag}" for tag in self.tags] + ([self.note] if self.note else []))

    def matches(self, needle: str) -> bool:
        """Whether a lower-case filter text is part of the note or of a tag; `#word`: of a tag only."""
        if needle.startswith("#"):
            return any(needle[1:] in tag.lower() for tag in self.tags)
        return needle in self.note.lower() or any(needle in tag.lower() for tag in self.tags)


NO_META = RunMeta()


def read_meta(run: RunDir, warn: Warn | None = None) -> dict[str, Any]:
    """The user's note and tags of a run (`oaecmlr note`): {"note": str, "tags": [str]}, checked
    (`oaecmlr.store.ondisk.read_meta`); {} when there is no usable meta.json."""
    return ondisk.read_meta(run.meta, warn)


def write_meta(run: RunDir, meta: dict[str, Any]) -> None:
    """Replace meta.json whole; a note or tags that a reader would refuse are refused here first.
    When the write fails (a full disk) no temp file is left and meta.json is as it was."""
    note, tags = meta.get("note", ""), meta.get("tags", [])
    for key, value in (("note", note), ("tags", tags)):
        check, wanted = ondisk.META_RULES[key]
        if not check(value):
            raise RunError(f"the {key} must be {wanted}, got {ondisk.shown(value)}")
    try:
        replace_text(run.meta, json.dumps(meta, indent=1), encoding="utf-8")
    except OSError as exc:
        raise RunError(f"cannot write {run.meta} ({exc.strerror or exc}); the note and tags are as they were") from None
