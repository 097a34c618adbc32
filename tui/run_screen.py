"""One run, live: mAP/R1 per evaluation, loss per iteration, clusters per epoch and the last
clustering's diagnostics, progress and the whole run's ETA, log, GPUs and the run's CPU and RAM."""

from __future__ import annotations

from rich.text import Text
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Grid, Horizontal
from textual.screen import Screen
from textual.widgets import Footer, Header, Label, ProgressBar, RichLog, Static

from oaecmlr.formatting import ago, duration, epoch_text
from oaecmlr.store.summary import RunSummary

from .fmt import percent, summary_line
from .plot import Plot, Series
from .screen_updates import while_shown


def metric_series(run: RunSummary) -> list[Series]:
    return [Series("mAP", tuple((e.epoch, 100 * e.mAP) for e in run.evaluations)),
            Series("R1", tuple((e.epoch, 100 * e.rank1) for e in run.evaluations))]


def cluster_series(run: RunSummary) -> list[Series]:
    """Clusters and the outliers OAE assigned to them: counts of the same order (tens to hundreds).
    The outliers left (about a thousand on Market-1501) would flatten both, so they are not drawn:
    `outliers_line` gives them as a share of the training images in the chart's subtitle."""
    return [Series("clusters", tuple((c.epoch, c.clusters) for c in run.clusters)),
            Series("OAE assigned", tuple((c.epoch, c.oae_assigned) for c in run.clusters))]


def train_images(run: RunSummary) -> int | None:
    split = (run.start.data or {}).get("train") if run.start else None
    images = split.get("images") if isinstance(split, dict) else None
    return images if isinstance(images, int) and images > 0 else None


def outliers_line(run: RunSummary) -> str:
    """The last epoch's outliers after OAE: `outliers 1,043 = 8% of 12,936 images`."""
    if not run.clusters:
        return ""
    left, images = run.clusters[-1].outliers_after, train_images(run)
    if images is None:
        return f"outliers {left:,}"
    return f"outliers {left:,} = {100 * left / images:.0f}% of {images:,} images"


def diagnostics_line(run: RunSummary) -> str:
    """The last epoch's clustering: against ground truth where the dataset has it (purity, NMI, OAE
    precision), and across cameras (x-cam: share of clusters spanning cameras; cams: cameras per
    cluster; x-cam imgs: share of clustered images whose cluster holds another camera). A second
    line says whether OAE and CMLR work (`method_line`). About 85 characters a line."""
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
    if not parts:
        return ""
    method = method_line(last)
    return f"epoch {last.epoch} clusters: " + "  ".join(parts) + (f"\n{method}" if method else "")


def method_line(last) -> str:
    """OAE: pairwise precision / its ceiling, the share of outliers assigned, same-camera pairs;
    CMLR: the target's mass on the right identity for mislabelled samples, AUROC, KL to the model."""
    oae = [f"{name} {100 * value:.0f}%" for name, value in (
        ("pair prec", last.oae_pairwise_precision), ("ceiling", last.oae_ceiling),
        ("assigned", last.oae_assigned_share), ("same cam", last.oae_same_camera)) if value is not None]
    cmlr = [text for text, value in (
        (f"mislabelled mass {100 * (last.cmlr_mass_mislabelled or 0):.0f}%", last.cmlr_mass_mislabelled),
        (f"AUROC {last.cmlr_auroc or 0:.2f}", last.cmlr_auroc), (f"KL {last.cmlr_kl or 0:.2f}", last.cmlr_kl))
        if value is not None]
    parts = (["OAE " + " ".join(oae)] if oae else []) + (["target " + " ".join(cmlr)] if cmlr else [])
    return "  ".join(parts)


def run_eta(run: RunSummary) -> float | None:
    """Seconds left for the whole run, as of its last event; None until it can be measured.

    progress = finished epochs + the share of the current epoch's iterations done
               (`last_iter.iteration / total_iterations` while it belongs to the next epoch);
    left     = elapsed / progress * (epochs - progress).

    `elapsed` is the running time (`RunSummary.elapsed`: resumes do not count the time a run sat
    stopped), so one epoch costs its share of everything: clustering, training, evaluations, and
    the start-up (image cache, the epoch-0 evaluation), which makes the first estimates pessimistic
    and fades as epochs go by. The partial epoch counts so that the estimate goes down within an
    epoch rather than jumping at its end. Nothing until one epoch has finished ("-")."""
    if run.status not in ("running", "starting") or not run.epochs or run.epoch < 1 or not run.elapsed:
        return None
    progress = float(run.epoch)
    p = run.last_iter
    if p is not None and p.epoch == run.epoch + 1 and p.total_iterations:
        progress += min(p.iteration, p.total_iterations) / p.total_iterations
    return max(0.0, run.elapsed / progress * (run.epochs - progress))


def eta_text(run: RunSummary) -> str:
    """`run ETA 1h02m` for a running run ("run ETA -" before its first epoch), "" otherwise."""
    if run.status not in ("running", "starting"):
        return ""
    return f"run ETA {duration(run_eta(run))}"


def progress_text(run: RunSummary) -> tuple[str, int, int, str]:
    """(what the run is doing, bar position, bar total, throughput)."""
    p = run.last_iter
    if run.status in ("running", "starting"):
        last = f"{eta_text(run)}  last event {ago(run.last_time)}"
        if p is not None and p.epoch > run.epoch:
            speed = f"{p.images_per_s:,.0f} images/s  " if p.images_per_s else ""
            return (f"epoch {epoch_text(p.epoch, run.epochs)}  iteration {p.iteration}/{p.total_iterations}",
                    p.iteration, p.total_iterations, speed + last)
        return f"epoch {epoch_text(run.epoch + 1, run.epochs)}  clustering or evaluating", 0, 1, last
    done = run.epoch if run.epochs else 0
    if run.stopped is not None:  # stopped inside an epoch: say where, as resume will
        s = run.stopped
        where = f"at iteration {s.iteration}" if s.iteration is not None else "at once"
        return (f"stopped in epoch {epoch_text(s.epoch, run.epochs)} {where} "
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
        yield Static(id="diagnostics")
        with Horizontal(id="machine-row"):
            yield Static(id="gpu")
            yield Static(id="proc")
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

    @while_shown
    def data_changed(self) -> None:
        run = self.app.runs.get(self.run_name)
        if run is not None:
            title = summary_line(run)
            if run.failure:
                title.append(f"\n{run.failure.error}", style="bold red")
            for warning in run.warnings[-2:]:
                title.append(f"\nwarning: {warning.message}", style="yellow")
            meta = self.app.meta.get(self.run_name)
            if meta is not None:
                title.append(f"\n{meta.text()}", style="italic")
            self.query_one("#run-title", Static).update(title)
            text, position, total, speed = progress_text(run)
            self.query_one("#progress-text", Label).update(text)
            self.query_one("#progress", ProgressBar).update(total=total, progress=position)
            self.query_one("#speed", Label).update(speed)
            self.query_one("#metrics", Plot).set_series(metric_series(run))
            self.query_one("#loss", Plot).set_series([Series("loss", run.losses)])
            clusters = self.query_one("#clusters", Plot)
            clusters.set_series(cluster_series(run))
            clusters.border_subtitle = outliers_line(run)
            diagnostics = diagnostics_line(run)
            panel = self.query_one("#diagnostics", Static)
            panel.update(diagnostics)
            panel.display = bool(diagnostics)
        lines = self.app.logs.get(self.run_name)
        if lines is not None and lines != self.log_lines:
            self.log_lines = lines
            log = self.query_one("#log", RichLog)
            log.clear()
            for line in lines:
                log.write(Text(line))
        self.query_one("#gpu", Static).update("  ".join(self.app.gpu) or "GPU: checking…")
        self.query_one("#proc", Static).update(self.app.process.get(self.run_name, "CPU/RAM: checking…"))

    def action_stop(self) -> None:
        self.app.confirm_stop(self.run_name)

    def action_resume(self) -> None:
        self.app.resume_run(self.run_name)

    def action_clone(self) -> None:
        self.app.clone_run(self.run_name)
