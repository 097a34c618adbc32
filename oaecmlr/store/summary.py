"""What a run's events say about it, folded one event at a time: the one summary behind `oaecmlr
runs`, `show`, `compare`, the dashboard and the ablation script.

`RunFold` takes events in O(1) each (the dashboard feeds it only what a tail read is new);
`RunFold.summary()` freezes the totals into a `RunSummary`. `RunFold(history=False)` keeps only what
a listing shows (the best and the last evaluation, the last clustering, no losses), so that
`oaecmlr runs` folds a file of any size in constant memory. Definitions, shared by every view:
- epoch: the last finished epoch; epochs: the target, as last set (start, or `resume --epochs`);
- best: the evaluation after epoch 0 with the highest mAP (the first of equals), as best.pt;
- final: the last evaluation;
- elapsed: time spent running: from each start or resume to the last event before the next resume
  (a run that sat stopped for a day did not train for a day);
- failure: the last failure not followed by a resume.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from oaecmlr.store.schema import (
    Cluster,
    End,
    EpochEnd,
    Eval,
    Event,
    Failure,
    HealthWarning,
    Iter,
    Resume,
    Start,
    Stopped,
    kind_of,
    to_record,
)


@dataclass(frozen=True)
class RunSummary:
    name: str
    path: str
    status: str  # running, starting, finished, failed, stopped, stale (see store.runs.live_state)
    start: Start | None = None
    epochs: int | None = None
    epoch: int = 0
    evaluations: tuple[Eval, ...] = ()
    clusters: tuple[Cluster, ...] = ()
    losses: tuple[tuple[int, float], ...] = ()  # (iteration counted over the whole run, loss)
    last_iter: Iter | None = None
    warnings: tuple[HealthWarning, ...] = ()
    failure: Failure | None = None
    stopped: Stopped | None = None
    end: End | None = None
    last_event: str | None = None
    last_time: float | None = None
    elapsed: float | None = None
    resumes: int = 0
    events: int = 0
    gpus: tuple[dict, ...] = ()  # the workers' GPUs as last started or resumed (provenance; the dashboard's NVML map)

    def elapsed_until(self, now: float) -> float | None:
        """Time spent running as of `now`: a running run's current stretch lasts until now, not until
        its last event (`runs` and the dashboard say the same)."""
        if self.elapsed is None or self.last_time is None or self.status not in ("running", "starting"):
            return self.elapsed
        return self.elapsed + max(0.0, now - self.last_time)

    @property
    def dataset(self) -> str | None:
        return self.start.dataset if self.start else None

    @property
    def started(self) -> float | None:
        return self.start.time if self.start else None

    @property
    def best(self) -> Eval | None:
        return max((e for e in self.evaluations if e.epoch > 0), key=lambda e: e.mAP, default=None)

    @property
    def final(self) -> Eval | None:
        return self.evaluations[-1] if self.evaluations else None

    @property
    def latest_clusters(self) -> Cluster | None:
        return self.clusters[-1] if self.clusters else None

    @property
    def finished(self) -> bool:
        return self.end is not None

    def to_json(self) -> dict:
        """The summary as plain data (`oaecmlr show --format json`)."""
        best, final = self.best, self.final
        start = self.start
        return {
            "name": self.name, "path": self.path, "status": self.status, "dataset": self.dataset,
            "epoch": self.epoch, "epochs": self.epochs, "started": self.started, "last_time": self.last_time,
            "elapsed": self.elapsed, "last_event": self.last_event, "world_size": start.world_size if start else None,
            "evaluations": [_eval_json(e) for e in self.evaluations],
            "clusters": [_cluster_json(c) for c in self.clusters],
            "best": None if best is None else _eval_json(best), "final": None if final is None else _eval_json(final),
            "last_iteration": None if self.last_iter is None else _fields(self.last_iter),
            "failure": None if self.failure is None else _fields(self.failure),
            "warnings": [_fields(w) for w in self.warnings],
            "provenance": start.provenance if start else {},
        }


def _fields(event: Event) -> dict:
    return to_record(event)


def _eval_json(e: Eval) -> dict:
    return {k: getattr(e, k) for k in ("epoch", "mAP", "rank1", "rank5", "rank10", "mINP", "time", "rerank")}


def _cluster_json(c: Cluster) -> dict:
    record = _fields(c)
    record.pop("event")
    return record


@dataclass
class RunFold:
    """Running totals of one run's events (feed with `add`, read with `summary`)."""

    start: Start | None = None
    epochs: int | None = None
    epoch: int = 0
    evaluations: list[Eval] = field(default_factory=list)
    clusters: list[Cluster] = field(default_factory=list)
    losses: list[tuple[int, float]] = field(default_factory=list)
    last_iter: Iter | None = None
    warnings: list[HealthWarning] = field(default_factory=list)
    failure: Failure | None = None
    stopped: Stopped | None = None
    end: End | None = None
    last_event: str | None = None
    last_time: float | None = None
    resumes: int = 0
    count: int = 0
    history: bool = True  # False: keep the best and last evaluation and the last clustering only
    gpus: tuple[dict, ...] = ()
    _closed: float = 0.0  # running time of the segments before the current one
    _segment_start: float | None = None
    _best: Eval | None = None  # history=False: the best evaluation after epoch 0 so far

    def add(self, events: list[Event] | tuple[Event, ...]) -> RunFold:
        for event in events:
            self.count += 1
            self.last_event = kind_of(event)
            if isinstance(event, (Start, Resume)):
                if self._segment_start is not None and self.last_time is not None:
                    self._closed += max(0.0, self.last_time - self._segment_start)
                self._segment_start = event.time
            self.last_time = event.time
            if isinstance(event, Start):
                if self.start is None or event.restarted:
                    self.start = event
                self.epochs = event.epochs
                self.gpus = tuple(event.provenance.get("gpus") or ())
            elif isinstance(event, Resume):
                self.resumes += 1
                self.gpus = tuple(event.gpus)
                self.failure = self.stopped = self.end = None
                if event.epochs is not None:
                    self.epochs = event.epochs
            elif isinstance(event, Eval):
                self._add_evaluation(event)
            elif isinstance(event, Iter):
                self.last_iter = event
                if self.history:
                    self.losses.append(((event.epoch - 1) * event.total_iterations + event.iteration, event.loss))
            elif isinstance(event, Cluster):
                if not self.history:
                    self.clusters.clear()
                self.clusters.append(event)
            elif isinstance(event, EpochEnd):
                self.epoch = max(self.epoch, event.epoch)
            elif isinstance(event, HealthWarning):
                if not self.history:
                    del self.warnings[:-1]  # the last two
                self.warnings.append(event)
            elif isinstance(event, Failure):
                self.failure = event
            elif isinstance(event, Stopped):
                self.stopped = event
            elif isinstance(event, End):
                self.end = event
        return self

    def _add_evaluation(self, event: Eval) -> None:
        if self.history:
            self.evaluations.append(event)
            return
        # the best (the first of equal mAP, after epoch 0) and the last, in the order they came
        if event.epoch > 0 and (self._best is None or event.mAP > self._best.mAP):
            self._best = event
        self.evaluations[:] = [e for e in (self._best, event) if e is not None]
        if len(self.evaluations) == 2 and self.evaluations[0] is self.evaluations[1]:
            self.evaluations.pop()

    @property
    def elapsed(self) -> float | None:
        if self._segment_start is None or self.last_time is None:
            return None
        return self._closed + max(0.0, self.last_time - self._segment_start)

    def summary(self, name: str, path: str, status: str) -> RunSummary:
        return RunSummary(name=name, path=path, status=status, start=self.start, epochs=self.epochs, epoch=self.epoch,
                          evaluations=tuple(self.evaluations), clusters=tuple(self.clusters),
                          losses=tuple(self.losses), last_iter=self.last_iter, warnings=tuple(self.warnings),
                          failure=self.failure, stopped=self.stopped, end=self.end, last_event=self.last_event,
                          last_time=self.last_time, elapsed=self.elapsed, resumes=self.resumes, events=self.count,
                          gpus=self.gpus)
