"""Checkpoints: what they hold and how they are written and read.

A checkpoint is model, optimizer, scheduler, memory, RNG states, epoch, best result, the events
offset and, mid-epoch, the epoch's labels (`epoch_labels`; `phase` in checkpoints written before), as plain tensors and containers. It is written to a temporary file, fsynced and renamed
over the old one, so a crash or a full disk leaves the previous checkpoint intact, and it is read
with `weights_only=True`, so loading never unpickles arbitrary objects. Where checkpoints live is
the run folder's business (`oaecmlr.store.runs.RunDir`).

For --init and eval, a Cluster Contrast `model_best.pth.tar` is read too (`model_weights`): its
keys are mapped to ours and, since it does not store its architecture, its layers must fit the
configured one.
"""

from __future__ import annotations

import errno
import os
import random
import shutil
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
import torch

from oaecmlr.errors import CheckpointError
from oaecmlr.models import ARCHS
from oaecmlr.models.weights import (
    POOLING_ADVICE,
    cluster_contrast_weights,
    guess_arch,
    load_model_state,
    pooling_of,
    read_weights_file,
)
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


# What to do about a checkpoint of another architecture, by the command that met it.
ARCH_ADVICE = {
    "resume": ("the run's config.toml says", "set arch = \"{held}\" in its [model] section (it must name the "
               "architecture that trained the run)"),
    "run": ("the run's config.toml says", "set arch = \"{held}\" in its [model] section (it must name the "
            "architecture that trained the run)"),
    "init": ("this run uses", "pass --arch {held} to start from it, or --init another checkpoint"),
    "file": ("--arch is", "pass --arch {held}, or leave --arch out (an oaecmlr checkpoint names its architecture)"),
}


def check_compatible(state: dict[str, Any], path, arch: str, dataset: str | None, num_train: int | None,
                     hint: str = "resume") -> None:
    """Refuse a checkpoint from another architecture or dataset with a clear message. ``hint`` says
    which command asks, for advice that fits it: "resume" (a run's own last.pt), "run" (eval or
    export of a run), "init" (--init) or "file" (eval or export of a checkpoint file)."""
    if state.get("format") != FORMAT:
        raise CheckpointError(f"{path} is not an oaecmlr checkpoint")
    held = state.get("arch")
    if held != arch:
        whose, advice = ARCH_ADVICE.get(hint, ARCH_ADVICE["resume"])
        raise CheckpointError(f"{path} holds a {held} model but {whose} {arch}; {advice.format(held=held)}")
    if dataset is not None and state.get("dataset") != dataset:
        raise CheckpointError(f"{path} was trained on {state.get('dataset')}, not {dataset}; "
                              "resume it on its own dataset (use --init to start a new run from it)")
    if num_train is not None and state.get("num_train") not in (None, num_train):
        raise CheckpointError(f"{path} was trained on {state.get('num_train')} training images but the dataset "
                              f"now has {num_train}; the data changed since the run started")
    if not isinstance(state.get("model"), dict):
        raise CheckpointError(f"{path} has no model weights; it is incomplete, pick another checkpoint")


LOW_SPACE = 64 * 2**20  # free bytes under which a failed write is taken for a full disk


def atomic_save(obj: Any, path: str | Path) -> None:
    """Write `obj` to a temp file beside `path`, fsync it, and rename it over `path`: the previous
    file stays whole whatever fails. A full disk raises OSError(ENOSPC) naming `path`, also when
    torch reports it as its own RuntimeError ("enforce fail at inline_container.cc"): the free
    space is measured before the partial temp file is removed, since removing it frees the space
    that would tell."""
    path = Path(path)
    handle, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(handle, "wb") as f:
            torch.save(obj, f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException as exc:
        full = isinstance(exc, RuntimeError) and _nearly_full(path.parent)
        Path(tmp).unlink(missing_ok=True)
        if full:
            raise OSError(errno.ENOSPC, "No space left on device", str(path)) from exc
        raise
    _fsync_dir(path.parent)


def _nearly_full(folder: Path) -> bool:
    try:
        return shutil.disk_usage(folder).free < LOW_SPACE
    except OSError:
        return False


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
    """A checkpoint file as plain tensors and containers (``weights_only=True``; numpy float64
    scalars, as in Cluster Contrast files, are the only other thing allowed)."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"checkpoint not found: {path}")
    state = read_weights_file(path, "checkpoint")
    if not isinstance(state, dict):
        raise CheckpointError(f"{path} is not an oaecmlr checkpoint (expected a dict)")
    return state


def model_weights(state: dict[str, Any], path, arch: str, hint: str = "init",
                  pooling: str | None = None) -> dict[str, torch.Tensor]:
    """The ``ReIDModel`` weights of a loaded oaecmlr or Cluster Contrast checkpoint, refused with one
    line when they are of another architecture (or, given ``pooling``, another pooling)."""
    weights = cluster_contrast_weights(state)
    if weights is None:
        if state.get("format") != FORMAT:
            other = "; ImageNet backbone weights go to --pretrained" if hint == "init" else ""
            raise CheckpointError(f"{path} is neither an oaecmlr checkpoint nor a Cluster Contrast one "
                                  f"(a dict with 'state_dict' of module.base.* keys){other}")
        check_compatible(state, path, arch, None, None, hint=hint)
        weights = state["model"]
    else:
        guess = guess_arch(weights)
        if guess is None:
            raise CheckpointError(f"{path} is a Cluster Contrast checkpoint whose layers match none of the "
                                  f"architectures oaecmlr builds ({', '.join(ARCHS)})")
        if guess not in ARCHS:
            raise CheckpointError(f"{path} is a Cluster Contrast checkpoint of a {guess} model, which oaecmlr does "
                                  f"not build ({', '.join(ARCHS)})")
        if guess != arch:
            raise CheckpointError(f"{path} is a Cluster Contrast checkpoint of a {guess} model, not {arch} "
                                  f"(its architecture is not stored); pass --arch {guess}")
    if pooling is not None and pooling_of(weights) != pooling:
        trained = pooling_of(weights)
        how = POOLING_ADVICE.get(hint, POOLING_ADVICE["init"]).format(pooling=trained)
        raise CheckpointError(f"{path} was trained with {trained} pooling but the model uses {pooling}; {how}")
    return weights


def load_model_weights(path, arch: str, hint: str = "init", pooling: str | None = None) -> dict[str, torch.Tensor]:
    """The model state of an oaecmlr or Cluster Contrast checkpoint (for --init and eval)."""
    return model_weights(load_checkpoint(path), path, arch, hint, pooling)


def load_init_weights(model: torch.nn.Module, init: str, arch: str) -> None:
    """Start from another run's model or a Cluster Contrast checkpoint (UDA stage 2); only a
    classifier may be left out, on either side."""
    path = checkpoint_file(init)
    load_model_state(model, load_model_weights(path, arch, "init"), str(path), arch, "init")
