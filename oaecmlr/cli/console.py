"""Live console output of a foreground run, driven by its events: a Rich progress bar per epoch and
a one-line summary per epoch (clusters, outliers, OAE, loss, mAP, R1). When stderr is not a
terminal (a pipe, a log file) there is no bar and no blank line, only the summary lines. A first
Ctrl-C is acknowledged at once, and a stop ends with the command that resumes the run."""

from __future__ import annotations

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

from oaecmlr.cli.common import escape
from oaecmlr.formatting import duration, epoch_text, pct
from oaecmlr.store.runs import resume_command, run_dir
from oaecmlr.store.schema import (
    Cluster,
    End,
    EpochEnd,
    EpochStart,
    Eval,
    Event,
    Failure,
    HealthWarning,
    Iter,
    Loading,
    Resume,
    Start,
    Stopped,
    Stopping,
)


class ConsoleReporter:
    def __init__(self, console: Console | None = None, runs_dir: str | None = None, run: str | None = None):
        """`run` (a name or folder) names a resumed run, whose events do not; a new run's `start` does."""
        self.console = console or Console(stderr=True)
        self.runs_dir, self.run = runs_dir, run
        self.kind: str | None = None
        self.training = False  # inside an epoch's iterations (not loading, clustering or evaluating)
        self.progress = Progress(TextColumn("[bold]epoch {task.fields[epoch]}"), BarColumn(), MofNCompleteColumn(),
                                 TextColumn("loss {task.fields[loss]}"), TextColumn("{task.fields[speed]} img/s"),
                                 TimeRemainingColumn(), console=self.console, transient=True,
                                 disable=not self.console.is_terminal)
        self.task = None
        self.epochs: int | None = None
        self.cluster: Cluster | None = None
        self.evaluation: Eval | None = None
        self.loss: float | None = None

    def __call__(self, event: Event) -> None:
        handler = HANDLERS.get(type(event))
        if handler:
            handler(self, event)

    def line(self, text: str) -> None:
        self.console.print(text, soft_wrap=True, highlight=False)

    def on_start(self, e: Start) -> None:
        self.epochs = e.epochs
        self.run = self.run or e.run
        self.kind = e.kind
        train = e.data.get("train", {})
        self.line(f"[bold]{escape(e.run)}[/]: {escape(e.kind)} on {escape(e.dataset)} ({train.get('images', '?')} train "
                  f"images), {escape(e.arch)}, {escape(e.device)}, world size {e.world_size}")
        cache = e.data.get("image_cache") or {}
        if any(where != "host" for where in cache.values()):
            self.line("image cache: " + ", ".join(f"{split} in {where}" for split, where in cache.items()))
        if e.restarted:
            self.line(f"no checkpoint yet: started over from epoch 0 ({e.discarded_events} earlier events kept in "
                      "events.discarded.jsonl)")

    def on_loading(self, e: Loading) -> None:
        label = f"- decoding {e.split}"
        if self.task is None:
            self.progress.start()
            self.task = self.progress.add_task("decode", total=e.total, epoch=label, loss="-", speed="-")
        self.progress.update(self.task, completed=e.done, total=e.total, epoch=label)
        if e.done == e.total:
            self._close_bar()

    def on_resume(self, e: Resume) -> None:
        if e.epochs is not None:
            self.epochs = e.epochs
        self.training = bool(e.iteration)
        if e.iteration:
            self.line(f"resumed in epoch {epoch_text(e.from_epoch + 1, self.epochs)} after iteration {e.iteration}")
        else:
            self.line(f"resumed after epoch {epoch_text(e.from_epoch, self.epochs)}")

    def on_epoch_start(self, e: EpochStart) -> None:
        self.cluster, self.evaluation, self.loss = None, None, None
        self.training = self.kind == "supervised"  # an unsupervised epoch clusters first

    def on_cluster(self, e: Cluster) -> None:
        self.cluster = e
        self.training = True

    def on_iter(self, e: Iter) -> None:
        self.loss = e.loss
        self.training = e.iteration < e.total_iterations
        if self.task is None:
            self.progress.start()
            self.task = self.progress.add_task("train", total=e.total_iterations, epoch=e.epoch, loss="-", speed="-")
        self.progress.update(self.task, completed=e.iteration, total=e.total_iterations, epoch=e.epoch,
                             loss=f"{e.loss:.3f}", speed=f"{e.images_per_s:.0f}")

    def _close_bar(self) -> None:
        if self.task is not None:
            self.progress.remove_task(self.task)
            self.progress.stop()
            self.task = None

    def on_eval(self, e: Eval) -> None:
        self.evaluation = e
        if e.epoch == 0:
            self.line(f"epoch 0 (before training): mAP {pct(e.mAP)}  R1 {pct(e.rank1)}")

    def on_epoch_end(self, e: EpochEnd) -> None:
        self._close_bar()
        parts = [f"epoch {epoch_text(e.epoch, self.epochs)}"]
        c = self.cluster
        if c:
            parts.append(f"clusters {c.clusters}")
            parts.append(f"outliers {c.outliers_before}->{c.outliers_after} (OAE +{c.oae_assigned})")
            if c.cross_camera is not None:
                parts.append(f"x-cam {pct(c.cross_camera, 0)}%")
        if self.loss is not None:
            parts.append(f"loss {self.loss:.3f}")
        if self.evaluation:
            parts.append(f"mAP {pct(self.evaluation.mAP)}  R1 {pct(self.evaluation.rank1)}")
        parts.append(duration(e.seconds))
        self.line("  ".join(parts))

    def on_warning(self, e: HealthWarning) -> None:
        self._close_bar()
        self.line(f"[yellow]warning:[/] {escape(e.message)}")

    def on_stopping(self, e: Stopping) -> None:
        after = "after this iteration" if self.training else "when this step (loading, clustering, evaluation) ends"
        again = "Ctrl-C again" if e.signal == "SIGINT" else f"{e.signal} again"
        self.line(f"[yellow]stopping[/] {after}; {again} to stop now")

    def on_stopped(self, e: Stopped) -> None:
        self._close_bar()
        if e.iteration is None:  # at once: the reason says which checkpoint a resume starts from
            self.line(f"[yellow]epoch {e.epoch}[/]: {escape(e.reason)}")
            return
        where = f"epoch {e.epoch}" + (f" iteration {e.iteration}" if e.iteration else "")
        command = resume_command(run_dir(self.run, self.runs_dir)) if self.run else "oaecmlr resume NAME"
        self.line(f"[yellow]stopped[/] at {where} ({escape(e.reason)}), with a checkpoint; `{command}` continues from there")

    def on_failure(self, e: Failure) -> None:
        self._close_bar()

    def on_end(self, e: End) -> None:
        self._close_bar()
        if e.best:
            self.line(f"[green]finished[/]: best mAP {pct(e.best.get('mAP'))}  R1 {pct(e.best.get('rank1'))} "
                      f"(epoch {e.best.get('epoch', '-')})")


HANDLERS = {Start: ConsoleReporter.on_start, Loading: ConsoleReporter.on_loading, Resume: ConsoleReporter.on_resume,
            EpochStart: ConsoleReporter.on_epoch_start, Cluster: ConsoleReporter.on_cluster,
            Iter: ConsoleReporter.on_iter, Eval: ConsoleReporter.on_eval, EpochEnd: ConsoleReporter.on_epoch_end,
            HealthWarning: ConsoleReporter.on_warning, Stopping: ConsoleReporter.on_stopping,
            Stopped: ConsoleReporter.on_stopped,
            Failure: ConsoleReporter.on_failure, End: ConsoleReporter.on_end}
