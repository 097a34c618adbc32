"""Shared CLI pieces: output formats, JSON printing, the one-line error policy, and `escape` for
every text printed through Rich that came from a file, a user or an exception."""

from __future__ import annotations

import errno
import json
import os
import sys
from enum import Enum
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.markup import escape as escape_markup

from oaecmlr.formatting import printable


class ErrConsole(Console):
    """stderr, where a closed pipe raises BrokenPipeError (an OSError) instead of Rich's default,
    exiting the process: a foreground run then trains on without its console (`RunRecorder.show`)."""

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


def escape(text: Any) -> str:
    """`text` safe to print with Rich markup: its control characters escaped (a terminal escape in a
    note, a dataset name or an error message is shown, never obeyed) and its [markup] escaped."""
    return escape_markup(printable(str(text)))


def writable_folder(folder: str | Path, option: str) -> Path:
    """A folder to write into (it may not exist yet), refused in one line, before any work, when it
    cannot be one: it is a file, a file lies on its path, or the first folder that exists on its
    path cannot be written (permissions, a read-only disk)."""
    from oaecmlr.errors import CliError

    folder = Path(folder)
    existing = next((p for p in [folder, *folder.parents] if os.path.lexists(p)), Path("."))
    if not existing.is_dir():
        what = "is a file" if existing == folder else f"lies under {existing}, which is a file"
        raise CliError(f"{option} {folder} {what}, not a folder; name a folder")
    if not os.access(existing, os.W_OK | os.X_OK):
        raise CliError(f"{option} {folder}: cannot write under {existing} (no permission, or a read-only disk); name "
                       "a folder you can write to")
    return folder


def os_error_line(exc: OSError) -> str:
    """One line for an OSError that reached the command line: what the system said, and where."""
    where = f" at {exc.filename}" if exc.filename else ""
    return f"{(exc.strerror or str(exc)).lower()}{where}"


def one_line_warnings() -> None:
    """Show Python warnings as one line each on stderr: `warning:` (e.g. unusual dataset counts), or
    `note:` for categories that say they are one (a `label` attribute, e.g. a dataset subset)."""
    import warnings

    def show(message, category, filename, lineno, file=None, line=None):
        label = getattr(category, "label", "warning")
        colour = "cyan" if label == "note" else "yellow"
        try:
            err_console.print(f"[{colour}]{label}:[/] {escape(str(message))}", highlight=False, soft_wrap=True)
        except OSError:  # no console any more: the warning is lost, as Python's own would be
            pass

    warnings.showwarning = show


def warn(message: str) -> None:
    """A problem the command works around (a skipped corrupt line, an unreadable field): one line on stderr."""
    err_console.print(f"[yellow]warning:[/] {escape(message)}", highlight=False, soft_wrap=True)


def cell(value: Any) -> str:
    """A setting's value in a table: true/false, `-` for none."""
    if isinstance(value, bool):
        return "true" if value else "false"
    return "-" if value is None else str(value)
