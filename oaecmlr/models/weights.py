"""Load pretrained weights from a local file (never downloads), with one-line errors.

Accepted: a torchvision-format backbone state dict (classifier keys ``fc.*``/``classifier.*`` are
ignored), or an oaecmlr ``ReIDModel`` state dict (keys ``backbone.*``, ``pool.*``, ``neck.*``; the
``classifier.*`` is ignored), either raw or under a ``state_dict``/``model`` key, with or without a
``module.`` prefix. Files are read with ``weights_only=True``: pickled objects are refused.
"""

from __future__ import annotations

import re
from pathlib import Path

import torch
from torch import Tensor, nn

_IGNORED = ("fc.", "classifier.")
_RESNET_DEPTHS = {(2, 2, 2, 2): "resnet18", (3, 4, 6, 3): "resnet34/50", (3, 4, 23, 3): "resnet101",
                  (3, 8, 36, 3): "resnet152"}


def _read_state_dict(path: Path) -> dict[str, Tensor]:
    if not path.is_file():
        raise ValueError(f"pretrained weights {path}: no such file")
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # any failure means the same thing to the user
        first = (str(e).strip().splitlines() or [""])[0][:150]
        raise ValueError(f"pretrained weights {path}: not loadable with torch.load(weights_only=True) "
                         f"({type(e).__name__}: {first})") from e
    for key in ("state_dict", "model"):
        if isinstance(obj, dict) and isinstance(obj.get(key), dict):
            obj = obj[key]
            break
    if not isinstance(obj, dict) or not obj or not all(isinstance(v, Tensor) for v in obj.values()):
        raise ValueError(f"pretrained weights {path}: not a state dict of tensors "
                         f"(nor one under a 'state_dict' or 'model' key)")
    return {k.removeprefix("module."): v for k, v in obj.items()}


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


def load_pretrained(model: nn.Module, path: str | Path, arch: str) -> None:
    """Load ``path`` into ``model`` (a ``ReIDModel``) strictly; raise ``ValueError`` on any mismatch."""
    path = Path(path)
    sd = {k: v for k, v in _read_state_dict(path).items() if not k.startswith(_IGNORED)}
    whole = any(k.startswith("backbone.") for k in sd)  # an oaecmlr ReIDModel checkpoint
    target = model if whole else model.backbone
    expected = {k: v for k, v in target.state_dict().items() if not k.startswith(_IGNORED)}
    required = [k for k in expected if not k.endswith("num_batches_tracked")]  # absent in old files
    missing = [k for k in required if k not in sd]
    unexpected = [k for k in sd if k not in expected]
    wrong = [k for k in sd if k in expected and sd[k].shape != expected[k].shape]
    if missing or unexpected or wrong:
        found = sum(k in sd and k not in wrong for k in required)
        what = "oaecmlr model" if whole else "backbone"
        msg = f"pretrained weights {path} has {found} of {len(required)} expected {what} keys for {arch}"
        guess = _guess_arch({k.removeprefix("backbone.") for k in sd})
        if guess is not None and guess != arch:
            msg += f"; is it a {guess} checkpoint?"
        else:
            details = [f"{len(missing)} missing (e.g. {missing[0]})" if missing else "",
                       f"{len(unexpected)} unexpected (e.g. {unexpected[0]})" if unexpected else ""]
            if wrong:
                k = wrong[0]
                details.append(f"{len(wrong)} of wrong shape (e.g. {k}: file {tuple(sd[k].shape)}, "
                               f"model {tuple(expected[k].shape)})")
            msg += ": " + ", ".join(d for d in details if d)
        raise ValueError(msg)
    target.load_state_dict(sd, strict=False)  # every key checked above; BN counters may be absent
