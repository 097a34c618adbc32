"""Watching a runs folder: one `EventTail` per run reads only the bytes added since the last poll.

No Textual here: the dashboard's thread worker calls `RunTracker.poll()` once per tick and posts
what changed; the benchmark uses the same class.
"""

from __future__ import annotations

import dataclasses
import os
import stat
import time
from pathlib import Path

from oaecmlr.formatting import printable
from oaecmlr.store.events import EventTail
from oaecmlr.store.runs import (
    NAME_PATTERN,
    NO_META,
    RunDir,
    RunMeta,
    live_state,
    planned_epochs,
    read_meta,
    runs_root,
)
from oaecmlr.store.summary import RunFold, RunSummary

READ_PER_POLL = 8 * 1024 * 1024  # bytes of one run's events read per poll: a huge file never stalls the others


class RunFeed:
    """One run folder: its event tail, the fold of its events, its status and its note and tags."""

    def __init__(self, run: RunDir, warn):
        self.run = run
        self.warn = warn
        self.tail = EventTail(run.events, warn=warn)
        self.fold = RunFold()
        self.snapshot: RunSummary | None = None
        self.meta: RunMeta = NO_META
        self._status_key: tuple[int, int] | None = None
        self._status: dict = {}
        self._meta_key: tuple[int, int] | None = None

    @staticmethod
    def _key(path: Path) -> tuple[int, int] | None:
        try:
            stat = path.stat()
        except OSError:
            return None
        return stat.st_mtime_ns, stat.st_size

    def status(self) -> dict:
        """status.json, read again only when its mtime or size changed."""
        key = self._key(self.run.status_file)
        if key is None:
            return {}
        if key != self._status_key:
            self._status_key, self._status = key, self.run.read_status(self.warn)
        return self._status

    def _read_meta(self) -> bool:
        """meta.json the same way (by mtime and size); True when the note or tags changed."""
        key = self._key(self.run.meta)
        if key == self._meta_key:
            return False
        self._meta_key = key
        new = RunMeta.from_dict(read_meta(self.run, self.warn) if key is not None else {})
        changed, self.meta = new != self.meta, new
        return changed

    def poll(self) -> bool:
        """Read new events, status and meta; True when the snapshot or the meta changed."""
        meta_changed = self._read_meta()
        resets = self.tail.reset_count
        events = self.tail.read_new(READ_PER_POLL)
        if self.tail.reset_count != resets:  # the file shrank (a resume dropped an unfinished epoch)
            self.fold = RunFold()
        self.fold.add(events)
        status = live_state(self.status(), self.fold.last_event)
        if events or self.snapshot is None or status != self.snapshot.status or self.tail.reset_count != resets:
            snapshot = self.fold.summary(self.run.name, str(self.run.path), status)
            if snapshot.epochs is None:  # still starting: the target of its config.toml, not "0/?"
                snapshot = dataclasses.replace(snapshot, epochs=planned_epochs(self.run, None))
            self.snapshot = snapshot
            return True
        return meta_changed


class RunTracker:
    """All runs of a folder, picked up as their folders appear."""

    def __init__(self, runs_dir: str | Path | None):
        self.root = runs_root(runs_dir)
        self.feeds: dict[str, RunFeed] = {}
        self.warnings: list[tuple[str, str]] = []  # (run name, message) of skipped corrupt lines and fields
        self.problem: str | None = None  # why the runs folder cannot be read (None: it can, or it does not exist yet)

    def _warner(self, name: str):
        return lambda message: self.warnings.append((name, message))

    def _discover(self) -> bool:
        changed = False
        problem = None
        try:
            entries = list(os.scandir(self.root))
        except FileNotFoundError:
            entries = []
        except OSError as exc:
            entries = []
            problem = printable(f"cannot read the runs folder {self.root} ({exc.strerror or exc})")
        changed |= problem != self.problem
        self.problem = problem
        present = {e.name for e in entries}
        for entry in entries:
            if entry.name in self.feeds or not NAME_PATTERN.match(entry.name) or ".." in entry.name:
                continue  # no command could name it
            try:
                is_run = entry.is_dir() and os.path.exists(os.path.join(entry.path, "events.jsonl"))
            except OSError:
                is_run = False
            if is_run:
                self.feeds[entry.name] = RunFeed(RunDir(Path(entry.path)), self._warner(entry.name))
                changed = True
        for name in [n for n in self.feeds if n not in present]:
            del self.feeds[name]
            changed = True
        return changed

    def poll(self, report=None, every_s: float = 0.5, cancelled=None) -> bool:
        """Read what is new in every run (at most READ_PER_POLL bytes of each); True when anything
        changed. A long read (the first one over big runs) calls `report()` every `every_s` seconds
        so the table fills progressively, and stops early once `cancelled()` (the app is quitting)."""
        changed = self._discover()
        reported = time.monotonic()
        for feed in list(self.feeds.values()):
            if cancelled is not None and cancelled():
                break
            changed |= feed.poll()
            if report is not None and time.monotonic() - reported > every_s:
                report()
                reported = time.monotonic()
        return changed

    def snapshots(self) -> tuple[RunSummary, ...]:
        return tuple(feed.snapshot for _, feed in sorted(self.feeds.items()) if feed.snapshot is not None)

    def metas(self) -> tuple[tuple[str, RunMeta], ...]:
        """(name, note and tags) of the runs in `snapshots()` that have any."""
        return tuple((name, feed.meta) for name, feed in sorted(self.feeds.items())
                     if feed.snapshot is not None and feed.meta != NO_META)

    def take_warnings(self) -> list[tuple[str, str]]:
        warnings = self.warnings[:]
        self.warnings.clear()
        return warnings


def read_log_tail(path: str | Path, lines: int = 20, max_bytes: int = 16384) -> list[str]:
    """The last `lines` lines of a regular text file, reading at most its last `max_bytes`, with
    their control characters escaped (a log holds what warnings and errors said)."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK)
    except OSError:
        return []
    try:
        with os.fdopen(fd, "rb") as handle:
            if not stat.S_ISREG(os.fstat(handle.fileno()).st_mode):  # a FIFO would block the worker
                return []
            size = handle.seek(0, os.SEEK_END)
            handle.seek(max(0, size - max_bytes))
            data = handle.read(max_bytes)
    except OSError:
        return []
    text = data.decode("utf-8", errors="replace").splitlines()
    if size > max_bytes and text:
        text = text[1:]  # the first line is cut
    return [printable(line) for line in text[-lines:]]
