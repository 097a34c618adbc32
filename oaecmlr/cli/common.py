"""Shared CLI pieces: output formats, JSON printing and the one-line error policy."""

from __future__ import annotations

import errno
import json
import os
import sys
from enum import Enum
from typing import Any

from rich.console import Console


class ErrConsole(Console):
    """stderr, where a closed pipe raises BrokenPipeError (an OSError) instead of Rich's default,
    exiting the process: a foreground run then trains on without its console (`RunSession.show`)."""

    def on_broken_pipe(self) -> None:
        raise BrokenPipeError(errno.EPIPE, os.strerror(errno.EPIPE))


console = Console()
err_console = ErrConsole(stderr=True)


class TableOrJson(str, Enum):
    table = "table"
    json = "json"


def print_json(data: Any) -> None:
    sys.stdout.write(json.dumps(data, indent=2, default=_default) + "\n")


def _default(value: Any) -> Any:
    if hasattr(value, "tolist"):
        return value.tolist()
    return str(value)


def one_line_warnings() -> None:
    """Show Python warnings as one line each on stderr: `warning:` (e.g. unusual dataset counts), or
    `note:` for categories that say they are one (a `label` attribute, e.g. a dataset subset)."""
    import warnings

    from rich.markup import escape

    def show(message, category, filename, lineno, file=None, line=None):
        label = getattr(category, "label", "warning")
        colour = "cyan" if label == "note" else "yellow"
        try:
            err_console.print(f"[{colour}]{label}:[/] {escape(str(message))}", highlight=False, soft_wrap=True)
        except OSError:  # no console any more: the warning is lost, as Python's own would be
            pass

    warnings.showwarning = show
