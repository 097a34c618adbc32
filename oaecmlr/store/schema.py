"""The events of `events.jsonl`, one frozen dataclass per kind: the contract between a training run
and everything that watches it (the CLI, the dashboard, compare, scripts with jq).

On disk an event is one JSON object: `{"event": KIND, "time": UNIX_SECONDS, FIELD: VALUE, ...}`.
Writers build these classes; readers parse lines back into them with `parse_event`, which accepts
unknown fields (ignored) and unknown kinds (`UnknownEvent`, so newer files stay readable), and
refuses a known kind whose fields have the wrong types or lie out of range (`EventError`; the
ranges are `oaecmlr.store.ondisk.EVENT_RULES`), so no reader ever computes with a string where a
number belongs, or with NaN, or with a 400-digit integer. Fractions (mAP, purity, ...) are in [0, 1];
texts come back with their control characters escaped.

Schema versions (the `schema` field of `start`): 1 - the first contract; 2 - typed classes,
`warning` events, provenance in `start`, camera diagnostics in `cluster`; 3 - OAE and CMLR diagnostics
in `cluster` (all optional: older files parse).
"""

from __future__ import annotations

import dataclasses
import types
import typing
from dataclasses import dataclass, field
from typing import Any, ClassVar

from oaecmlr.store.metrics import Metrics
from oaecmlr.store.ondisk import event_value, range_check, shown

SCHEMA_VERSION = 3


class EventError(ValueError):
    """A line that is an event of a known kind, with a missing field or a field of the wrong type."""


@dataclass(frozen=True, kw_only=True)
class Event:
    EVENT: ClassVar[str] = ""
    time: float = 0.0  # set by the writer


@dataclass(frozen=True, kw_only=True)
class Start(Event):
    """First event of a run (again after a restart from scratch)."""

    EVENT: ClassVar[str] = "start"
    schema: int
    kind: str  # "usl" or "supervised"
    run: str
    dataset: str
    epochs: int
    iterations: int
    arch: str
    world_size: int
    per_rank_batch: int
    global_batch: int
    lr: float
    device: str
    seed: int
    pid: int | None = None
    host: str | None = None
    data: dict = field(default_factory=dict)  # per split: images, ids, cams; image_cache placement
    restarted: bool = False  # a run killed before its first checkpoint, started over
    discarded_events: int = 0
    provenance: dict = field(default_factory=dict)  # git commit, versions, host, GPU


@dataclass(frozen=True, kw_only=True)
class Loading(Event):
    """Image decoding progress: shown on the console, never written to events.jsonl."""

    EVENT: ClassVar[str] = "loading"
    split: str
    done: int
    total: int


@dataclass(frozen=True, kw_only=True)
class Stopping(Event):
    """A first SIGINT or SIGTERM was received and a stop is on its way: shown on the console at
    once, never written to events.jsonl (the `stopped` event follows)."""

    EVENT: ClassVar[str] = "stopping"
    signal: str


@dataclass(frozen=True, kw_only=True)
class Eval(Event):
    """Query/gallery evaluation after `epoch` (0: before any training)."""

    EVENT: ClassVar[str] = "eval"
    epoch: int
    mAP: float
    rank1: float
    rank5: float
    rank10: float
    mINP: float
    num_query: int = 0
    num_gallery: int = 0
    skipped_queries: int = 0
    rerank: bool = False
    seconds: float = 0.0

    @property
    def metrics(self) -> Metrics:
        return Metrics(mAP=self.mAP, rank1=self.rank1, rank5=self.rank5, rank10=self.rank10, mINP=self.mINP)


@dataclass(frozen=True, kw_only=True)
class EpochStart(Event):
    EVENT: ClassVar[str] = "epoch_start"
    epoch: int
    lr: float


@dataclass(frozen=True, kw_only=True)
class Cluster(Event):
    """The pseudo-labels of an epoch: DBSCAN, OAE, CMLR, and diagnostics against ground truth
    (purity, NMI, OAE precision: None where the dataset has no identities; never fed to training)."""

    EVENT: ClassVar[str] = "cluster"
    epoch: int
    clusters: int
    outliers_before: int
    outliers_after: int
    oae_assigned: int
    oae_passed_neighbourhood: int = 0
    cmlr_entropy: float = 0.0
    cmlr_weight: float = 0.0
    size_histogram: dict = field(default_factory=dict)
    knn_backend: str = ""
    timings: dict = field(default_factory=dict)  # seconds per stage
    cross_camera: float | None = None  # share of clusters holding more than one camera
    cameras_per_cluster: float | None = None  # mean number of cameras in a cluster
    cross_camera_images: float | None = None  # share of training images whose cluster holds another camera
    purity: float | None = None
    nmi: float | None = None
    oae_precision: float | None = None  # assigned outliers carrying the majority identity of the cluster joined
    oae_pairwise_precision: float | None = None  # ... carrying the identity of their nearest clustered instance j*
    oae_ceiling: float | None = None  # outliers whose identity is the majority of some cluster
    oae_same_camera: float | None = None  # assigned (outlier, j*) pairs from one camera
    oae_assigned_share: float | None = None  # assigned outliers over all outliers
    cmlr_mass_clean: float | None = None  # the training target's mass on the right clusters, clean samples
    cmlr_mass_mislabelled: float | None = None  # ... mislabelled samples (one-hot: 1 and 0)
    cmlr_auroc: float | None = None  # AUROC of 1 - q_i[y_i] for finding mislabelled samples
    cmlr_kl: float | None = None  # mean KL(q || the model's prediction at the epoch's start), nats
    cmlr_mislabelled: float | None = None  # clustered samples whose identity is not their cluster's majority


@dataclass(frozen=True, kw_only=True)
class Iter(Event):
    """Training progress every `run.log_every` iterations: the mean loss since the previous one."""

    EVENT: ClassVar[str] = "iter"
    epoch: int
    iteration: int
    total_iterations: int
    loss: float
    lr: float
    images_per_s: float = 0.0


@dataclass(frozen=True, kw_only=True)
class EpochEnd(Event):
    EVENT: ClassVar[str] = "epoch_end"
    epoch: int
    seconds: float = 0.0


@dataclass(frozen=True, kw_only=True)
class HealthWarning(Event):
    """Something that makes the numbers doubtful (an exploding weight norm, a degenerate clustering,
    a loss stuck at 0); `what` is a short key, `message` says what to change."""

    EVENT: ClassVar[str] = "warning"
    what: str
    message: str
    epoch: int | None = None


@dataclass(frozen=True, kw_only=True)
class Stopped(Event):
    """A graceful stop (SIGTERM, Ctrl-C, `oaecmlr stop`) inside an epoch; `resume` continues there."""

    EVENT: ClassVar[str] = "stopped"
    epoch: int
    iteration: int | None = None  # the next iteration to run; None after a stop at once (a second signal)
    reason: str = ""


@dataclass(frozen=True, kw_only=True)
class Failure(Event):
    EVENT: ClassVar[str] = "failure"
    error: str
    epoch: int | None = None
    rank: int | None = None


@dataclass(frozen=True, kw_only=True)
class Resume(Event):
    EVENT: ClassVar[str] = "resume"
    from_epoch: int
    iteration: int = 0
    discarded_events: int = 0
    world_size: int = 1
    pid: int | None = None
    epochs: int | None = None  # the target number of epochs from here on
    gpus: list = field(default_factory=list)  # the workers' GPUs from here on (name, capability, NVML uuid)


@dataclass(frozen=True, kw_only=True)
class End(Event):
    """The run finished all its epochs; `best` is the best evaluation after epoch 0."""

    EVENT: ClassVar[str] = "end"
    status: str = "finished"
    best: dict | None = None


@dataclass(frozen=True, kw_only=True)
class UnknownEvent(Event):
    """An event of a kind this version does not know (written by a newer one): kept, not interpreted."""

    event: str
    fields: dict = field(default_factory=dict)


@dataclass(frozen=True, kw_only=True)
class Skimmed(Event):
    """An event a reader only counted: its kind and its (checked) time; its other fields were not
    read (`EventTail(skim=...)`: `oaecmlr runs` needs no more of the many `iter` events)."""

    event: str


KINDS: dict[str, type[Event]] = {cls.EVENT: cls for cls in (Start, Loading, Stopping, Eval, EpochStart, Cluster, Iter,
                                                            EpochEnd, HealthWarning, Stopped, Failure, Resume, End)}


def kind_of(event: Event) -> str:
    return event.event if isinstance(event, (UnknownEvent, Skimmed)) else event.EVENT


def to_record(event: Event) -> dict[str, Any]:
    """The JSON object of an event (kind first, then time, then the fields in declaration order)."""
    if isinstance(event, UnknownEvent):
        return {"event": event.event, "time": event.time, **event.fields}
    values = {f.name: getattr(event, f.name) for f in dataclasses.fields(event) if f.name != "time"}
    return {"event": event.EVENT, "time": event.time, **values}


def parse_event(raw: Any) -> Event:
    """An event from its JSON object; EventError when it is not one or a field has the wrong type."""
    if not isinstance(raw, dict) or not isinstance(raw.get("event"), str):
        raise EventError("not an event object")
    kind, wrong = event_value("kind", raw["event"])
    if wrong:
        raise EventError(f"event must be {wrong}, got {shown(raw['event'])}")
    time, wrong = event_value("time", raw.get("time", 0.0))
    if wrong:
        raise EventError(f"{kind}: time must be {wrong}, got {shown(raw.get('time'))}")
    cls = KINDS.get(kind)
    if cls is None:
        return UnknownEvent(time=float(time), event=kind, fields={k: v for k, v in raw.items() if k not in ("event", "time")})
    values = {}
    for name, required, check, hint, in_range in _plan(cls):
        if name not in raw:
            if required:
                raise EventError(f"{kind}: missing field {name!r}")
            continue
        value = raw[name]
        if not check(value):
            raise EventError(f"{kind}: {name} must be {_describe(hint)}, got {shown(value)}")
        if value is not None and in_range is not None:
            value, wrong = in_range(value)
            if wrong:
                raise EventError(f"{kind}: {name} must be {wrong}, got {shown(raw[name])}")
        values[name] = float(value) if hint is float and isinstance(value, int) else value
    return cls(time=float(time), **values)


_PLANS: dict[type, list] = {}


def _plan(cls: type[Event]) -> list[tuple[str, bool, typing.Callable[[Any], bool], Any, typing.Callable | None]]:
    """(name, required, type check, hint, range check) of each field but time, built once per class:
    parsing is the dashboard's start-up cost."""
    if cls not in _PLANS:
        hints = typing.get_type_hints(cls)
        _PLANS[cls] = [(f.name, f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING,
                        type_check(hints[f.name]), hints[f.name], range_check(f.name, _base(hints[f.name])))
                       for f in dataclasses.fields(cls) if f.name != "time"]
    return _PLANS[cls]


def _base(hint: Any) -> Any:
    """int for `int | None`, the hint itself otherwise."""
    if typing.get_origin(hint) in (typing.Union, types.UnionType):
        args = [arg for arg in typing.get_args(hint) if arg is not type(None)]
        return args[0] if len(args) == 1 else hint
    return hint


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _is_integer(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def type_check(hint: Any) -> typing.Callable[[Any], bool]:
    """A predicate for the JSON values a field of this hint accepts: a float field takes any number,
    an int field any integer (never a bool), a union any of its members, None only null."""
    origin = typing.get_origin(hint)
    if origin in (typing.Union, types.UnionType):
        checks = tuple(type_check(arg) for arg in typing.get_args(hint))
        return lambda value: any(check(value) for check in checks)
    if hint is type(None):
        return lambda value: value is None
    if hint is float:
        return _is_number
    if hint is int:
        return _is_integer
    expected = origin or hint
    return lambda value: isinstance(value, expected)


def _describe(hint: Any) -> str:
    if typing.get_origin(hint) in (typing.Union, types.UnionType):
        return " or ".join(_describe(arg) for arg in typing.get_args(hint))
    return {float: "a number", int: "an integer", str: "text", bool: "true or false", dict: "an object",
            type(None): "null"}.get(hint, getattr(hint, "__name__", str(hint)))
