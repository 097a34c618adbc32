"""`oaecmlr export`: a run's (or a checkpoint file's) query and gallery features as numpy arrays,
the way torchreid users expect them, for scoring or plotting outside oaecmlr.

The folder holds `query_features.npy` / `gallery_features.npy` (float32, N x D, L2-normalised: the
model's eval-mode output exactly as `oaecmlr eval` computes it, so the squared Euclidean distance is
2 - 2 q.g^T), `query_pids.npy`, `query_camids.npy`, `gallery_pids.npy`, `gallery_camids.npy`
(int64), `query_paths.txt` / `gallery_paths.txt` (one image path per line, in the same order;
empty for the synthetic set, which has no files) and `meta.json` (what was exported, and the shapes).
"""

from __future__ import annotations

import json
from pathlib import Path

from oaecmlr.cli.evaluate import FileOptions, Target, open_target, pick_device, prepare
from oaecmlr.errors import CliError, DatasetError

ARRAYS = ("query_features", "gallery_features", "query_pids", "query_camids", "gallery_pids", "gallery_camids")
TEXTS = ("query_paths", "gallery_paths")


def _stem(path: Path) -> str:
    name = path.name
    for suffix in (".pth.tar", ".pt", ".pth", ".tar"):
        if name.endswith(suffix):
            return name[: -len(suffix)]
    return path.stem


def default_folder(target: Target) -> Path:
    """RUN/features-best (or -last) for a run; features-STEM next to a checkpoint file."""
    if target.run_path is not None:
        return target.run_path / f"features-{target.checkpoint}"
    return target.file.parent / f"features-{_stem(target.file)}"


def check_folder(out: Path, force: bool) -> None:
    from oaecmlr.cli.common import writable_folder

    writable_folder(out, "--out")
    if out.is_dir() and any(out.iterdir()) and not force:
        raise CliError(f"{out} exists and is not empty; pass --force to overwrite the feature files in it, "
                       "or --out another folder")


def record_paths(target: Target, data) -> tuple[list[str], list[str]]:
    """The image paths of the query and gallery, in the order of their features (none for the
    synthetic set). A held-out validation split (data.holdout_ids) is rebuilt from the training
    records by the same `hold_out` the data went through."""
    import numpy as np
    import torch

    from oaecmlr.engine.rundata import RunData, Split, hold_out, load_splits

    if data.name == "synthetic":
        return [], []
    config = target.config.data
    splits = load_splits(config)
    if config.holdout_ids:
        train = splits.train
        rows = Split(torch.arange(len(train)), np.array([r.pid for r in train], dtype=np.int64),
                     np.array([r.camid for r in train], dtype=np.int64))
        held = hold_out(RunData(splits.name, rows, rows, rows, {}), config.holdout_ids)
        query = [train[i] for i in held.query.images.tolist()]
        gallery = [train[i] for i in held.gallery.images.tolist()]
    else:
        query, gallery = splits.query, splits.gallery
    for name, records, split in (("query", query, data.query), ("gallery", gallery, data.gallery)):
        pids = np.array([r.pid for r in records], dtype=np.int64)
        camids = np.array([r.camid for r in records], dtype=np.int64)
        if not (np.array_equal(pids, split.pids) and np.array_equal(camids, split.camids)):
            raise DatasetError(f"the {name} records of {data.name} under {splits.root} changed while exporting; "
                               "run the export again")
    return [r.path for r in query], [r.path for r in gallery]


def export_features(target_name: str, runs_dir: str | None, out: str | None = None, checkpoint: str | None = None,
                    device: str = "auto", force: bool = False, options: FileOptions | None = None) -> dict:
    """Write the features and labels of the query and gallery to ``out``; returns meta.json's content."""
    import numpy as np

    if out:
        check_folder(Path(out), force)  # before any work
    pick_device(device)  # a wrong --device says so before the checkpoint and the data are read
    target = open_target(target_name, runs_dir, checkpoint, options)
    folder = Path(out) if out else default_folder(target)
    check_folder(folder, force)
    dev, data, extract = prepare(target, device)
    query = extract(data.query.images).float().cpu().numpy().astype(np.float32)
    gallery = extract(data.gallery.images).float().cpu().numpy().astype(np.float32)
    query_paths, gallery_paths = record_paths(target, data)
    arrays = {"query_features": query, "gallery_features": gallery,
              "query_pids": data.query.pids.astype(np.int64), "query_camids": data.query.camids.astype(np.int64),
              "gallery_pids": data.gallery.pids.astype(np.int64),
              "gallery_camids": data.gallery.camids.astype(np.int64)}
    try:
        folder.mkdir(parents=True, exist_ok=True)
        for name, array in arrays.items():
            np.save(folder / f"{name}.npy", np.ascontiguousarray(array))
        for name, paths in (("query_paths", query_paths), ("gallery_paths", gallery_paths)):
            (folder / f"{name}.txt").write_text("".join(f"{p}\n" for p in paths), encoding="utf-8")
    except OSError as exc:
        raise CliError(f"cannot write the features to {folder} ({exc.strerror or exc}); free some space or choose "
                       "another --out") from None
    cfg = target.config
    meta = {**target.describe(), **target.extra, "device": str(dev), "folder": str(folder),
            "height": cfg.data.height, "width": cfg.data.width, "pooling": cfg.model.pooling,
            "feature_dim": int(query.shape[1]) if query.ndim == 2 else 0, "normalised": True,
            "distance": "squared Euclidean = 2 - 2 * query_features @ gallery_features.T",
            "shapes": {name: list(array.shape) for name, array in arrays.items()},
            "dtypes": {name: str(array.dtype) for name, array in arrays.items()},
            "paths": {"query": len(query_paths), "gallery": len(gallery_paths)}}
    try:
        (folder / "meta.json").write_text(json.dumps(meta, indent=2) + "\n", encoding="utf-8")
    except OSError as exc:
        raise CliError(f"cannot write {folder / 'meta.json'} ({exc.strerror or exc}); free some space or choose "
                       "another --out") from None
    return meta


def export_command(target_name: str, runs_dir: str | None, out: str | None, checkpoint: str | None, device: str,
                   force: bool, options: FileOptions | None = None) -> None:
    from oaecmlr.cli.common import console, escape

    meta = export_features(target_name, runs_dir, out, checkpoint, device, force, options)
    q, g = meta["shapes"]["query_features"], meta["shapes"]["gallery_features"]
    what = f"{meta['run']} {meta['checkpoint']}.pt" if meta["run"] is not None else meta["checkpoint"]
    console.print(f"[bold]{escape(what)}[/] (epoch {meta['epoch']}): {q[0]} query and {g[0]} gallery features of "
                  f"dimension {meta['feature_dim']}, with ids, cameras and paths, in {escape(meta['folder'])}",
                  highlight=False)
