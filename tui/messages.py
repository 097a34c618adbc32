"""Messages from the worker threads to the screens: frozen dataclasses.

Textual writes its own bookkeeping (sender, time, propagation flags) onto every message, so
`frozen_message` freezes the declared fields only: assigning one raises FrozenInstanceError.
Messages that carry a full state replace a queued older one (`can_replace`), so a burst of events
costs one repaint.
"""

from __future__ import annotations

import dataclasses
from typing import Any

from textual.message import Message

from oaecmlr.store.compare import Comparison, RunRecord
from oaecmlr.store.runs import RunMeta
from oaecmlr.store.summary import RunSummary


def frozen_message(cls):
    cls = dataclasses.dataclass(frozen=True, eq=False)(cls)
    fields = {f.name for f in dataclasses.fields(cls)}

    def __setattr__(self, name: str, value: Any) -> None:
        if name in fields:
            raise dataclasses.FrozenInstanceError(f"cannot assign to field {name!r}")
        object.__setattr__(self, name, value)

    cls.__setattr__ = __setattr__
    return cls


@frozen_message
class RunsUpdated(Message):
    """The state of every run after a poll that changed something, and the notes and tags of
    those that have any (RUN/meta.json)."""

    runs: tuple[RunSummary, ...]
    meta: tuple[tuple[str, RunMeta], ...] = ()
    problem: str | None = None  # why the runs folder cannot be read

    def can_replace(self, message: Message) -> bool:
        return isinstance(message, RunsUpdated)


@frozen_message
class LogTail(Message):
    """The last lines of the watched run's log.txt."""

    run: str
    lines: tuple[str, ...]

    def can_replace(self, message: Message) -> bool:
        return isinstance(message, LogTail)


@frozen_message
class GpuStatus(Message):
    """One line per GPU (utilisation, memory), or one line saying why there is none."""

    lines: tuple[str, ...]

    def can_replace(self, message: Message) -> bool:
        return isinstance(message, GpuStatus)


@frozen_message
class ProcessStatus(Message):
    """CPU and resident memory of the watched run's processes, or why there are none (`procs.py`)."""

    run: str
    line: str

    def can_replace(self, message: Message) -> bool:
        return isinstance(message, ProcessStatus)


@frozen_message
class CorruptEvents(Message):
    """A run had an events.jsonl line, or a status.json or meta.json field, that could not be used; it was skipped."""

    run: str
    message: str


@frozen_message
class ActionResult(Message):
    """The outcome of a stop, resume or launch, for a notification."""

    text: str
    error: bool = False
    opened_run: str | None = None  # a run to show (after a launch)


@frozen_message
class ComparisonReady(Message):
    """`oaecmlr.store.compare.compare` of the marked runs, with their records."""

    comparison: Comparison
    records: tuple[RunRecord, ...]
