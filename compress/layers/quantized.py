"""The base of the layers that keep their weight in a quantized form and compute it in forward.

A quantized layer is a geometry (`ConvGeometry` or `LinearGeometry`: sizes, bias, how a weight is
applied) plus a weight representation (codebook indices, trained bits) that implements
`weight_value()`. The base applies that weight, counts the weights the layer stands for, and turns
the layer back into a plain torch layer for export.
"""

from __future__ import annotations

import math

import torch
from torch import nn


class QuantizedWeight(nn.Module):
    """A Conv2d / Linear whose weight is computed from a quantized representation.

    Subclasses mix in a geometry (`apply_weight`, `float_layer`) and implement `weight_value()`.
    """

    weight_shape: list[int]

    def weight_value(self) -> torch.Tensor:
        """The float weight the layer computes with (shape `weight_shape`)."""
        raise NotImplementedError

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.apply_weight(x, self.weight_value())

    def to_float(self) -> nn.Module:
        """A plain Conv2d / Linear computing the same function."""
        with torch.no_grad():
            return self.float_layer(self.weight_value())

    def logical_params(self) -> int:
        """Weights and biases this layer stands for (its storage is counted separately)."""
        bias = getattr(self, "bias", None)
        return math.prod(self.weight_shape) + (bias.numel() if bias is not None else 0)
