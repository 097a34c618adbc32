"""The images of a run as uint8 tensors at the training resolution, decoded once and cached."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch

from oaecmlr.data.cache import load_images
from oaecmlr.data.datasets import load_dataset
from oaecmlr.data.records import DatasetError, ImageSplits, Record
from oaecmlr.data.synthetic import make_synthetic
from oaecmlr.engine.config import DataSection


@dataclass
class Split:
    images: torch.Tensor  # (N, 3, H, W) uint8
    pids: np.ndarray  # ground truth: evaluation and diagnostics only, never training
    camids: np.ndarray

    def __len__(self) -> int:
        return self.images.shape[0]


@dataclass
class RunData:
    name: str
    train: Split
    query: Split
    gallery: Split
    stats: dict


def _split(records: list[Record], images: torch.Tensor) -> Split:
    return Split(images, np.array([r.pid for r in records], dtype=np.int64),
                 np.array([r.camid for r in records], dtype=np.int64))


def load_splits(data: DataSection) -> ImageSplits:
    return load_dataset(data.dataset, data.root or None)


def load_run_data(data: DataSection, progress: Callable[[str, int, int], None] | None = None) -> RunData:
    """Records and decoded images of the configured dataset (synthetic ones are drawn)."""
    if data.dataset == "synthetic":
        synth = make_synthetic(num_ids=data.synthetic_ids, num_cams=data.synthetic_cams,
                               imgs_per_id_cam=data.synthetic_images, height=data.height, width=data.width,
                               seed=data.synthetic_seed, num_query_ids=data.synthetic_test_ids)
        splits = synth.splits
        images = {s: synth.images(s) for s in ("train", "query", "gallery")}
    else:
        splits = load_splits(data)
        images = {}
        for split in ("train", "query", "gallery"):
            records = splits.split(split)
            if not records:
                raise DatasetError(f"the {split} split of {data.dataset} is empty under {splits.root}")
            callback = (lambda done, total, s=split: progress(s, done, total)) if progress else None
            images[split] = load_images([r.path for r in records], data.height, data.width,
                                        cache_dir=data.cache_dir or None, progress=callback)
    return RunData(splits.name, *(_split(splits.split(s), images[s]) for s in ("train", "query", "gallery")),
                   stats=splits.stats())
