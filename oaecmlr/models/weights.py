"""Load weights from a local file (never downloads), with one-line errors.

Accepted by ``load_pretrained``: a torchvision-format backbone state dict (classifier keys
``fc.*``/``classifier.*`` are ignored), an oaecmlr ``ReIDModel`` state dict (keys ``backbone.*``,
``pool.*``, ``neck.*``; the ``classifier.*`` is ignored), or a Cluster Contrast checkpoint
(``model_best.pth.tar``: keys ``module.base.N.*``, ``module.gap.p``, ``module.feat_bn.*``, mapped
by ``from_cluster_contrast``), either raw or under a ``state_dict``/``model`` key, with or without a
``module.`` prefix.

Files are read by ``read_weights_file``: ``torch.load(weights_only=True)``, so pickled objects are
refused and never run. The only globals allowed beyond torch's own are those a numpy float64 scalar
needs (``NUMPY_SCALAR_NAMES``: Cluster Contrast stores its ``best_mAP`` as one).
"""

from __future__ import annotations

import re
import warnings
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from oaecmlr.errors import CheckpointError

_IGNORED = ("fc.", "classifier.")
_RESNET_DEPTHS = {(2, 2, 2, 2): "resnet18", (3, 4, 6, 3): "resnet34/50", (3, 4, 23, 3): "resnet101",
                  (3, 8, 36, 3): "resnet152"}

# Cluster Contrast's ResNet/ResNetIBN: base = Sequential(conv1, bn1, relu, maxpool, layer1..layer4),
# gap = the pooling (GeM's p; no weights for average pooling), feat_bn = the BN neck.
_CC_PREFIXES = {"base.0.": "backbone.conv1.", "base.1.": "backbone.bn1.", "base.4.": "backbone.layer1.",
                "base.5.": "backbone.layer2.", "base.6.": "backbone.layer3.", "base.7.": "backbone.layer4.",
                "gap.": "pool.", "feat_bn.": "neck."}

# What torch.load(weights_only=True) reports as unsupported for a numpy float64 (torch 2.13, numpy 2.x):
# the scalar reconstruction function, numpy.dtype, and the float64 dtype class (built from the pickle).
# Files written under numpy 1.x name the same function numpy.core.multiarray.scalar.
NUMPY_SCALAR_NAMES = ("numpy._core.multiarray.scalar", "numpy.core.multiarray.scalar", "numpy.dtype",
                      "numpy.dtypes.Float64DType")

_ANSI = re.compile(r"\x1b(?:\[[0-?]*[ -/]*[@-~]|\][^\x07\x1b]*(?:\x07|\x1b\\)|[@-Z\\-_])")
_BOILERPLATE = ("weights_only", "weights only", "safe_globals", "file an issue", "check the documentation",
                "trust the source", "trusted source", "two options", "recommended steps")


def numpy_scalar_globals() -> list:
    """The entries for ``torch.serialization.safe_globals`` that let a numpy float64 scalar load."""
    import numpy as np

    core = getattr(np, "_core", None) or np.core
    scalar = core.multiarray.scalar
    return [(scalar, NUMPY_SCALAR_NAMES[0]), (scalar, NUMPY_SCALAR_NAMES[1]), np.dtype, np.dtypes.Float64DType]


def one_line(text: str) -> str:
    """``text`` without terminal escape codes or control characters, its whitespace collapsed."""
    text = _ANSI.sub("", text)
    text = "".join(c if c.isprintable() else " " for c in text)
    return " ".join(text.split())


def refusal_reason(exc: BaseException) -> str:
    """Why ``torch.load(weights_only=True)`` refused a file, as one clause in whole sentences.

    Never torch's advice to load with ``weights_only=False``: objects are named, not loaded."""
    raw = _ANSI.sub("", str(exc))
    names = re.findall(r"GLOBAL ([\w.]+)", raw) + re.findall(r"but got <class '([\w.]+)'>", raw)
    names += re.findall(r"create new object for .* but got ([\w.]+)", raw)
    if names:
        unique = ", ".join(dict.fromkeys(names))
        return (f"it holds Python objects that are not loaded ({unique}); only tensors, numbers, strings and "
                "containers are read, so save the weights alone (e.g. torch.save(model.state_dict(), path))")
    if isinstance(exc, EOFError):
        return "the file is empty or cut short"
    if m := re.search(r"Unsupported operand (\d+)", raw):
        return f"it is not a file written by torch.save (unsupported pickle opcode {m.group(1)})"
    sentences = [s for line in raw.replace("WeightsUnpickler error:", "\n").splitlines()
                 for s in re.split(r"(?<=[.!?])\s+(?=[A-Z(])", line)]
    kept = [one_line(s) for s in sentences if s.strip() and not any(b in s.lower() for b in _BOILERPLATE)]
    kept = [s for s in kept if s]
    if not kept:
        return type(exc).__name__
    text = " ".join(kept)
    return kept[0] if len(text) > 300 else text  # long reports keep their first whole sentence


def read_weights_file(path: str | Path, what: str) -> Any:
    """``torch.load(path, weights_only=True)`` on the CPU, numpy float64 scalars allowed; a file
    that cannot be read raises a ``CheckpointError`` "``what`` PATH cannot be loaded: why"."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{what} {path}: no such file")
    try:
        with torch.serialization.safe_globals(numpy_scalar_globals()), warnings.catch_warnings():
            # a raw pickle: torch asks to "please file an issue"; the refusal below says what it is
            warnings.filterwarnings("ignore", message="Detected pickle protocol")
            return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # torch raises several types for bad files; each means the same to the user
        raise CheckpointError(f"{what} {path} cannot be loaded: {refusal_reason(exc)}") from None


# ---------- Cluster Contrast ----------
def state_dict_of(obj: Any) -> dict[str, Tensor] | None:
    """The state dict of tensors in a loaded file (raw or under 'state_dict'/'model'), without a
    ``module.`` prefix; None when there is none."""
    if isinstance(obj, Mapping):
        for key in ("state_dict", "model"):
            if isinstance(obj.get(key), Mapping):
                obj = obj[key]
                break
    if not isinstance(obj, Mapping) or not obj or not all(isinstance(v, Tensor) for v in obj.values()):
        return None
    return {str(k).removeprefix("module."): v for k, v in obj.items()}


def is_cluster_contrast(sd: Mapping[str, Any]) -> bool:
    """Whether a state dict (``module.`` prefix removed) has Cluster Contrast's key layout."""
    return any(k.startswith("base.0.") for k in sd) and not any(k.startswith("backbone.") for k in sd)


def from_cluster_contrast(sd: Mapping[str, Tensor]) -> dict[str, Tensor]:
    """A Cluster Contrast state dict with oaecmlr ``ReIDModel`` key names; keys without a
    counterpart (e.g. an embedding layer ``feat.*``) are kept as they are, so a fit check names them."""
    out = {}
    for key, value in sd.items():
        key = key.removeprefix("module.")
        prefix = next((p for p in _CC_PREFIXES if key.startswith(p)), None)
        out[key if prefix is None else _CC_PREFIXES[prefix] + key[len(prefix):]] = value
    return out


def cluster_contrast_weights(obj: Any) -> dict[str, Tensor] | None:
    """The ``ReIDModel`` weights of a loaded Cluster Contrast checkpoint, or None if it is not one."""
    if isinstance(obj, Mapping) and obj.get("format") is not None:
        return None  # an oaecmlr checkpoint
    sd = state_dict_of(obj)
    return from_cluster_contrast(sd) if sd is not None and is_cluster_contrast(sd) else None


def pooling_of(sd: Mapping[str, Any]) -> str:
    """The pooling a ``ReIDModel`` state dict was trained with: gem when it holds GeM's p."""
    return "gem" if "pool.p" in sd else "avg"


# ---------- fitting a state dict to a model ----------
def guess_arch(keys) -> str | None:
    """Name the architecture a set of keys looks like (``backbone.`` prefix allowed), for messages."""
    return _guess_arch({k.removeprefix("backbone.") for k in keys})


def _guess_arch(keys: set[str]) -> str | None:
    """Name the architecture a set of backbone keys looks like, for error messages."""
    if "features.18.0.weight" in keys:
        return "mobilenet_v2"
    blocks = []
    for layer in range(1, 5):
        idx = {int(m.group(1)) for k in keys if (m := re.match(rf"layer{layer}\.(\d+)\.", k))}
        blocks.append(max(idx) + 1 if idx else 0)
    name = _RESNET_DEPTHS.get(tuple(blocks))
    if name is None:
        return None
    if name == "resnet34/50":
        name = "resnet50" if "layer1.0.conv3.weight" in keys else "resnet34"
    return name + ("_ibn_a" if "layer1.0.bn1.IN.weight" in keys else "")


def _shapes(sd: Mapping[str, Any]) -> dict[str, tuple]:
    return {k: tuple(v.shape) for k, v in sd.items()}


def mismatch(found: Mapping[str, tuple], expected: Mapping[str, tuple]) -> tuple[list[str], list[str], list[str]]:
    """(missing, unexpected, of wrong shape) keys of ``found`` against ``expected`` (name -> shape);
    BatchNorm's ``num_batches_tracked`` may be absent (older files)."""
    missing = [k for k in expected if k not in found and not k.endswith("num_batches_tracked")]
    unexpected = [k for k in found if k not in expected]
    wrong = [k for k in found if k in expected and tuple(found[k]) != tuple(expected[k])]
    return missing, unexpected, wrong


def _names(keys: list[str], few: int = 3) -> str:
    more = f", +{len(keys) - few} more" if len(keys) > few else ""
    return ", ".join(keys[:few]) + more


def describe_mismatch(missing: list[str], unexpected: list[str], wrong: list[str], found: Mapping[str, tuple],
                      expected: Mapping[str, tuple]) -> str:
    """'2 missing (a, b), 1 unexpected (c), 1 of wrong shape (d: file (..), model (..))', on one line."""
    parts = []
    if missing:
        parts.append(f"{len(missing)} missing ({_names(missing)})")
    if unexpected:
        parts.append(f"{len(unexpected)} unexpected ({_names(unexpected)})")
    if wrong:
        k = wrong[0]
        more = f", +{len(wrong) - 1} more" if len(wrong) > 1 else ""
        parts.append(f"{len(wrong)} of wrong shape ({k}: file {tuple(found[k])}, model {tuple(expected[k])}{more})")
    return ", ".join(parts)


POOLING_ADVICE = {
    "init": "add --set model.pooling={pooling}",
    "pretrained": "add --set model.pooling={pooling}",
    "file": "pass --pooling {pooling} (or leave --pooling out)",
    "run": "the run's config.toml must say pooling = \"{pooling}\" in [model]",
}


def _refuse_other_pooling(missing, unexpected, wrong, found, source: str, advice: str) -> None:
    """Raise the pooling to use when the only difference is GeM's p (present on one side only)."""
    if (set(missing) | set(unexpected)) == {"pool.p"} and not wrong:
        trained = pooling_of(found)
        how = POOLING_ADVICE.get(advice, POOLING_ADVICE["init"]).format(pooling=trained)
        used = "gem" if trained == "avg" else "avg"
        raise CheckpointError(f"{source} was trained with {trained} pooling but the model uses {used}; {how}")


def load_model_state(model: nn.Module, sd: Mapping[str, Tensor], source: str, arch: str, advice: str = "init") -> None:
    """Load a ``ReIDModel`` state dict into ``model``: every key must fit (a classifier on either
    side is left out, BatchNorm counters may be absent), else one ``CheckpointError`` line naming the
    first few keys that do not, or the pooling to use. ``advice`` says which command this is for
    (a key of ``POOLING_ADVICE``)."""
    weights = {k: v for k, v in sd.items() if not k.startswith("classifier.")}
    expected = {k: tuple(v.shape) for k, v in model.state_dict().items() if not k.startswith("classifier.")}
    found = _shapes(weights)
    missing, unexpected, wrong = mismatch(found, expected)
    if missing or unexpected or wrong:
        _refuse_other_pooling(missing, unexpected, wrong, found, source, advice)
        guess = guess_arch(found)
        looks = f"; it looks like a {guess} model" if guess is not None and guess != arch else ""
        raise CheckpointError(f"{source} does not fit a {arch} model{looks}: "
                              f"{describe_mismatch(missing, unexpected, wrong, found, expected)}")
    model.load_state_dict(weights, strict=False)  # every key checked above; BN counters may be absent


# ---------- --pretrained ----------
def _read_state_dict(path: Path) -> dict[str, Tensor]:
    obj = read_weights_file(path, "pretrained weights")
    sd = state_dict_of(obj)
    if sd is None:
        raise CheckpointError(f"pretrained weights {path}: not a state dict of tensors "
                              f"(nor one under a 'state_dict' or 'model' key)")
    return from_cluster_contrast(sd) if is_cluster_contrast(sd) else sd


def load_pretrained(model: nn.Module, path: str | Path, arch: str) -> None:
    """Load ``path`` into ``model`` (a ``ReIDModel``) strictly; raise ``CheckpointError`` (a
    ``ValueError``) on any mismatch."""
    path = Path(path)
    sd = {k: v for k, v in _read_state_dict(path).items() if not k.startswith(_IGNORED)}
    whole = any(k.startswith("backbone.") for k in sd)  # an oaecmlr ReIDModel or Cluster Contrast checkpoint
    target = model if whole else model.backbone
    expected = {k: tuple(v.shape) for k, v in target.state_dict().items() if not k.startswith(_IGNORED)}
    found = _shapes(sd)
    missing, unexpected, wrong = mismatch(found, expected)
    if missing or unexpected or wrong:
        if whole:
            _refuse_other_pooling(missing, unexpected, wrong, found, f"pretrained weights {path}", "pretrained")
        required = [k for k in expected if not k.endswith("num_batches_tracked")]
        fit = sum(k in found and k not in wrong for k in required)
        what = "oaecmlr model" if whole else "backbone"
        msg = f"pretrained weights {path} has {fit} of {len(required)} expected {what} keys for {arch}"
        guess = guess_arch(sd)
        if guess is not None and guess != arch:
            msg += f"; is it a {guess} checkpoint? (pass --arch {guess})"
        else:
            msg += ": " + describe_mismatch(missing, unexpected, wrong, found, expected)
        raise CheckpointError(msg)
    target.load_state_dict(sd, strict=False)  # every key checked above; BN counters may be absent
