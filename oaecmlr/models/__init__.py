"""Re-ID models: torchvision-compatible backbones, GeM/avg pooling, BN neck, normalised features."""

from .build import ARCHS, build_model
from .head import POOLINGS, GeM, ReIDModel, TrainOutput
from .mobilenet import mobilenet_v2
from .resnet import resnet18, resnet50, resnet50_ibn_a
from .weights import load_pretrained

__all__ = [
    "ARCHS", "POOLINGS", "GeM", "ReIDModel", "TrainOutput", "build_model", "load_pretrained",
    "mobilenet_v2", "resnet18", "resnet50", "resnet50_ibn_a",
]
