"""Cell texts shared by the screens: the same numbers as `oaecmlr runs` / `oaecmlr show`."""

from __future__ import annotations

import time

from rich.text import Text

from .model import RunSnapshot

STATUS_STYLE = {
    "running": "bold green",
    "starting": "green",
    "finished": "",
    "stopped": "yellow",
    "stale": "bold black on yellow",
    "failed": "bold white on red",
}
STATUS_MARK = {"running": "● ", "starting": "◌ ", "stale": "⚠ ", "failed": "✗ ", "stopped": "■ ", "finished": "✓ "}


def now() -> float:
    """The clock of "ago" texts (the snapshot tests replace it)."""
    return time.time()


def pct(value: float | None, digits: int = 1) -> str:
    return "-" if value is None else f"{100 * value:.{digits}f}"


def duration(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    seconds = int(max(seconds, 0))
    hours, rest = divmod(seconds, 3600)
    minutes, secs = divmod(rest, 60)
    return f"{hours}h{minutes:02d}m" if hours else f"{minutes}m{secs:02d}s" if minutes else f"{secs}s"


def ago(timestamp: float | None) -> str:
    return "-" if timestamp is None else f"{duration(now() - timestamp)} ago"


def start_time(timestamp: float | None) -> str:
    return "-" if timestamp is None else time.strftime("%m-%d %H:%M", time.localtime(timestamp))


def status_text(status: str) -> Text:
    return Text(STATUS_MARK.get(status, "") + status, style=STATUS_STYLE.get(status, ""))


def epoch_text(run: RunSnapshot) -> str:
    return f"{run.epoch}/{run.epochs if run.epochs is not None else '?'}"


def summary_line(run: RunSnapshot) -> Text:
    """`name  status  dataset  epoch e/E  best mAP .. R1 .. (epoch b)` for a screen's title bar."""
    best = run.best
    line = Text(run.name, style="bold")
    line.append("  ")
    line.append_text(status_text(run.status))
    line.append(f"  {run.dataset or '-'}  epoch {epoch_text(run)}  best mAP {pct(best and best.mAP)} "
                f"R1 {pct(best and best.rank1)}")
    if best:
        line.append(f" (epoch {best.epoch})", style="dim")
    line.append(f"  elapsed {duration(run.elapsed)}", style="dim")
    return line
