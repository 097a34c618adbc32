"""What the dashboard knows of a run, folded event by event (never by re-reading the file).

`RunFold` accumulates the events of one run in O(new events); `snapshot()` freezes it into a
`RunSnapshot`, the immutable value that messages carry to the screens. The derived numbers follow
`oaecmlr.store.runs.summarize` (best = highest mAP, epoch = last finished epoch, elapsed = last
event time - start time).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True)
class Evaluation:
    epoch: int
    mAP: float
    rank1: float


@dataclass(frozen=True)
class ClusterStats:
    epoch: int
    clusters: int
    outliers: int
    oae_assigned: int
    # against ground truth (never used by training); None where the dataset has none
    purity: float | None = None
    nmi: float | None = None
    oae_precision: float | None = None
    cross_camera: float | None = None  # share of clusters holding more than one camera


@dataclass(frozen=True)
class Progress:
    epoch: int
    iteration: int
    total: int
    images_per_s: float | None


@dataclass(frozen=True)
class RunSnapshot:
    name: str
    path: str
    status: str
    dataset: str | None = None
    epoch: int = 0
    epochs: int | None = None
    started: float | None = None
    last_time: float | None = None
    best: Evaluation | None = None
    evaluations: tuple[Evaluation, ...] = ()
    losses: tuple[tuple[float, float], ...] = ()  # (global iteration, loss)
    clusters: tuple[ClusterStats, ...] = ()
    progress: Progress | None = None
    error: str | None = None
    events: int = 0

    @property
    def elapsed(self) -> float | None:
        return self.last_time - self.started if self.started and self.last_time else None

    @property
    def latest_clusters(self) -> int | None:
        return self.clusters[-1].clusters if self.clusters else None


@dataclass
class RunFold:
    """Running totals of one run's events."""

    dataset: str | None = None
    epochs: int | None = None
    started: float | None = None
    last_time: float | None = None
    last_event: str | None = None
    epoch: int = 0
    best: Evaluation | None = None
    evaluations: list[Evaluation] = field(default_factory=list)
    losses: list[tuple[float, float]] = field(default_factory=list)
    clusters: list[ClusterStats] = field(default_factory=list)
    last_iter: dict | None = None
    error: str | None = None
    count: int = 0

    def add(self, events: list[dict[str, Any]]) -> None:
        for e in events:
            self.count += 1
            kind = e.get("event")
            self.last_event = kind
            if isinstance(e.get("time"), (int, float)):
                self.last_time = e["time"]
            handler = getattr(self, f"_on_{kind}", None)
            if handler is not None:
                try:
                    handler(e)
                except (KeyError, TypeError, ValueError):
                    pass  # an event missing a field still counts, it just adds no numbers

    def _on_start(self, e: dict) -> None:
        if self.started is None:
            self.started = e.get("time")
        self.dataset = e.get("dataset", self.dataset)
        self.epochs = e.get("epochs", self.epochs)

    def _on_eval(self, e: dict) -> None:
        evaluation = Evaluation(int(e["epoch"]), float(e.get("mAP") or 0.0), float(e.get("rank1") or 0.0))
        self.evaluations.append(evaluation)
        # Epoch 0 is the untrained starting point, never the best (as in summarize and best.pt).
        if evaluation.epoch > 0 and (self.best is None or evaluation.mAP > self.best.mAP):
            self.best = evaluation

    def _on_iter(self, e: dict) -> None:
        self.last_iter = e  # Progress is built when a snapshot is taken, not per event
        loss = e.get("loss")
        if loss is not None:
            self.losses.append(((e["epoch"] - 1) * (e.get("total_iterations") or 0) + e["iteration"], float(loss)))

    def _on_cluster(self, e: dict) -> None:
        self.clusters.append(ClusterStats(int(e["epoch"]), int(e.get("clusters") or 0),
                                          int(e.get("outliers_after") or 0), int(e.get("oae_assigned") or 0),
                                          *(_fraction(e.get(k)) for k in ("purity", "nmi", "oae_precision", "cross_camera"))))

    def _on_epoch_end(self, e: dict) -> None:
        self.epoch = max(self.epoch, int(e["epoch"]))

    def _on_failure(self, e: dict) -> None:
        self.error = str(e.get("error"))

    def _on_resume(self, e: dict) -> None:
        self.error = None

    def progress(self) -> Progress | None:
        e = self.last_iter
        if e is None:
            return None
        return Progress(int(e["epoch"]), int(e["iteration"]), int(e.get("total_iterations") or 0), e.get("images_per_s"))

    def snapshot(self, name: str, path: str, status: str) -> RunSnapshot:
        return RunSnapshot(name=name, path=path, status=status, dataset=self.dataset, epoch=self.epoch,
                           epochs=self.epochs, started=self.started, last_time=self.last_time, best=self.best,
                           evaluations=tuple(self.evaluations), losses=tuple(self.losses),
                           clusters=tuple(self.clusters), progress=self.progress(), error=self.error,
                           events=self.count)


def _fraction(value) -> float | None:
    return float(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else None
