"""Small built-in architectures, sized for the bundled datasets and for fast tests.

`simple_cnn` is a VGG-style classifier, `resnet_tiny` a small residual classifier, and `dncnn` a
residual denoiser (Zhang et al., "Beyond a Gaussian Denoiser", TIP 2017) for the dense
image-to-image task. Every model takes a `width` multiplier so a student can be "the teacher, thinner".
"""

from __future__ import annotations

from torch import nn

from compress.errors import ModelError
from compress.registry import Registry

BUILTIN: Registry = Registry("builtin model", ModelError)


def _w(channels: int, width: float) -> int:
    if width <= 0:
        raise ModelError(f"width must be positive, got {width}")
    return max(1, int(round(channels * width)))


def _conv_bn_relu(cin: int, cout: int, stride: int = 1) -> list[nn.Module]:
    return [nn.Conv2d(cin, cout, 3, stride, 1, bias=False), nn.BatchNorm2d(cout), nn.ReLU(inplace=True)]


@BUILTIN.register("simple_cnn")
def simple_cnn(num_classes: int = 10, in_channels: int = 3, width: float = 1.0) -> nn.Module:
    """Three conv stages (32, 64, 128 channels x width), global pooling, linear classifier."""
    c1, c2, c3 = _w(32, width), _w(64, width), _w(128, width)
    return nn.Sequential(
        *_conv_bn_relu(in_channels, c1),
        *_conv_bn_relu(c1, c2, 2),
        *_conv_bn_relu(c2, c2),
        *_conv_bn_relu(c2, c3, 2),
        nn.AdaptiveAvgPool2d(1),
        nn.Flatten(),
        nn.Linear(c3, num_classes),
    )


class BasicBlock(nn.Module):
    def __init__(self, cin: int, cout: int, stride: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(cin, cout, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(cout)
        self.conv2 = nn.Conv2d(cout, cout, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(cout)
        self.relu = nn.ReLU(inplace=True)
        self.shortcut = nn.Sequential()
        if stride != 1 or cin != cout:
            self.shortcut = nn.Sequential(nn.Conv2d(cin, cout, 1, stride, bias=False), nn.BatchNorm2d(cout))

    def forward(self, x):
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return self.relu(out + self.shortcut(x))


class ResNetTiny(nn.Module):
    def __init__(self, num_classes: int = 10, in_channels: int = 3, width: float = 1.0) -> None:
        super().__init__()
        c1, c2, c3 = _w(16, width), _w(32, width), _w(64, width)
        self.stem = nn.Sequential(*_conv_bn_relu(in_channels, c1))
        self.layer1 = BasicBlock(c1, c1, 1)
        self.layer2 = BasicBlock(c1, c2, 2)
        self.layer3 = BasicBlock(c2, c3, 2)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(c3, num_classes)

    def forward(self, x):
        x = self.layer3(self.layer2(self.layer1(self.stem(x))))
        return self.fc(self.pool(x).flatten(1))


@BUILTIN.register("resnet_tiny")
def resnet_tiny(num_classes: int = 10, in_channels: int = 3, width: float = 1.0) -> nn.Module:
    """A three-stage residual network (16, 32, 64 channels x width)."""
    return ResNetTiny(num_classes, in_channels, width)


class DnCNN(nn.Module):
    """Predicts the noise and subtracts it (residual learning)."""

    def __init__(self, in_channels: int = 1, width: float = 1.0, depth: int = 6) -> None:
        super().__init__()
        c = _w(32, width)
        layers: list[nn.Module] = [nn.Conv2d(in_channels, c, 3, 1, 1), nn.ReLU(inplace=True)]
        for _ in range(depth - 2):
            layers += _conv_bn_relu(c, c)
        self.features = nn.Sequential(*layers)
        self.head = nn.Conv2d(c, in_channels, 3, 1, 1)

    def forward(self, x):
        return x - self.head(self.features(x))


@BUILTIN.register("dncnn")
def dncnn(num_classes: int = 0, in_channels: int = 1, width: float = 1.0, depth: int = 6) -> nn.Module:
    """A residual denoiser; `num_classes` is accepted and ignored (dense output)."""
    del num_classes
    return DnCNN(in_channels, width, depth)
