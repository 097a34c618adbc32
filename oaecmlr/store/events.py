"""`events.jsonl`: the one contract between a training run and everything that watches it.

One JSON object per line (`oaecmlr.store.schema`), appended and flushed as it happens; the first
line is a `start` event carrying `schema`. Readers tail the file incrementally by byte offset: a
partial last line (a writer mid-write, or a crash) waits for its newline, a complete line that is
not a valid event (corrupt JSON, or a known kind with a field of the wrong type or out of range) or
that is longer than `LINE_LIMIT` is skipped with a warning naming the file and line, and a file that
was replaced or shrank (a resume discarding an unfinished epoch) is read again from the start. Only
a regular file is read, in bounded chunks.
"""

from __future__ import annotations

import dataclasses
import json
import os
import stat
import time
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from oaecmlr.formatting import printable
from oaecmlr.store.ondisk import LINE_LIMIT, event_value, load_json
from oaecmlr.store.schema import SCHEMA_VERSION, Event, EventError, Skimmed, parse_event, to_record

__all__ = ["SCHEMA_VERSION", "EventTail", "EventWriter", "read_events"]


class EventWriter:
    def __init__(self, path: str | Path, clock=time.time):
        self.path = Path(path)
        self.clock = clock  # the stamp of each event (tests write histories with their own clock)
        self._file = open(self.path, "a", encoding="utf-8")  # noqa: SIM115 - lives as long as the run

    def write(self, event: Event) -> Event:
        """Append `event`, stamped with the clock's time; returns the stamped event."""
        event = dataclasses.replace(event, time=round(self.clock(), 3))
        self._file.write(json.dumps(to_record(event), default=_jsonable) + "\n")
        self._file.flush()
        return event

    def offset(self) -> int:
        self._file.flush()
        return self._file.tell()

    def close(self) -> None:
        if not self._file.closed:
            self._file.flush()
            os.fsync(self._file.fileno())
            self._file.close()


def _jsonable(value: Any) -> Any:
    if hasattr(value, "tolist"):
        return value.tolist()
    if hasattr(value, "item"):
        return value.item()
    raise TypeError(f"cannot write {type(value).__name__} to events")


class EventTail:
    """Incremental reader: each `read_new()` returns the complete events added since the last call.

    Bounded: only a regular file is opened, it is read in chunks of `CHUNK` bytes, and a line longer
    than `LINE_LIMIT` is skipped (with one warning naming the file and line) without being held in
    memory. `each_new()` yields the events one at a time, so a caller that folds them as they come
    (`oaecmlr runs`) holds one chunk, whatever the size of the file.
    """

    CHUNK = 1024 * 1024

    def __init__(self, path: str | Path, warn=None, line_limit: int = LINE_LIMIT, skim: tuple[str, ...] = ()):
        """skim: kinds whose lines, when they begin as EventWriter writes them, yield a `Skimmed`
        event (kind and time, the time checked) instead of being parsed whole: for a reader that
        acts on nothing else of them. Other lines of those kinds are parsed, and checked, whole."""
        self.path = Path(path)
        self._skim = [(kind, f'{{"event": "{kind}", "time": '.encode()) for kind in skim]
        self.offset = 0
        self.reset_count = 0  # times the file shrank and was read again
        self.line_limit = line_limit
        self._partial = b""
        self._skipping = False  # inside a line longer than line_limit: drop bytes up to its newline
        self._line_number = 0
        self._inode: int | None = None
        self._refused = False
        self._warn = warn or (lambda message: warnings.warn(message, stacklevel=3))

    def read_new(self, max_bytes: int | None = None) -> list[Event]:
        """The complete events added since the last call (of at most about `max_bytes` new bytes:
        the rest comes with the next call)."""
        return list(self.each_new(max_bytes))

    def each_new(self, max_bytes: int | None = None) -> Iterator[Event]:
        try:
            info = os.stat(self.path)
        except (OSError, ValueError):
            return
        if not stat.S_ISREG(info.st_mode):
            if not self._refused:  # once, not at every poll
                self._refused = True
                self._warn(f"{printable(str(self.path))} is not a regular file; skipped")
            return
        self._refused = False
        size = info.st_size
        # A resume replaces the file (new inode) with a shorter one: read it again from the start.
        if size < self.offset or (self._inode is not None and info.st_ino != self._inode):
            self.offset, self._partial, self._skipping, self._line_number = 0, b"", False, 0
            self.reset_count += 1
        self._inode = info.st_ino
        if size == self.offset:
            return
        end = size if max_bytes is None else min(size, self.offset + max_bytes)
        try:
            fd = os.open(self.path, os.O_RDONLY | os.O_NONBLOCK | getattr(os, "O_CLOEXEC", 0))
        except OSError:
            return
        with os.fdopen(fd, "rb") as handle:
            if not stat.S_ISREG(os.fstat(handle.fileno()).st_mode):  # replaced since the stat
                return
            handle.seek(self.offset)
            while self.offset < end:
                try:
                    chunk = handle.read(min(self.CHUNK, end - self.offset))
                except OSError:
                    return
                if not chunk:
                    return
                self.offset += len(chunk)
                yield from self._lines(chunk)

    def _lines(self, chunk: bytes) -> Iterator[Event]:
        start = 0
        if self._skipping:
            newline = chunk.find(b"\n")
            if newline < 0:
                return
            self._skipping = False
            self._line_number += 1
            self._warn(f"{printable(str(self.path))}:{self._line_number}: skipping a line longer than "
                       f"{self.line_limit:,} bytes")
            start = newline + 1
        data = self._partial + chunk[start:] if self._partial else chunk[start:]
        complete = data.rfind(b"\n") + 1
        self._partial = data[complete:]  # empty when the chunk ended with a newline
        for raw in data[:complete].split(b"\n")[:-1]:
            self._line_number += 1
            if len(raw) > self.line_limit:
                self._warn(f"{printable(str(self.path))}:{self._line_number}: skipping a line longer than "
                           f"{self.line_limit:,} bytes")
                continue
            if not raw.strip():
                continue
            skimmed = self._skimmed(raw) if self._skim else None
            if skimmed is not None:
                yield skimmed
                continue
            try:
                yield parse_event(load_json(raw.decode("utf-8", errors="replace")))
            except (ValueError, RecursionError) as exc:  # json.JSONDecodeError and EventError
                reason = str(exc) if isinstance(exc, EventError) or "finite" in str(exc) else "not valid JSON"
                self._warn(f"{printable(str(self.path))}:{self._line_number}: skipping a malformed event ({reason})")
        if len(self._partial) > self.line_limit:  # a line too long to keep: drop it up to its newline
            self._partial, self._skipping = b"", True

    def _skimmed(self, raw: bytes) -> Skimmed | None:
        for kind, prefix in self._skim:
            if raw.startswith(prefix):
                end = raw.find(b",", len(prefix))
                try:
                    time = float(raw[len(prefix):end])
                except ValueError:
                    return None
                return Skimmed(time=time, event=kind) if not event_value("time", time)[1] else None
        return None


def read_events(path: str | Path, warn=None) -> list[Event]:
    """All complete events of a file (a torn last line is ignored)."""
    return EventTail(path, warn).read_new()
