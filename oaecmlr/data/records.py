"""Plain records for re-ID image lists, and the warning categories of the dataset checks.

A dataset is an `ImageSplits`: train (unlabelled for the method, pids kept only to score
clustering), query and gallery lists of `Record(path, pid, camid)`. camid is 0-based.
"""

from __future__ import annotations

from dataclasses import dataclass

SPLITS = ("train", "query", "gallery")


class DatasetCountWarning(UserWarning):
    """A split's size differs from the standard release of that dataset."""

    label = "warning"  # how a command line shows it: `warning: MESSAGE`


class DatasetNote(UserWarning):
    """Worth knowing, not a problem: the folder is a subset of the standard release (e.g. a CUHK03
    subset of CUHK03-NP), or it is not the CUHK03-NP variant that was asked for.

    Not a `DatasetCountWarning`: filters on that class leave notes alone. A command line shows it
    as one line `note: MESSAGE` (read `label`).
    """

    label = "note"


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
    variant: str | None = None  # cuhk03: the CUHK03-NP variant, "labeled" or "detected"; else None

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
