"""Comparing marked runs: overlaid mAP and R1 curves, the metric table, warnings, the config diff.

The numbers are `oaecmlr.store.compare.compare` of the runs' records, as `oaecmlr compare` shows.
"""

from __future__ import annotations

from rich.text import Text
from textual import work
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal, VerticalScroll
from textual.screen import Screen
from textual.widgets import DataTable, Footer, Header, Static

from oaecmlr.formatting import duration, epoch_text, pct
from oaecmlr.store.compare import compare, run_record
from oaecmlr.store.runs import RunDir

from .fmt import percent
from .messages import ActionResult, ComparisonReady
from .plot import Plot, Series


class CompareScreen(Screen):
    CSS_PATH = "compare_screen.tcss"
    BINDINGS = [Binding("escape", "app.pop_screen", "Back")]

    def __init__(self, names: list[str]) -> None:
        super().__init__()
        self.names = list(names)

    def compose(self) -> ComposeResult:
        yield Header()
        yield Static(Text(f"comparing {', '.join(self.names)} (Δ against {self.names[0]})"), id="compare-title")
        with Horizontal(id="compare-plots"):
            yield Plot(x_label="epoch", y_label="%", y_format=percent, title="mAP", id="compare-map")
            yield Plot(x_label="epoch", y_label="%", y_format=percent, title="R1", id="compare-r1")
        with VerticalScroll(id="compare-body"):
            yield DataTable(id="compare-metrics", cursor_type="none", show_cursor=False)
            yield Static(id="compare-warnings")
            yield Static("config differences", classes="section")
            yield DataTable(id="compare-diff", cursor_type="none", show_cursor=False)
        yield Footer()

    def on_mount(self) -> None:
        self.load()

    @work(thread=True, exclusive=True, group="compare")
    def load(self) -> None:
        try:
            records = tuple(run_record(RunDir(self.app.root / name)) for name in self.names)
            self.post_message(ComparisonReady(compare(list(records)), records))
        except Exception as exc:  # a run folder vanished or is unreadable
            self.app.post_message(ActionResult(f"cannot compare: {type(exc).__name__}: {exc}", error=True))

    def on_comparison_ready(self, message: ComparisonReady) -> None:
        result, records = message.comparison, message.records
        for metric, plot_id in (("mAP", "#compare-map"), ("rank1", "#compare-r1")):
            self.query_one(plot_id, Plot).set_series(
                [Series(r.name, tuple((e.epoch, 100 * getattr(e, metric)) for e in r.summary.evaluations))
                 for r in records])
        metrics = self.query_one("#compare-metrics", DataTable)
        metrics.add_columns("run", "status", "epoch", "best mAP/R1 @ep", "Δ mAP", "final mAP/R1", "x-cam", "to best",
                            "elapsed")
        reference = result.runs[0].best
        for run in result.runs:
            best, final = run.best, run.final
            delta = "-" if best is None or reference is None else f"{100 * (best.metrics.mAP - reference.metrics.mAP):+.1f}"
            clusters = run.last_clusters or {}
            best_text = f"{pct(best.metrics.mAP)}/{pct(best.metrics.rank1)} @{best.epoch}" if best else "-/- @-"
            final_text = f"{pct(final.metrics.mAP)}/{pct(final.metrics.rank1)}" if final else "-/-"
            metrics.add_row(run.name, run.status, epoch_text(run.epoch, run.epochs), best_text, delta, final_text,
                            pct(clusters.get("cross_camera"), 0), duration(run.time_to_best_s), duration(run.elapsed_s))
        notes = Text()
        for warning in result.warnings:
            notes.append(f"⚠ {warning}\n", style="yellow")
        for group in result.seed_groups:
            best = group.get("best_mAP")
            if best:
                notes.append(f"seeds {', '.join(map(str, group['seeds']))} ({', '.join(group['runs'])}): best mAP "
                             f"{100 * best['mean']:.1f} ± {100 * best['std']:.1f} over {best['n']} runs\n")
        notes.rstrip()
        self.query_one("#compare-warnings", Static).update(notes if notes.plain else Text("no comparability warnings", style="dim"))
        diff = self.query_one("#compare-diff", DataTable)
        diff.add_columns("setting", *self.names)
        for key, values in result.config_diff.items():
            diff.add_row(key, *(str(values.get(name)) for name in self.names))
        if not result.config_diff:
            diff.add_row("(same config)", *("" for _ in self.names))
