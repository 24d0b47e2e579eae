"""Layers whose weight is stored as bit-packed codebook indices (the storage of `compress.quantize.codebook`).

`CodebookConv2d` / `CodebookLinear` hold the indices bit-packed at b bits (uint8 buffer), the float
codebooks (one per group of output channels) and the per-channel group ids, so a saved checkpoint is
small. Their forward unpacks with integer Div/Mod and dequantises with a Gather, so the ONNX file keeps
the packed indices too (exported without constant folding; ONNX Runtime folds the dequantisation at
load time).
"""

from __future__ import annotations

import math
from typing import Any

import torch
from torch import nn

from compress.layers.geometry import ConvGeometry, LinearGeometry
from compress.layers.quantized import QuantizedWeight
from compress.layers.registry import register_layer


def pack_indices(idx: torch.Tensor, bits: int) -> torch.Tensor:
    """Pack integer indices (< 2^bits) into a uint8 tensor, `bits` bits each, little-endian bit order."""
    flat = idx.reshape(-1).to(torch.int64)
    bit_planes = (flat[:, None] >> torch.arange(bits)) & 1  # [n, bits]
    stream = bit_planes.reshape(-1)
    pad = (-stream.numel()) % 8
    stream = torch.cat([stream, stream.new_zeros(pad)]).reshape(-1, 8)
    return (stream << torch.arange(8)).sum(1).to(torch.uint8)


def unpack_indices(packed: torch.Tensor, bits: int, count: int) -> torch.Tensor:
    """Inverse of `pack_indices`, written with Div/Mod/ReduceSum only so that it exports to ONNX."""
    p = packed.to(torch.int32).reshape(-1, 1)
    pow8 = torch.tensor([1, 2, 4, 8, 16, 32, 64, 128], dtype=torch.int32)
    stream = torch.remainder(torch.div(p, pow8, rounding_mode="floor"), 2).reshape(-1)
    planes = stream[: count * bits].reshape(count, bits)
    powb = torch.tensor([1 << i for i in range(bits)], dtype=torch.int32)
    return (planes * powb).sum(1).to(torch.int64)


class CodebookWeight(QuantizedWeight):
    """Packed indices + codebooks + channel groups, dequantised with a Gather in forward."""

    def _init_storage(self, weight_shape: list[int], bits: int, groups: int) -> None:
        self.weight_shape = list(weight_shape)
        self.bits, self.groups = int(bits), int(groups)
        n = math.prod(weight_shape)
        self.register_buffer("packed", torch.zeros(math.ceil(n * bits / 8), dtype=torch.uint8))
        self.register_buffer("codebooks", torch.zeros(groups, 2**bits))
        self.register_buffer("channel_group", torch.zeros(weight_shape[0], dtype=torch.uint8))

    def set_weight(self, indices: torch.Tensor, codebooks: torch.Tensor, channel_group: torch.Tensor) -> None:
        self.packed = pack_indices(indices, self.bits)
        self.codebooks = codebooks.detach().float().clone()
        self.channel_group = channel_group.to(torch.uint8).clone()

    def indices(self) -> torch.Tensor:
        return unpack_indices(self.packed, self.bits, math.prod(self.weight_shape)).reshape(self.weight_shape[0], -1)

    def weight_value(self) -> torch.Tensor:
        k = 2**self.bits
        idx = self.indices() + self.channel_group.to(torch.int64).reshape(-1, 1) * k
        return self.codebooks.reshape(-1)[idx.reshape(-1)].reshape(self.weight_shape)

    def storage_bits(self) -> int:
        """Bits of the quantized weight: packed indices + codebooks (fp32) + group ids (uint8)."""
        return 8 * self.packed.numel() + 32 * self.codebooks.numel() + 8 * self.channel_group.numel()


class CodebookConv2d(ConvGeometry, CodebookWeight):
    """A Conv2d whose weight is stored as packed codebook indices."""

    def __init__(self, *, bits: int, codebook_groups: int, **conv: Any) -> None:
        super().__init__()
        self._init_storage(self._init_conv(**conv), bits, codebook_groups)

    @classmethod
    def from_conv(cls, conv: nn.Conv2d, bits: int, codebook_groups: int) -> CodebookConv2d:
        m = cls(**cls.conv_args(conv), bits=bits, codebook_groups=codebook_groups)
        if conv.bias is not None:
            m.bias.data.copy_(conv.bias.data)
        return m

    def get_config(self) -> dict[str, Any]:
        return {**self.conv_config(), "bits": self.bits, "codebook_groups": self.groups}


class CodebookLinear(LinearGeometry, CodebookWeight):
    """A Linear whose weight is stored as packed codebook indices."""

    def __init__(self, in_features: int, out_features: int, bias: bool, bits: int, codebook_groups: int) -> None:
        super().__init__()
        self._init_storage(self._init_linear(in_features, out_features, bias), bits, codebook_groups)

    @classmethod
    def from_linear(cls, lin: nn.Linear, bits: int, codebook_groups: int) -> CodebookLinear:
        m = cls(lin.in_features, lin.out_features, lin.bias is not None, bits, codebook_groups)
        if lin.bias is not None:
            m.bias.data.copy_(lin.bias.data)
        return m

    def get_config(self) -> dict[str, Any]:
        return {**self.linear_config(), "bits": self.bits, "codebook_groups": self.groups}


register_layer(CodebookConv2d, key="compress.CodebookConv2d", aliases=["compress.quantize.codebook.CodebookConv2d"])
register_layer(CodebookLinear, key="compress.CodebookLinear", aliases=["compress.quantize.codebook.CodebookLinear"])
