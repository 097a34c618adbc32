"""The run recorder: the life of a run on disk (events, log, status, stop requests) and its signals.

Only the main process (rank 0) of a run owns a RunRecorder. Everything it writes goes to events.jsonl
(the contract), a human log, and status.json (pid, host, state, and the identity of its process that
`oaecmlr stop` checks before it signals). Signals: SIGINT and SIGTERM stop the run gracefully (a
second one at once); SIGHUP, like a console write that fails, only loses the console: training goes
on, its output goes to log.txt; a signal whose default would end the process silently (SIGQUIT,
SIGUSR1, ...) ends it with a failure event that names the signal.
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

from oaecmlr.engine.parent_death import parent_died
from oaecmlr.errors import EndedBySignal, StopNow
from oaecmlr.store.events import SCHEMA_VERSION, EventWriter
from oaecmlr.store.processes import detach_console, identity
from oaecmlr.store.runs import RunDir, resume_command
from oaecmlr.store.schema import End, Event, HealthWarning, Start, Stopping, parse_event, to_record

Listener = Callable[[Event], None]


# Signals that end a process by default and that nothing here uses (SIGPIPE and SIGXFSZ Python ignores).
FATAL_SIGNALS = tuple(getattr(signal, name) for name in ("SIGQUIT", "SIGUSR1", "SIGUSR2", "SIGALRM", "SIGXCPU")
                      if hasattr(signal, name))


def resume_note(run: RunDir) -> str:
    """How a resume goes on from here: from the last checkpoint, or from epoch 0 when there is none."""
    if run.last.is_file():
        return f"`{resume_command(run)}` continues from the last checkpoint"
    return f"there is no checkpoint yet: `{resume_command(run)}` starts over from epoch 0"


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


class RunRecorder:
    def __init__(self, run: RunDir, listener: Listener | None = None):
        self.run = run
        self.events = EventWriter(run.events)
        self.listener = listener
        self._stop_signal: str | None = None  # the reason: "SIGINT", "SIGTERM: its parent process 12 died"
        self.stop_signal: str | None = None  # the signal's name
        self._previous_handlers: dict[int, Any] = {}
        self._identity = identity(os.getpid())
        self._console_note: str | None = None
        self._console_note_pending = False
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
        self.show(event)
        self._write_console_note()
        return event

    def show(self, event: Event) -> None:
        """To the console only (for events.jsonl, `emit`). A console that fails (a closed pipe: EPIPE,
        a hung-up terminal: EIO) is lost, not fatal."""
        listener = self.listener
        if listener is not None:
            try:
                listener(event)
            except OSError as exc:
                self.lose_console(exc.strerror or type(exc).__name__)

    def lose_console(self, why: str) -> None:
        """The console went away: train on, with output to log.txt only, and say when in a `warning`
        event at the next safe point (called from a signal handler too: nothing is written here)."""
        if self._console_note is not None:
            return
        self.listener = None
        self._console_note = (f"the console was lost at {time.strftime('%Y-%m-%d %H:%M:%S')} ({why}); training "
                              f"goes on, with its output in {self.run.log.name} only")
        try:
            detach_console(self.run.log)
        except OSError:
            pass
        self._console_note_pending = True

    def _write_console_note(self) -> None:
        if self._console_note_pending:
            self._console_note_pending = False
            self.emit(HealthWarning(what="console", message=self._console_note or ""))

    def start(self, event: Start) -> None:
        self.emit(dataclasses.replace(event, schema=SCHEMA_VERSION, pid=os.getpid(), host=socket.gethostname()))
        self.set_status("running", started=time.time())

    def set_status(self, state: str, **fields: Any) -> None:
        self.run.write_status(state, pid=os.getpid(), host=socket.gethostname(), process=self._identity, **fields)

    def set_stopped(self) -> None:
        self.set_status("stopped", stop_signal=self.stop_signal)

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
        """The first SIGTERM/SIGINT asks for a stop at the next safe point (the end of the iteration,
        of a clustering or of an evaluation), with a checkpoint, and says so on the console at once;
        the second stops at once. SIGHUP loses the console (unless it is ignored, as under nohup)."""
        def stop(signum, _frame):
            name = signal.Signals(signum).name
            parent = parent_died()
            reason = name if parent is None else f"{name}: its parent process {parent} died"
            if self._stop_signal:
                if parent is not None and self._stop_signal == reason:
                    return  # PR_SET_PDEATHSIG: the kernel sends one SIGTERM per thread of this process
                raise StopNow(name)
            self._stop_signal = reason
            self.stop_signal = name
            self.show(Stopping(signal=name))

        def hangup(_signum, _frame):
            self.lose_console("SIGHUP")

        def fatal(signum, _frame):
            raise EndedBySignal(signal.Signals(signum).name)

        handlers = {signal.SIGTERM: stop, signal.SIGINT: stop}
        if signal.getsignal(signal.SIGHUP) is not signal.SIG_IGN:
            handlers[signal.SIGHUP] = hangup
        handlers.update({sig: fatal for sig in FATAL_SIGNALS if signal.getsignal(sig) is signal.SIG_DFL})
        for sig, handler in handlers.items():
            try:
                self._previous_handlers[sig] = signal.signal(sig, handler)
            except ValueError:  # not the main thread (e.g. under a test runner thread)
                pass

    def restore_signal_handlers(self) -> None:
        for sig, previous in self._previous_handlers.items():
            signal.signal(sig, previous)
        self._previous_handlers.clear()

    def stop_reason(self) -> str | None:
        """Why the run should stop now, if it should (checked at every safe point). The supervisor of
        `--gpus cpu,cpu` workers says here, through CONSOLE_LOST, that it lost the console."""
        if self._console_note is None and (why := self.run.console_lost_reason()) is not None:
            self.lose_console(why)
        self._write_console_note()
        if self._stop_signal:
            return self._stop_signal
        if self.run.stop_request.exists():
            return "stop requested (oaecmlr stop)"
        return None

    def close(self) -> None:
        self.restore_signal_handlers()
        for step in (self._write_console_note, self.events.close):
            try:
                step()
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
            self.run.console_lost.unlink(missing_ok=True)
        except OSError:
            pass
