"""`events.jsonl`: the one contract between a training run and everything that watches it.

One JSON object per line, appended and flushed as it happens; the first line is a `start` event
carrying `schema`. Readers tail the file incrementally by byte offset: a partial last line (a
writer mid-write, or a crash) waits for its newline, a corrupt complete line is skipped with a
warning, and a file that was replaced or shrank (a resume discarding an unfinished epoch) is read again from
the start.
"""

from __future__ import annotations

import json
import os
import time
import warnings
from pathlib import Path
from typing import Any

SCHEMA_VERSION = 1


class EventWriter:
    def __init__(self, path: str | Path):
        self.path = Path(path)
        self._file = open(self.path, "a", encoding="utf-8")  # noqa: SIM115 - lives as long as the run

    def write(self, event: str, **fields: Any) -> dict[str, Any]:
        record = {"event": event, "time": round(time.time(), 3), **fields}
        self._file.write(json.dumps(record, default=_jsonable) + "\n")
        self._file.flush()
        return record

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

    def read_new(self) -> list[dict[str, Any]]:
        try:
            stat = self.path.stat()
        except FileNotFoundError:
            return []
        size = stat.st_size
        # A resume replaces the file (new inode) with a shorter one: read it again from the start.
        if size < self.offset or (self._inode is not None and stat.st_ino != self._inode):
            self.offset, self._partial, self._line_number = 0, b"", 0
            self.reset_count += 1
        self._inode = stat.st_ino
        if size == self.offset:
            return []
        with open(self.path, "rb") as handle:
            handle.seek(self.offset)
            chunk = handle.read(size - self.offset)
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
                event = json.loads(raw)
                if not isinstance(event, dict) or "event" not in event:
                    raise ValueError("not an event object")
            except ValueError:
                self._warn(f"{self.path}:{self._line_number}: skipping a corrupt event line")
                continue
            events.append(event)
        return events


def read_events(path: str | Path, warn=None) -> list[dict[str, Any]]:
    """All complete events of a file (a torn last line is ignored)."""
    return EventTail(path, warn).read_new()
