"""Custom layers a saved model may contain, and the registry that names them.

A leaf package: it imports torch, `compress.errors` and `compress.registry` only, never a technique
or `compress.models`, so the checkpoint loader and the techniques both import it without a circle.
Importing it registers every layer family below; a family is one module.
"""

from compress.layers import torch_nn  # noqa: F401  (registers the torch.nn layers)
from compress.layers.attention import PrunableAttention
from compress.layers.bitwise import BitwiseConv2d, BitwiseLinear, BitwiseWeight
from compress.layers.codebook import CodebookConv2d, CodebookLinear, CodebookWeight
from compress.layers.geometry import ConvGeometry, LinearGeometry
from compress.layers.quantized import QuantizedWeight
from compress.layers.registry import LAYERS, LayerSpec, build_layer, describe_layer, layer_key, register_layer

__all__ = [
    "LAYERS",
    "BitwiseConv2d",
    "BitwiseLinear",
    "BitwiseWeight",
    "CodebookConv2d",
    "CodebookLinear",
    "CodebookWeight",
    "ConvGeometry",
    "LayerSpec",
    "LinearGeometry",
    "PrunableAttention",
    "QuantizedWeight",
    "build_layer",
    "describe_layer",
    "layer_key",
    "register_layer",
]
