"""What a checkpoint holds, and restoring it: model, optimizer, scheduler, memory, RNG states,
epoch, best result and the events offset, as plain tensors and containers (weights_only-safe)."""

from __future__ import annotations

import random
from typing import Any

import numpy as np
import torch

from oaecmlr.store.checkpoint import CheckpointError, load_checkpoint

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


def load_model_weights(path, arch: str) -> dict[str, torch.Tensor]:
    """The model state of an oaecmlr checkpoint (for --init and eval)."""
    state = load_checkpoint(path)
    check_compatible(state, path, arch, None, None)
    return state["model"]
