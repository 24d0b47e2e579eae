"""Layers whose weight is alpha * sign(s) * sum_i H(b_i) 2^i over trained virtual bits.

The layers of `compress.quantize.bitwise` (Ivan, "Bit-wise Training of Neural Network Weights",
arXiv 2202.09571): n-1 real-valued magnitude bits b_i (least significant first), a sign variable s,
H(b) = 1[b > 0] with straight-through gradients, one scale alpha per layer. Only the `trained_bits`
most significant bits (the sign counted first) receive gradients.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from compress.layers.geometry import ConvGeometry, LinearGeometry
from compress.layers.quantized import QuantizedWeight
from compress.layers.registry import register_layer


def _step(x: torch.Tensor) -> torch.Tensor:
    """H(x) = 1[x > 0] forward, identity gradient."""
    return (x > 0).to(x.dtype) + (x - x.detach())  # exact 0/1 values: x - x.detach() is exactly 0


def _sign(x: torch.Tensor) -> torch.Tensor:
    return torch.where(x >= 0, 1.0, -1.0).to(x.dtype) + (x - x.detach())


class BitwiseWeight(QuantizedWeight):
    """Virtual bits, sign and scale of one layer's weight."""

    def _init_bits(self, weight_shape: list[int], bits: int, trained: int) -> None:
        self.weight_shape, self.bits, self.trained_bits = list(weight_shape), int(bits), int(trained)
        self.magnitude = nn.Parameter(torch.zeros(bits - 1, *weight_shape))  # virtual bits, LSB first
        self.sign = nn.Parameter(torch.ones(*weight_shape))
        self.register_buffer("alpha", torch.ones(()))
        mask = torch.zeros(bits - 1)
        if trained > 1:  # the sign is the first trained bit, then magnitude bits from the top
            mask[bits - 1 - (trained - 1) :] = 1.0
        self.register_buffer("bit_mask", mask, persistent=False)
        self.sign_trained = trained >= 1

    def integer_weight(self) -> torch.Tensor:
        """sign * sum_i H(b_i) 2^i (integers, with straight-through gradients to the virtual bits)."""
        shape = [-1] + [1] * len(self.weight_shape)
        mask = self.bit_mask.reshape(shape)
        b = self.magnitude * mask + (self.magnitude * (1 - mask)).detach()
        powers = (2.0 ** torch.arange(self.bits - 1, dtype=b.dtype, device=b.device)).reshape(shape)
        mag = (_step(b) * powers).sum(0)
        s = self.sign if self.sign_trained else self.sign.detach()
        return _sign(s) * mag

    def weight_value(self) -> torch.Tensor:
        return self.alpha * self.integer_weight()

    def set_from_integers(self, q: torch.Tensor, alpha: float) -> None:
        q = q.round().to(torch.int64)
        mag = q.abs()
        with torch.no_grad():
            for i in range(self.bits - 1):
                self.magnitude[i] = torch.where((mag >> i) & 1 == 1, 0.01, -0.01)
            self.sign.copy_(torch.where(q < 0, -0.01, 0.01))
            self.alpha.fill_(alpha)

    def int8_weight(self) -> torch.Tensor:
        with torch.no_grad():
            return self.integer_weight().round().to(torch.int8)


class BitwiseConv2d(ConvGeometry, BitwiseWeight):
    """A Conv2d whose weight is alpha * sign * sum_i H(b_i) 2^i."""

    def __init__(self, *, bits: int, trained_bits: int, **conv: Any) -> None:
        super().__init__()
        self._init_bits(self._init_conv(**conv), bits, trained_bits)

    def get_config(self) -> dict[str, Any]:
        return {**self.conv_config(), "bits": self.bits, "trained_bits": self.trained_bits}


class BitwiseLinear(LinearGeometry, BitwiseWeight):
    """A Linear whose weight is alpha * sign * sum_i H(b_i) 2^i."""

    def __init__(self, in_features: int, out_features: int, bias: bool, bits: int, trained_bits: int) -> None:
        super().__init__()
        self._init_bits(self._init_linear(in_features, out_features, bias), bits, trained_bits)

    def get_config(self) -> dict[str, Any]:
        return {**self.linear_config(), "bits": self.bits, "trained_bits": self.trained_bits}


register_layer(BitwiseConv2d, key="compress.BitwiseConv2d", aliases=["compress.quantize.bitwise.BitwiseConv2d"])
register_layer(BitwiseLinear, key="compress.BitwiseLinear", aliases=["compress.quantize.bitwise.BitwiseLinear"])
