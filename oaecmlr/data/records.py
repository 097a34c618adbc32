"""Plain records for re-ID image lists, and the one error type for data problems.

A dataset is an `ImageSplits`: train (unlabelled for the method, pids kept only to score
clustering), query and gallery lists of `Record(path, pid, camid)`. camid is 0-based.
"""

from __future__ import annotations

from dataclasses import dataclass

SPLITS = ("train", "query", "gallery")




class DatasetCountWarning(UserWarning):
    """A split's size differs from the standard release of that dataset."""


@dataclass(frozen=True)
class Record:
    path: str
    pid: int
    camid: int


def num_ids(records: list[Record]) -> int:
    return len({r.pid for r in records})


def num_cams(records: list[Record]) -> int:
    return len({r.camid for r in records})


@dataclass
class ImageSplits:
    name: str
    train: list[Record]
    query: list[Record]
    gallery: list[Record]
    root: str | None

    def split(self, split: str) -> list[Record]:
        if split not in SPLITS:
            raise ValueError(f"unknown split {split!r}; choose one of {', '.join(SPLITS)}")
        return getattr(self, split)

    def stats(self) -> dict[str, dict[str, int]]:
        """{split: {"images", "ids", "cams"}} for summaries and logs."""
        return {
            s: {"images": len(recs), "ids": num_ids(recs), "cams": num_cams(recs)}
            for s in SPLITS
            for recs in [self.split(s)]
        }
