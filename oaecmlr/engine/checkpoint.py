"""Checkpoints: what they hold and how they are written and read.

A checkpoint is model, optimizer, scheduler, memory, RNG states, epoch, best result and the events
offset, as plain tensors and containers. It is written to a temporary file, fsynced and renamed
over the old one, so a crash or a full disk leaves the previous checkpoint intact, and it is read
with `weights_only=True`, so loading never unpickles arbitrary objects. Where checkpoints live is
the run folder's business (`oaecmlr.store.runs.RunDir`).
"""

from __future__ import annotations

import os
import random
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
import torch

from oaecmlr.errors import CheckpointError
from oaecmlr.store.runs import checkpoint_file

FORMAT = "oaecmlr-checkpoint"
VERSION = 1


def rng_state(generator: torch.Generator) -> dict[str, Any]:
    np_state = np.random.get_state()
    state = {
        "torch": torch.get_rng_state(),
        "numpy": {"keys": torch.from_numpy(np_state[1].astype(np.int64)), "pos": int(np_state[2]),
                  "has_gauss": int(np_state[3]), "cached": float(np_state[4])},
        "python": _python_state(),
        "augment": generator.get_state(),
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def _python_state() -> list:
    version, internal, gauss = random.getstate()
    return [version, list(internal), gauss]


def restore_rng(state: dict[str, Any], generator: torch.Generator) -> None:
    torch.set_rng_state(state["torch"])
    n = state["numpy"]
    np.random.set_state(("MT19937", n["keys"].numpy().astype(np.uint32), n["pos"], n["has_gauss"], n["cached"]))
    version, internal, gauss = state["python"]
    random.setstate((version, tuple(internal), gauss))
    generator.set_state(state["augment"])
    if "cuda" in state and torch.cuda.is_available() and len(state["cuda"]) == torch.cuda.device_count():
        torch.cuda.set_rng_state_all(state["cuda"])


def check_compatible(state: dict[str, Any], path, arch: str, dataset: str | None, num_train: int | None) -> None:
    """Refuse a checkpoint from another architecture or dataset with a clear message."""
    if state.get("format") != FORMAT:
        raise CheckpointError(f"{path} is not an oaecmlr checkpoint")
    if state.get("arch") != arch:
        raise CheckpointError(f"{path} holds a {state.get('arch')} model but this run uses {arch}; "
                              f"pass --arch {state.get('arch')} or another checkpoint")
    if dataset is not None and state.get("dataset") != dataset:
        raise CheckpointError(f"{path} was trained on {state.get('dataset')}, not {dataset}; "
                              "resume it on its own dataset (use --init to start a new run from it)")
    if num_train is not None and state.get("num_train") not in (None, num_train):
        raise CheckpointError(f"{path} was trained on {state.get('num_train')} training images but the dataset "
                              f"now has {num_train}; the data changed since the run started")


def atomic_save(obj: Any, path: str | Path) -> None:
    path = Path(path)
    handle, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(handle, "wb") as f:
            torch.save(obj, f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    _fsync_dir(path.parent)


def _fsync_dir(folder: Path) -> None:
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def load_checkpoint(path: str | Path) -> dict[str, Any]:
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"checkpoint not found: {path}")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # torch raises several types for bad files
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise CheckpointError(f"cannot load checkpoint {path}: {first[:200]}") from None
    if not isinstance(state, dict):
        raise CheckpointError(f"{path} is not an oaecmlr checkpoint (expected a dict)")
    return state


def load_model_weights(path, arch: str) -> dict[str, torch.Tensor]:
    """The model state of an oaecmlr checkpoint (for --init and eval)."""
    state = load_checkpoint(path)
    check_compatible(state, path, arch, None, None)
    return state["model"]


def load_init_weights(model: torch.nn.Module, init: str, arch: str) -> None:
    """Start from another run's model (UDA stage 2); only its classifier may be left out."""
    path = checkpoint_file(init)
    missing, unexpected = model.load_state_dict(load_model_weights(path, arch), strict=False)
    unexpected = [k for k in unexpected if not k.startswith("classifier.")]
    missing = [k for k in missing if not k.startswith("classifier.")]
    if missing or unexpected:
        raise CheckpointError(f"{path} does not fit a {arch} model: missing {missing[:3]}, unexpected {unexpected[:3]}")
