"""Small hand-built networks with the coupling patterns structured pruning must follow."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


def cbr(cin: int, cout: int, k: int = 3, stride: int = 1, groups: int = 1) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(cin, cout, k, stride, k // 2, groups=groups, bias=False), nn.BatchNorm2d(cout), nn.ReLU()
    )


class Residual(nn.Module):
    """stem -> two residual blocks (identity adds) -> pool -> fc."""

    def __init__(self) -> None:
        super().__init__()
        self.stem = cbr(3, 16)
        self.a1, self.a2 = cbr(16, 8), nn.Conv2d(8, 16, 3, 1, 1)
        self.b1, self.b2 = cbr(16, 8), nn.Conv2d(8, 16, 3, 1, 1)
        self.fc = nn.Linear(16, 5)

    def forward(self, x):
        x = self.stem(x)
        x = F.relu(x + self.a2(self.a1(x)))
        x = F.relu(x + self.b2(self.b1(x)))
        return self.fc(F.adaptive_avg_pool2d(x, 1).flatten(1))


class Concat(nn.Module):
    """Two branches concatenated, consumed by a conv; then flatten -> linear on an 8x8 map."""

    def __init__(self) -> None:
        super().__init__()
        self.left, self.right = cbr(3, 8), cbr(3, 12)
        self.mix = cbr(20, 10, stride=2)
        self.fc = nn.Linear(10 * 8 * 8, 5)

    def forward(self, x):
        x = torch.cat([self.left(x), self.right(x)], dim=1)
        return self.fc(torch.flatten(self.mix(x), 1))


class Depthwise(nn.Module):
    """Inverted residual: 1x1 expand -> depthwise 3x3 -> squeeze-excitation -> 1x1 project (+ add)."""

    def __init__(self) -> None:
        super().__init__()
        self.stem = cbr(3, 8)
        self.expand = cbr(8, 24, k=1)
        self.dw = cbr(24, 24, groups=24)
        self.se1, self.se2 = nn.Conv2d(24, 6, 1), nn.Conv2d(6, 24, 1)
        self.project = nn.Sequential(nn.Conv2d(24, 8, 1, bias=False), nn.BatchNorm2d(8))
        self.grouped = cbr(8, 16, groups=4)
        self.fc = nn.Linear(16, 5)

    def forward(self, x):
        x = self.stem(x)
        h = self.dw(self.expand(x))
        s = torch.sigmoid(self.se2(F.relu(self.se1(h.mean((2, 3), keepdim=True)))))
        x = x + self.project(h * s)
        x = self.grouped(x)
        return self.fc(x.mean((2, 3)))


def channel_shuffle(x: torch.Tensor, groups: int) -> torch.Tensor:
    n, c, h, w = x.size()
    x = x.view(n, groups, c // groups, h, w).transpose(1, 2).contiguous()
    return x.view(n, -1, h, w)


class Shuffle(nn.Module):
    """ShuffleNet-v2 style units: split, branch, concat, channel shuffle."""

    def __init__(self) -> None:
        super().__init__()
        self.stem = cbr(3, 16)
        self.b1 = nn.Sequential(cbr(8, 12, k=1), cbr(12, 12, groups=12), cbr(12, 8, k=1))
        self.b2 = nn.Sequential(cbr(8, 12, k=1), cbr(12, 12, groups=12), cbr(12, 8, k=1))
        self.fc = nn.Linear(16, 5)

    def forward(self, x):
        x = self.stem(x)
        for branch in (self.b1, self.b2):
            a, b = x.chunk(2, dim=1)
            x = channel_shuffle(torch.cat([a, branch(b)], 1), 2)
        return self.fc(x.mean((2, 3)))


class LiteralReshape(nn.Module):
    """A reshape with literal sizes: the channels it splits cannot shrink."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = cbr(3, 16)
        self.head = cbr(16, 8)
        self.fc = nn.Linear(8, 5)

    def forward(self, x):
        x = self.conv(x)
        n, _, h, w = x.shape
        x = x.view(n, 4, 4, h, w).transpose(1, 2).reshape(n, 16, h, w)
        return self.fc(self.head(x).mean((2, 3)))


class Attention(nn.Module):
    """A tiny transformer block with nn.MultiheadAttention and an MLP."""

    def __init__(self) -> None:
        super().__init__()
        self.embed = nn.Conv2d(3, 16, 4, 4)
        self.ln1, self.ln2 = nn.LayerNorm(16), nn.LayerNorm(16)
        self.attn = nn.MultiheadAttention(16, 2, batch_first=True)
        self.mlp = nn.Sequential(nn.Linear(16, 32), nn.GELU(), nn.Linear(32, 16))
        self.fc = nn.Linear(16, 5)

    def forward(self, x):
        x = self.embed(x).flatten(2).transpose(1, 2)
        h = self.ln1(x)
        x = x + self.attn(h, h, h, need_weights=False)[0]
        x = x + self.mlp(self.ln2(x))
        return self.fc(x.mean(1))


class Untraceable(nn.Module):
    """A submodule with data-dependent control flow next to a normal, prunable one."""

    class Gate(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.conv = nn.Conv2d(8, 8, 1)

        def forward(self, x):
            return self.conv(x) if x.sum() > 0 else x

    def __init__(self) -> None:
        super().__init__()
        self.a = cbr(3, 8)
        self.gate = self.Gate()
        self.b = cbr(8, 16)
        self.c = cbr(16, 8)
        self.fc = nn.Linear(8, 5)

    def forward(self, x):
        x = self.b(self.gate(self.a(x)))
        return self.fc(self.c(x).mean((2, 3)))


def randomise_norms(module: nn.Module) -> nn.Module:
    """Non-trivial BatchNorm statistics, so that equivalence checks mean something."""
    g = torch.Generator().manual_seed(0)
    for m in module.modules():
        if isinstance(m, nn.modules.batchnorm._BatchNorm):
            m.running_mean.copy_(torch.rand(m.num_features, generator=g) * 0.2 - 0.1)
            m.running_var.copy_(torch.rand(m.num_features, generator=g) + 0.5)
            m.weight.data.copy_(torch.rand(m.num_features, generator=g) + 0.5)
            m.bias.data.copy_(torch.rand(m.num_features, generator=g) * 0.2 - 0.1)
    return module.eval()
