"""One run, live: mAP/R1 per evaluation, loss per iteration, clusters per epoch, progress, log, GPUs."""

from __future__ import annotations

from rich.text import Text
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Grid, Horizontal
from textual.screen import Screen
from textual.widgets import Footer, Header, Label, ProgressBar, RichLog, Static

from oaecmlr.formatting import ago, epoch_text
from oaecmlr.store.summary import RunSummary

from .fmt import summary_line
from .plot import Plot, Series


def percent(value: float) -> str:
    return f"{value:.0f}"


def metric_series(run: RunSummary) -> list[Series]:
    return [Series("mAP", tuple((e.epoch, 100 * e.mAP) for e in run.evaluations)),
            Series("R1", tuple((e.epoch, 100 * e.rank1) for e in run.evaluations))]


def cluster_series(run: RunSummary) -> list[Series]:
    return [Series("clusters", tuple((c.epoch, c.clusters) for c in run.clusters)),
            Series("outliers", tuple((c.epoch, c.outliers_after) for c in run.clusters)),
            Series("OAE assigned", tuple((c.epoch, c.oae_assigned) for c in run.clusters))]


def diagnostics_line(run: RunSummary) -> str:
    """The last epoch's clustering: against ground truth where the dataset has it (purity, NMI, OAE
    precision), and across cameras (x-cam: share of clusters spanning cameras; cams: cameras per
    cluster; x-cam imgs: share of clustered images whose cluster holds another camera)."""
    if not run.clusters:
        return ""
    last = run.clusters[-1]
    parts = [f"{name} {100 * value:.0f}%" for name, value in (
        ("purity", last.purity), ("NMI", last.nmi), ("OAE prec", last.oae_precision), ("x-cam", last.cross_camera))
        if value is not None]
    if last.cameras_per_cluster is not None:
        parts.append(f"cams {last.cameras_per_cluster:.1f}")
    if last.cross_camera_images is not None:
        parts.append(f"x-cam imgs {100 * last.cross_camera_images:.0f}%")
    return " ".join(parts)


def progress_text(run: RunSummary) -> tuple[str, int, int, str]:
    """(what the run is doing, bar position, bar total, throughput)."""
    p = run.last_iter
    if run.status in ("running", "starting"):
        last = f"last event {ago(run.last_time)}"
        if p is not None and p.epoch > run.epoch:
            speed = f"{p.images_per_s:,.0f} images/s  " if p.images_per_s else ""
            return (f"epoch {epoch_text(p.epoch, run.epochs)}  iteration {p.iteration}/{p.total_iterations}",
                    p.iteration, p.total_iterations, speed + last)
        return f"epoch {epoch_text(run.epoch + 1, run.epochs)}  clustering or evaluating", 0, 1, last
    done = run.epoch if run.epochs else 0
    if run.stopped is not None:  # stopped inside an epoch: say where, as resume will
        s = run.stopped
        return (f"stopped in epoch {epoch_text(s.epoch, run.epochs)} at iteration {s.iteration} "
                f"({run.epoch} epochs finished)", done, run.epochs or 1, "")
    return f"{run.status} after epoch {epoch_text(run.epoch, run.epochs)}", done, run.epochs or 1, ""


class RunScreen(Screen):
    CSS_PATH = "run_screen.tcss"
    BINDINGS = [
        Binding("escape", "app.pop_screen", "Back"),
        Binding("x", "stop", "Stop"),
        Binding("r", "resume", "Resume"),
        Binding("e", "clone", "Clone"),
    ]

    def __init__(self, run_name: str) -> None:
        super().__init__()
        self.run_name = run_name
        self.log_lines: tuple[str, ...] | None = None

    def compose(self) -> ComposeResult:
        yield Header()
        yield Static(Text(f"{self.run_name}: waiting for its first events", style="dim"), id="run-title")
        with Horizontal(id="progress-row"):
            yield Label(id="progress-text")
            yield ProgressBar(total=1, show_eta=False, id="progress")
            yield Label(id="speed")
        with Grid(id="charts"):
            yield Plot(x_label="epoch", y_label="%", y_format=percent, title="mAP / R1 per evaluation", id="metrics")
            yield Plot(x_label="iteration", y_label="loss", title="loss per iteration", id="loss")
            yield Plot(x_label="epoch", y_label="count", y_min=0, title="clusters per epoch", id="clusters")
            log = RichLog(max_lines=200, wrap=True, min_width=20, id="log")
            log.border_title = "log.txt"
            yield log
        yield Static(id="gpu")
        yield Footer()

    def on_mount(self) -> None:
        self.app.set_watched(self.run_name)
        self.data_changed()
        self.set_interval(1.0, self.data_changed)  # "last event .. ago" moves on between events

    def on_screen_resume(self) -> None:
        self.app.set_watched(self.run_name)

    def on_unmount(self) -> None:
        if self.app.watched == self.run_name:
            self.app.set_watched(None)

    def data_changed(self) -> None:
        if not self.is_mounted:
            return
        run = self.app.runs.get(self.run_name)
        if run is not None:
            title = summary_line(run)
            if run.failure:
                title.append(f"\n{run.failure.error}", style="bold red")
            for warning in run.warnings[-2:]:
                title.append(f"\nwarning: {warning.message}", style="yellow")
            self.query_one("#run-title", Static).update(title)
            text, position, total, speed = progress_text(run)
            self.query_one("#progress-text", Label).update(text)
            self.query_one("#progress", ProgressBar).update(total=total, progress=position)
            self.query_one("#speed", Label).update(speed)
            self.query_one("#metrics", Plot).set_series(metric_series(run))
            self.query_one("#loss", Plot).set_series([Series("loss", run.losses)])
            clusters = self.query_one("#clusters", Plot)
            clusters.set_series(cluster_series(run))
            clusters.border_subtitle = diagnostics_line(run)
        lines = self.app.logs.get(self.run_name)
        if lines is not None and lines != self.log_lines:
            self.log_lines = lines
            log = self.query_one("#log", RichLog)
            log.clear()
            for line in lines:
                log.write(Text(line))
        self.query_one("#gpu", Static).update("  ".join(self.app.gpu) or "GPU: checking…")

    def action_stop(self) -> None:
        self.app.stop_run(self.run_name)

    def action_resume(self) -> None:
        self.app.resume_run(self.run_name)

    def action_clone(self) -> None:
        self.app.clone_run(self.run_name)
