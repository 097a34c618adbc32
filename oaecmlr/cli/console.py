"""Live console output of a foreground run, driven by its events: a Rich progress bar per epoch and
a one-line summary per epoch (clusters, outliers, OAE, loss, mAP, R1)."""

from __future__ import annotations

from typing import Any

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn


class ConsoleReporter:
    def __init__(self, console: Console | None = None):
        self.console = console or Console(stderr=True)
        self.progress = Progress(TextColumn("[bold]epoch {task.fields[epoch]}"), BarColumn(), MofNCompleteColumn(),
                                 TextColumn("loss {task.fields[loss]}"), TextColumn("{task.fields[speed]} img/s"),
                                 TimeRemainingColumn(), console=self.console, transient=True)
        self.task = None
        self.epochs = None
        self.cluster: dict[str, Any] = {}
        self.evaluation: dict[str, Any] | None = None
        self.loss = None

    def __call__(self, event: dict[str, Any]) -> None:
        kind = event["event"]
        handler = getattr(self, f"on_{kind}", None)
        if handler:
            handler(event)

    def on_start(self, e):
        self.epochs = e.get("epochs")
        data = e.get("data") or {}
        train = data.get("train", {})
        self.console.print(f"[bold]{e.get('run')}[/]: {e.get('kind')} on {e.get('dataset')} "
                           f"({train.get('images', '?')} train images), {e.get('arch')}, {e.get('device')}, "
                           f"world size {e.get('world_size')}")
        cache = data.get("image_cache") or {}
        if any(where != "host" for where in cache.values()):
            self.console.print("image cache: " + ", ".join(f"{split} in {where}" for split, where in cache.items()))
        if e.get("restarted"):
            self.console.print(f"no checkpoint yet: started over from epoch 0 ({e.get('discarded_events', 0)} earlier "
                               "events kept in events.discarded.jsonl)")

    def on_loading(self, e):
        if self.task is None:
            self.progress.start()
            self.task = self.progress.add_task("decode", total=e["total"], epoch=f"- decoding {e['split']}",
                                               loss="-", speed="-")
        self.progress.update(self.task, completed=e["done"], total=e["total"], epoch=f"- decoding {e['split']}")
        if e["done"] == e["total"]:
            self._close_bar()

    def on_resume(self, e):
        self.console.print(f"resumed after epoch {e['from_epoch']}" + (f", iteration {e['iteration']}" if e.get("iteration") else ""))

    def on_epoch_start(self, e):
        self.cluster, self.evaluation, self.loss = {}, None, None

    def on_cluster(self, e):
        self.cluster = e

    def on_iter(self, e):
        self.loss = e["loss"]
        if self.task is None:
            self.progress.start()
            self.task = self.progress.add_task("train", total=e["total_iterations"], epoch=e["epoch"], loss="-", speed="-")
        self.progress.update(self.task, completed=e["iteration"], total=e["total_iterations"], epoch=e["epoch"],
                             loss=f"{e['loss']:.3f}", speed=f"{e['images_per_s']:.0f}")

    def _close_bar(self):
        if self.task is not None:
            self.progress.remove_task(self.task)
            self.progress.stop()
            self.task = None

    def on_eval(self, e):
        self.evaluation = e
        if e["epoch"] == 0:
            self.console.print(f"epoch 0 (before training): mAP {100 * e['mAP']:.1f}  R1 {100 * e['rank1']:.1f}")

    def on_epoch_end(self, e):
        self._close_bar()
        c = self.cluster
        parts = [f"epoch {e['epoch']}/{self.epochs}"]
        if c:
            parts.append(f"clusters {c['clusters']}")
            parts.append(f"outliers {c['outliers_before']}->{c['outliers_after']} (OAE +{c['oae_assigned']})")
        if self.loss is not None:
            parts.append(f"loss {self.loss:.3f}")
        if self.evaluation:
            parts.append(f"mAP {100 * self.evaluation['mAP']:.1f}  R1 {100 * self.evaluation['rank1']:.1f}")
        parts.append(f"{e['seconds']:.0f}s")
        self.console.print("  ".join(parts), soft_wrap=True)

    def on_stopped(self, e):
        self._close_bar()
        self.console.print(f"[yellow]stopped[/] at epoch {e['epoch']} iteration {e['iteration']} ({e.get('reason')}); "
                           "resume with `oaecmlr resume`")

    def on_failure(self, e):
        self._close_bar()

    def on_end(self, e):
        self._close_bar()
        best = e.get("best")
        if best:
            self.console.print(f"[green]finished[/]: best mAP {100 * best['mAP']:.1f}  R1 {100 * best['rank1']:.1f} "
                               f"(epoch {best['epoch']})")
