"""ResNet backbones (classifier removed) with torchvision's state-dict key names.

He, Zhang, Ren, Sun, "Deep Residual Learning for Image Recognition", CVPR 2016; the v1.5 layout of
torchvision (stride on the 3x3 conv). ``last_stride=1`` keeps layer4 at 1/16 of the input, as in
Luo et al., "Bag of Tricks and A Strong Baseline for Deep Person Re-identification", CVPRW 2019.
``resnet50_ibn_a`` swaps the first BatchNorm of every block in layer1-3 for IBN (see ``ibn.py``).
"""

from __future__ import annotations

from torch import Tensor, nn

from .ibn import IBN


def _norm(planes: int, ibn: bool) -> nn.Module:
    return IBN(planes) if ibn else nn.BatchNorm2d(planes)


class BasicBlock(nn.Module):
    expansion = 1

    def __init__(self, inplanes: int, planes: int, stride: int = 1, downsample: nn.Module | None = None,
                 ibn: bool = False):
        super().__init__()
        self.conv1 = nn.Conv2d(inplanes, planes, 3, stride, 1, bias=False)
        self.bn1 = _norm(planes, ibn)
        self.conv2 = nn.Conv2d(planes, planes, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.relu = nn.ReLU(inplace=True)
        self.downsample = downsample

    def forward(self, x: Tensor) -> Tensor:
        identity = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return self.relu(out + identity)


class Bottleneck(nn.Module):
    expansion = 4

    def __init__(self, inplanes: int, planes: int, stride: int = 1, downsample: nn.Module | None = None,
                 ibn: bool = False):
        super().__init__()
        self.conv1 = nn.Conv2d(inplanes, planes, 1, bias=False)
        self.bn1 = _norm(planes, ibn)
        self.conv2 = nn.Conv2d(planes, planes, 3, stride, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.conv3 = nn.Conv2d(planes, planes * 4, 1, bias=False)
        self.bn3 = nn.BatchNorm2d(planes * 4)
        self.relu = nn.ReLU(inplace=True)
        self.downsample = downsample

    def forward(self, x: Tensor) -> Tensor:
        identity = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.relu(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(out))
        return self.relu(out + identity)


def _make_layer(block: type, inplanes: int, planes: int, blocks: int, stride: int, ibn: bool) -> nn.Sequential:
    downsample = None
    if stride != 1 or inplanes != planes * block.expansion:
        downsample = nn.Sequential(
            nn.Conv2d(inplanes, planes * block.expansion, 1, stride, bias=False),
            nn.BatchNorm2d(planes * block.expansion),
        )
    layers = [block(inplanes, planes, stride, downsample, ibn)]
    layers += [block(planes * block.expansion, planes, ibn=ibn) for _ in range(1, blocks)]
    return nn.Sequential(*layers)


class ResNet(nn.Module):
    """Returns the layer4 feature map (B x out_channels x H/16 x W/16 with last_stride=1)."""

    def __init__(self, block: type, layers: tuple[int, int, int, int], last_stride: int = 1,
                 ibn: tuple[bool, bool, bool, bool] = (False, False, False, False)):
        super().__init__()
        if last_stride not in (1, 2):
            raise ValueError(f"last_stride must be 1 or 2, got {last_stride}")
        self.conv1 = nn.Conv2d(3, 64, 7, 2, 3, bias=False)
        self.bn1 = nn.BatchNorm2d(64)
        self.relu = nn.ReLU(inplace=True)
        self.maxpool = nn.MaxPool2d(3, 2, 1)
        inplanes, stages = 64, []
        for planes, n, stride, use_ibn in zip((64, 128, 256, 512), layers, (1, 2, 2, last_stride), ibn, strict=True):
            stages.append(_make_layer(block, inplanes, planes, n, stride, use_ibn))
            inplanes = planes * block.expansion
        self.layer1, self.layer2, self.layer3, self.layer4 = stages
        self.out_channels = inplanes
        for m in self.modules():  # torchvision's initialisation
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            elif isinstance(m, (nn.BatchNorm2d, nn.InstanceNorm2d)):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)

    def forward(self, x: Tensor) -> Tensor:
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        return self.layer4(self.layer3(self.layer2(self.layer1(x))))


def resnet18(last_stride: int = 1) -> ResNet:
    return ResNet(BasicBlock, (2, 2, 2, 2), last_stride)


def resnet50(last_stride: int = 1) -> ResNet:
    return ResNet(Bottleneck, (3, 4, 6, 3), last_stride)


def resnet50_ibn_a(last_stride: int = 1) -> ResNet:
    return ResNet(Bottleneck, (3, 4, 6, 3), last_stride, ibn=(True, True, True, False))
