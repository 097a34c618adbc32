"""Build a re-ID model by architecture name: ``build_model("resnet50", pretrained=...)``."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from torch import nn

from .head import ReIDModel
from .mobilenet import mobilenet_v2
from .resnet import resnet18, resnet50, resnet50_ibn_a
from .weights import load_pretrained

_BACKBONES: dict[str, Callable[..., nn.Module]] = {
    "resnet18": resnet18,
    "resnet50": resnet50,
    "resnet50_ibn_a": resnet50_ibn_a,
    "mobilenet_v2": mobilenet_v2,
}
ARCHS: list[str] = list(_BACKBONES)


def build_model(arch: str, pretrained: str | Path | None = None, pooling: str = "gem", last_stride: int = 1,
                num_classes: int | None = None) -> ReIDModel:
    """A ``ReIDModel`` for ``arch`` (one of ``ARCHS``), randomly initialised (torchvision's scheme,
    reproducible under ``torch.manual_seed``) unless ``pretrained`` names a local weights file."""
    if arch not in _BACKBONES:
        raise ValueError(f"unknown arch {arch!r}; choose from {', '.join(ARCHS)}")
    backbone = _BACKBONES[arch](last_stride=last_stride)
    model = ReIDModel(backbone, backbone.out_channels, pooling, num_classes)
    if pretrained is not None:
        load_pretrained(model, pretrained, arch)
    return model
