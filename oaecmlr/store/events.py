"""`events.jsonl`: the one contract between a training run and everything that watches it.

One JSON object per line (`oaecmlr.store.schema`), appended and flushed as it happens; the first
line is a `start` event carrying `schema`. Readers tail the file incrementally by byte offset: a
partial last line (a writer mid-write, or a crash) waits for its newline, a complete line that is
not a valid event (corrupt JSON, or a known kind with fields of the wrong type) is skipped with a
warning naming the file and line, and a file that was replaced or shrank (a resume discarding an
unfinished epoch) is read again from the start.
"""

from __future__ import annotations

import dataclasses
import json
import os
import time
import warnings
from pathlib import Path
from typing import Any

from oaecmlr.store.schema import SCHEMA_VERSION, Event, EventError, parse_event, to_record

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
    """Incremental reader: each `read_new()` returns the complete events added since the last call."""

    def __init__(self, path: str | Path, warn=None):
        self.path = Path(path)
        self.offset = 0
        self.reset_count = 0  # times the file shrank and was read again
        self._partial = b""
        self._line_number = 0
        self._inode: int | None = None
        self._warn = warn or (lambda message: warnings.warn(message, stacklevel=3))

    def read_new(self) -> list[Event]:
        try:
            stat = self.path.stat()
        except OSError:
            return []
        size = stat.st_size
        # A resume replaces the file (new inode) with a shorter one: read it again from the start.
        if size < self.offset or (self._inode is not None and stat.st_ino != self._inode):
            self.offset, self._partial, self._line_number = 0, b"", 0
            self.reset_count += 1
        self._inode = stat.st_ino
        if size == self.offset:
            return []
        try:
            with open(self.path, "rb") as handle:
                handle.seek(self.offset)
                chunk = handle.read(size - self.offset)
        except OSError:
            return []
        self.offset += len(chunk)
        data = self._partial + chunk
        complete = data.rfind(b"\n") + 1
        self._partial = data[complete:]  # empty when the chunk ended with a newline
        events = []
        for raw in data[:complete].decode("utf-8", errors="replace").split("\n")[:-1]:
            self._line_number += 1
            if not raw.strip():
                continue
            try:
                events.append(parse_event(json.loads(raw)))
            except ValueError as exc:  # json.JSONDecodeError and EventError
                reason = str(exc) if isinstance(exc, EventError) else "not valid JSON"
                self._warn(f"{self.path}:{self._line_number}: skipping a malformed event ({reason})")
        return events


def read_events(path: str | Path, warn=None) -> list[Event]:
    """All complete events of a file (a torn last line is ignored)."""
    return EventTail(path, warn).read_new()
