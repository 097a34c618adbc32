"""The images of a run as uint8 tensors at the training resolution, decoded once and cached."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch

from oaecmlr.config.settings import DataSection
from oaecmlr.data.cache import load_images
from oaecmlr.data.datasets import load_dataset
from oaecmlr.data.records import ImageSplits, Record
from oaecmlr.data.synthetic import make_synthetic
from oaecmlr.errors import DatasetError


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
    return load_dataset(data.dataset, data.root or None, cuhk03=data.cuhk03, allow_outside=data.allow_outside)


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
                                        cache_dir=data.cache_dir or None, progress=callback, resample=data.resize)
    run_data = RunData(splits.name, *(_split(splits.split(s), images[s]) for s in ("train", "query", "gallery")),
                       stats=splits.stats())
    return hold_out(run_data, data.holdout_ids) if data.holdout_ids else run_data


def hold_out(data: RunData, num_ids: int) -> RunData:
    """A validation protocol inside the training set, for tuning without the test identities: the
    last `num_ids` training identities leave training and become query (their lowest camera) and
    gallery (their other cameras); the test split is not used at all."""
    train = data.train
    identities = np.unique(train.pids)
    if not 0 < num_ids < identities.size:
        raise DatasetError(f"data.holdout_ids={num_ids} must be between 1 and {identities.size - 1} "
                           "(the number of training identities minus one)")
    held = np.isin(train.pids, identities[-num_ids:])
    first_camera = {pid: train.camids[train.pids == pid].min() for pid in identities[-num_ids:]}
    query = held & np.array([first_camera.get(p, -1) == c for p, c in zip(train.pids, train.camids)])
    gallery = held & ~query

    def take(mask: np.ndarray) -> Split:
        rows = torch.from_numpy(np.flatnonzero(mask))
        return Split(train.images[rows], train.pids[mask], train.camids[mask])

    stats = {"train": _stats(train.pids[~held], train.camids[~held]), "query": _stats(train.pids[query], train.camids[query]),
             "gallery": _stats(train.pids[gallery], train.camids[gallery]), "holdout_ids": num_ids}
    return RunData(data.name, take(~held), take(query), take(gallery), stats)


def _stats(pids: np.ndarray, camids: np.ndarray) -> dict:
    return {"images": int(pids.size), "ids": int(np.unique(pids).size), "cams": int(np.unique(camids).size)}
