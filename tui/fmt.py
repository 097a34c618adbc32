"""Rich texts shared by the screens; the numbers in them come from `oaecmlr.formatting`, as in the CLI."""

from __future__ import annotations

from rich.text import Text

from oaecmlr import formatting
from oaecmlr.formatting import duration, epoch_text, pct
from oaecmlr.store.summary import RunSummary

STATUS_STYLE = {
    "running": "bold green",
    "starting": "green",
    "finished": "",
    "stopped": "yellow",
    "stale": "bold black on yellow",
    "failed": "bold white on red",
}
STATUS_MARK = {"running": "● ", "starting": "◌ ", "stale": "⚠ ", "failed": "✗ ", "stopped": "■ ", "finished": "✓ "}


def percent(value: float) -> str:
    """A plot axis's percentage (already times 100), whole: 41.9 -> "42"."""
    return f"{value:.0f}"


def status_text(status: str) -> Text:
    return Text(STATUS_MARK.get(status, "") + status, style=STATUS_STYLE.get(status, ""))


def summary_line(run: RunSummary) -> Text:
    """`name  status  elapsed t  dataset  epoch e/E  best mAP .. R1 .. (epoch b)` for a screen's
    title bar, on one line that never wraps: what a narrow screen cuts is the end, never the time.
    The elapsed time runs on with the clock, as `oaecmlr runs` counts it."""
    best = run.best
    line = Text(run.name, style="bold", no_wrap=True, overflow="ellipsis")
    line.append("  ")
    line.append_text(status_text(run.status))
    line.append(f"  elapsed {duration(run.elapsed_until(formatting.now()))}", style="dim")
    line.append(f"  {run.dataset or '-'}  epoch {epoch_text(run.epoch, run.epochs)}  best mAP "
                f"{pct(best.mAP if best else None)} R1 {pct(best.rank1 if best else None)}")
    if best:
        line.append(f" (epoch {best.epoch})", style="dim")
    return line
