"""Shared CLI pieces: output formats, JSON printing, the one-line error policy, and `escape` for
every text printed through Rich that came from a file, a user or an exception."""

from __future__ import annotations

import json
import sys
from enum import Enum
from typing import Any

from rich.console import Console
from rich.markup import escape as escape_markup

from oaecmlr.formatting import printable

console = Console()
err_console = Console(stderr=True)


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


def one_line_warnings() -> None:
    """Show Python warnings as one line each on stderr: `warning:` (e.g. unusual dataset counts), or
    `note:` for categories that say they are one (a `label` attribute, e.g. a dataset subset)."""
    import warnings

    def show(message, category, filename, lineno, file=None, line=None):
        label = getattr(category, "label", "warning")
        colour = "cyan" if label == "note" else "yellow"
        err_console.print(f"[{colour}]{label}:[/] {escape(str(message))}", highlight=False, soft_wrap=True)

    warnings.showwarning = show
