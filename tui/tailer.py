"""Watching a runs folder: one `EventTail` per run reads only the bytes added since the last poll.

No Textual here: the dashboard's thread worker calls `RunTracker.poll()` once per tick and posts
what changed; the benchmark uses the same class.
"""

from __future__ import annotations

import os
import time
from pathlib import Path

from oaecmlr.store.events import EventTail
from oaecmlr.store.runs import RunDir, live_state, runs_root
from oaecmlr.store.summary import RunFold, RunSummary


class RunFeed:
    """One run folder: its event tail, the fold of its events, and its status."""

    def __init__(self, run: RunDir, warn):
        self.run = run
        self.tail = EventTail(run.events, warn=warn)
        self.fold = RunFold()
        self.snapshot: RunSummary | None = None
        self._status_key: tuple[int, int] | None = None
        self._status: dict = {}

    def _read_status(self) -> dict:
        try:
            stat = self.run.status_file.stat()
        except OSError:
            return {}
        key = (stat.st_mtime_ns, stat.st_size)
        if key != self._status_key:
            self._status_key, self._status = key, self.run.read_status()
        return self._status

    def poll(self) -> bool:
        """Read new events; True when the snapshot changed."""
        resets = self.tail.reset_count
        events = self.tail.read_new()
        if self.tail.reset_count != resets:  # the file shrank (a resume dropped an unfinished epoch)
            self.fold = RunFold()
        self.fold.add(events)
        status = live_state(self._read_status(), self.fold.last_event)
        if events or self.snapshot is None or status != self.snapshot.status or self.tail.reset_count != resets:
            self.snapshot = self.fold.summary(self.run.name, str(self.run.path), status)
            return True
        return False


class RunTracker:
    """All runs of a folder, picked up as their folders appear."""

    def __init__(self, runs_dir: str | Path | None):
        self.root = runs_root(runs_dir)
        self.feeds: dict[str, RunFeed] = {}
        self.warnings: list[tuple[str, str]] = []  # (run name, message) of skipped corrupt lines

    def _warner(self, name: str):
        return lambda message: self.warnings.append((name, message))

    def _discover(self) -> bool:
        changed = False
        try:
            entries = list(os.scandir(self.root))
        except OSError:
            entries = []
        present = {e.name for e in entries}
        for entry in entries:
            if entry.name not in self.feeds and entry.is_dir() and os.path.exists(os.path.join(entry.path, "events.jsonl")):
                self.feeds[entry.name] = RunFeed(RunDir(Path(entry.path)), self._warner(entry.name))
                changed = True
        for name in [n for n in self.feeds if n not in present]:
            del self.feeds[name]
            changed = True
        return changed

    def poll(self, report=None, every_s: float = 0.5) -> bool:
        """Read what is new in every run; True when anything changed. A long read (the first one
        over big runs) calls `report()` every `every_s` seconds so the table fills progressively."""
        changed = self._discover()
        reported = time.monotonic()
        for feed in list(self.feeds.values()):
            changed |= feed.poll()
            if report is not None and time.monotonic() - reported > every_s:
                report()
                reported = time.monotonic()
        return changed

    def snapshots(self) -> tuple[RunSummary, ...]:
        return tuple(feed.snapshot for _, feed in sorted(self.feeds.items()) if feed.snapshot is not None)

    def take_warnings(self) -> list[tuple[str, str]]:
        warnings = self.warnings[:]
        self.warnings.clear()
        return warnings


def read_log_tail(path: str | Path, lines: int = 20, max_bytes: int = 16384) -> list[str]:
    """The last `lines` lines of a text file, reading at most its last `max_bytes`."""
    try:
        with open(path, "rb") as handle:
            size = handle.seek(0, os.SEEK_END)
            handle.seek(max(0, size - max_bytes))
            data = handle.read()
    except OSError:
        return []
    text = data.decode("utf-8", errors="replace").splitlines()
    if size > max_bytes and text:
        text = text[1:]  # the first line is cut
    return text[-lines:]
