"""Evaluation results as types: `Metrics` (the scores of one evaluation), `Evaluation` (what
`engine.evaluate.evaluate` returns: the scores and what they were computed on) and `Best` (the best
evaluation after epoch 0, as the loop keeps it).

Files hold them as plain dicts, in the layout they always had: events.jsonl (`Eval` and `End.best`,
see `schema.py`) and checkpoints (`best`, `metrics`; read with `weights_only=True`, which loads no
class of ours). `to_dict` writes that layout and `from_dict` reads it, from old files too.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

SCORES = ("mAP", "rank1", "rank5", "rank10", "mINP")


@dataclass(frozen=True, kw_only=True)
class Metrics:
    """mAP, rank-1/5/10 and mINP, fractions in [0, 1] (docs/method.md section 5)."""

    mAP: float
    rank1: float
    rank5: float
    rank10: float
    mINP: float

    @classmethod
    def from_dict(cls, fields: Mapping[str, Any]) -> Metrics:
        """The scores among `fields` (an evaluation's dict, an `Eval` event's record, a checkpoint's)."""
        return cls(**{name: fields[name] for name in SCORES})

    def to_dict(self) -> dict[str, float]:
        return {name: getattr(self, name) for name in SCORES}


@dataclass(frozen=True, kw_only=True)
class Evaluation:
    """One scoring of a query/gallery split: its metrics, the counts behind them, whether the
    distances were re-ranked, and the seconds it took."""

    metrics: Metrics
    num_query: int
    num_gallery: int
    skipped_queries: int
    rerank: bool
    seconds: float

    def to_dict(self) -> dict[str, Any]:
        """The flat layout of the `eval` event and of `oaecmlr eval --format json` (epoch aside)."""
        fields = {f.name: getattr(self, f.name) for f in dataclasses.fields(self) if f.name != "metrics"}
        return {**self.metrics.to_dict(), **fields}


@dataclass(frozen=True, kw_only=True)
class Best:
    """The best evaluation after epoch 0 (by mAP) and the epoch it followed."""

    epoch: int
    metrics: Metrics

    @classmethod
    def from_dict(cls, fields: Mapping[str, Any] | None) -> Best | None:
        """A checkpoint's `best` or an `end` event's, as written: {"epoch", "mAP", ...}; None stays None."""
        if fields is None:
            return None
        return cls(epoch=fields["epoch"], metrics=Metrics.from_dict(fields))

    def to_dict(self) -> dict[str, Any]:
        return {"epoch": self.epoch, **self.metrics.to_dict()}
