"""The life of a run on disk: events, log, status, stop requests and signals.

Only the main process (rank 0) of a run owns a RunSession. Everything it writes goes to events.jsonl
(the contract), a human log, and status.json (pid, host, state).
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import signal
import socket
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from oaecmlr.store.events import SCHEMA_VERSION, EventWriter
from oaecmlr.store.runs import RunDir
from oaecmlr.store.schema import End, Event, Start, parse_event, to_record

Listener = Callable[[Event], None]


class StopRequested(Exception):
    """Raised inside the loop after a graceful stop was requested (SIGTERM, Ctrl-C, `oaecmlr stop`)."""


class StopNow(BaseException):
    """A second SIGTERM or Ctrl-C: stop at once, wherever the run is, keeping the last checkpoint.
    A BaseException, like KeyboardInterrupt, so no `except Exception` on the way swallows it."""




BULKY = ("size_histogram", "data", "timings", "provenance", "time")  # in events.jsonl; too long for a log line


def log_line(event: Event) -> str:
    """One readable line per event for log.txt: `event key=value ...`, floats to 4 digits."""
    def text(value: Any) -> str:
        if isinstance(value, dict):
            return "{" + " ".join(f"{k}={text(v)}" for k, v in value.items()) + "}"
        return f"{value:.4g}" if isinstance(value, float) else str(value)
    fields = to_record(event)
    kind = fields.pop("event")
    return " ".join([kind] + [f"{k}={text(v)}" for k, v in fields.items() if k not in BULKY and v is not None])


def _only_an_end(tail: bytes) -> bool:
    lines = [line for line in tail.decode("utf-8", errors="replace").splitlines() if line.strip()]
    try:
        return len(lines) == 1 and isinstance(parse_event(json.loads(lines[0])), End)
    except ValueError:
        return False


class RunSession:
    def __init__(self, run: RunDir, listener: Listener | None = None):
        self.run = run
        self.events = EventWriter(run.events)
        self.listener = listener
        self._stop_signal: str | None = None
        self._previous_handlers: dict[int, Any] = {}
        self.log = logging.getLogger(f"oaecmlr.run.{run.name}")
        self.log.setLevel(logging.INFO)
        self.log.propagate = False
        handler = logging.FileHandler(run.log, encoding="utf-8")
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(message)s"))
        handler.handleError = lambda record: None  # a full disk: no logging traceback on the console
        self.log.handlers = [handler]

    # events -------------------------------------------------------------------------------------
    def emit(self, event: Event) -> Event:
        event = self.events.write(event)
        self.log.info("%s", log_line(event))
        if self.listener is not None:
            self.listener(event)
        return event

    def show(self, event: Event) -> None:
        """To the console only (image decoding progress), not to events.jsonl."""
        if self.listener is not None:
            self.listener(event)

    def start(self, event: Start) -> None:
        self.emit(dataclasses.replace(event, schema=SCHEMA_VERSION, pid=os.getpid(), host=socket.gethostname()))
        self.set_status("running", started=time.time())

    def set_status(self, state: str, **fields: Any) -> None:
        self.run.write_status(state, pid=os.getpid(), host=socket.gethostname(), **fields)

    def truncate_events(self, offset: int) -> int:
        """Drop what was written after `offset` (an unfinished epoch), keeping it in
        events.discarded.jsonl, and return the number of discarded events. A finished run's `end`
        event is history, not an unfinished epoch: it stays."""
        self.events.close()
        path = self.run.events
        size = path.stat().st_size if path.exists() else 0
        discarded = 0
        if size > offset:
            with open(path, "rb") as f:
                kept, tail = f.read(offset), f.read()
            if _only_an_end(tail):
                self.events = EventWriter(path)
                return 0
            with open(self.run.discarded_events, "ab") as f:
                f.write(tail if tail.endswith(b"\n") else tail + b"\n")
            discarded = tail.count(b"\n") + (0 if tail.endswith(b"\n") else 1)
            # Replace rather than truncate: readers notice the new file even if it regrows at once.
            tmp = path.with_name(path.name + ".tmp")
            with open(tmp, "wb") as f:
                f.write(kept)
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, path)
        self.events = EventWriter(path)
        return discarded

    # stopping -----------------------------------------------------------------------------------
    def install_signal_handlers(self) -> None:
        """The first SIGTERM/SIGINT asks for a stop at the next safe point (the end of a log interval,
        of a clustering or of an evaluation), with a checkpoint; the second stops at once."""
        def handler(signum, _frame):
            if self._stop_signal:
                raise StopNow(signal.Signals(signum).name)
            self._stop_signal = signal.Signals(signum).name
        for sig in (signal.SIGTERM, signal.SIGINT):
            try:
                self._previous_handlers[sig] = signal.signal(sig, handler)
            except ValueError:  # not the main thread (e.g. under a test runner thread)
                pass

    def restore_signal_handlers(self) -> None:
        for sig, previous in self._previous_handlers.items():
            signal.signal(sig, previous)
        self._previous_handlers.clear()

    def stop_reason(self) -> str | None:
        if self._stop_signal:
            return self._stop_signal
        if self.run.stop_request.exists():
            return "stop requested (oaecmlr stop)"
        return None

    def close(self) -> None:
        self.restore_signal_handlers()
        try:
            self.events.close()
        except OSError:  # a full disk: what could be written was written
            pass
        for handler in self.log.handlers:
            try:
                handler.close()
            except OSError:  # a full disk: flushing the log's last lines failed
                pass
        self.log.handlers = []
        try:
            Path(self.run.stop_request).unlink(missing_ok=True)
        except OSError:
            pass
