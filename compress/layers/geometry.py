"""Conv2d / Linear geometry shared by the layers that compute their own weight (codebooks, trained bits)."""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from compress.errors import RecipeError


class ConvGeometry:
    """Conv2d hyper-parameters for layers that compute their own weight.

    `groups` in a saved config is the convolution's; it is kept as `conv_groups` so that a layer may
    use `groups` for something else (codebook groups).
    """

    def _init_conv(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size: list[int],
        stride: list[int],
        padding: list[int],
        dilation: list[int],
        groups: int,
        bias: bool,
    ) -> list[int]:
        """Set the geometry and the bias; returns the weight's shape."""
        self.in_channels, self.out_channels, self.conv_groups = in_channels, out_channels, groups
        self.kernel_size, self.stride = list(kernel_size), list(stride)
        self.padding, self.dilation = list(padding), list(dilation)
        self.bias = nn.Parameter(torch.zeros(out_channels)) if bias else None
        return [out_channels, in_channels // groups, *kernel_size]

    @staticmethod
    def conv_args(conv: nn.Conv2d) -> dict[str, Any]:
        """The geometry of a float conv, as `_init_conv` keyword arguments (and `conv_config` returns)."""
        if isinstance(conv.padding, str):
            raise RecipeError("weight quantization needs numeric conv padding, not 'same'/'valid'")
        return {
            "in_channels": conv.in_channels,
            "out_channels": conv.out_channels,
            "kernel_size": list(conv.kernel_size),
            "stride": list(conv.stride),
            "padding": list(conv.padding),
            "dilation": list(conv.dilation),
            "groups": conv.groups,
            "bias": conv.bias is not None,
        }

    def conv_config(self) -> dict[str, Any]:
        return {
            "in_channels": self.in_channels,
            "out_channels": self.out_channels,
            "kernel_size": self.kernel_size,
            "stride": self.stride,
            "padding": self.padding,
            "dilation": self.dilation,
            "groups": self.conv_groups,
            "bias": self.bias is not None,
        }

    def apply_weight(self, x: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
        return torch.nn.functional.conv2d(
            x, weight, self.bias, self.stride, self.padding, self.dilation, self.conv_groups
        )

    def float_layer(self, weight: torch.Tensor) -> nn.Conv2d:
        """A plain Conv2d with this geometry and `weight`."""
        conv = nn.Conv2d(
            self.in_channels,
            self.out_channels,
            self.kernel_size,
            self.stride,
            self.padding,
            self.dilation,
            self.conv_groups,
            self.bias is not None,
        )
        with torch.no_grad():
            conv.weight.copy_(weight)
            if self.bias is not None:
                conv.bias.copy_(self.bias)
        return conv


class LinearGeometry:
    """Linear sizes and bias for layers that compute their own weight."""

    def _init_linear(self, in_features: int, out_features: int, bias: bool) -> list[int]:
        """Set the sizes and the bias; returns the weight's shape."""
        self.in_features, self.out_features = in_features, out_features
        self.bias = nn.Parameter(torch.zeros(out_features)) if bias else None
        return [out_features, in_features]

    def linear_config(self) -> dict[str, Any]:
        return {"in_features": self.in_features, "out_features": self.out_features, "bias": self.bias is not None}

    def apply_weight(self, x: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
        return torch.nn.functional.linear(x, weight, self.bias)

    def float_layer(self, weight: torch.Tensor) -> nn.Linear:
        """A plain Linear with these sizes and `weight`."""
        lin = nn.Linear(self.in_features, self.out_features, self.bias is not None)
        with torch.no_grad():
            lin.weight.copy_(weight)
            if self.bias is not None:
                lin.bias.copy_(self.bias)
        return lin
