"""Layers that a saved architecture may name, each with a describe/build pair.

A compressed model is saved as "build this base architecture, then put these layers at these paths"
(see `checkpoint.py`). Only layers registered here can be named, so loading a checkpoint never
imports anything a file asks for. Techniques that introduce their own layers (quantized convs,
gated channels) register them with `register_layer`.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from torch import nn

from compress.errors import ModelError
from compress.registry import Registry


@dataclass(frozen=True)
class LayerSpec:
    describe: Callable[[nn.Module], dict[str, Any]]
    build: Callable[[dict[str, Any]], nn.Module]
    cls: type


LAYERS: Registry[LayerSpec] = Registry("layer type", ModelError)


def register_layer(
    cls: type,
    describe: Callable[[nn.Module], dict[str, Any]] | None = None,
    build: Callable[[dict[str, Any]], nn.Module] | None = None,
    name: str | None = None,
) -> type:
    """Make `cls` nameable in saved architectures.

    By default a layer describes itself with a `get_config()` method and is built with
    `cls(**config)`.
    """
    describe = describe or (lambda m: m.get_config())
    build = build or (lambda cfg, _cls=cls: _cls(**cfg))
    LAYERS.register(name or layer_name(cls), LayerSpec(describe, build, cls))
    return cls


def layer_name(cls: type) -> str:
    if cls.__module__.startswith("torch.nn"):
        return f"nn.{cls.__name__}"
    return f"{cls.__module__}.{cls.__qualname__}"


def describe_layer(module: nn.Module) -> tuple[str, dict[str, Any]] | None:
    """(registered name, constructor config) of `module`, or None if it is not registered."""
    name = layer_name(type(module))
    if name not in LAYERS:
        return None
    return name, LAYERS.get(name).describe(module)


def build_layer(name: str, config: dict[str, Any]) -> nn.Module:
    if name not in LAYERS:
        # technique packages register their layers on import; load them (a fixed list, never a
        # module named by the file) and look again
        from compress.methods import load_techniques

        load_techniques()
    spec = LAYERS.get(name)
    try:
        return spec.build(config)
    except (TypeError, ValueError) as e:
        raise ModelError(f"cannot build layer {name} with {config}: {e}") from None


def _conv(m: nn.Module) -> dict[str, Any]:
    return {
        "in_channels": m.in_channels,
        "out_channels": m.out_channels,
        "kernel_size": list(m.kernel_size),
        "stride": list(m.stride),
        "padding": m.padding if isinstance(m.padding, str) else list(m.padding),
        "dilation": list(m.dilation),
        "groups": m.groups,
        "bias": m.bias is not None,
        "padding_mode": m.padding_mode,
    }


def _conv_t(m: nn.Module) -> dict[str, Any]:
    d = _conv(m)
    d["output_padding"] = list(m.output_padding)
    return d


def _linear(m: nn.Linear) -> dict[str, Any]:
    return {"in_features": m.in_features, "out_features": m.out_features, "bias": m.bias is not None}


def _bn(m: nn.modules.batchnorm._BatchNorm) -> dict[str, Any]:
    return {
        "num_features": m.num_features,
        "eps": m.eps,
        "momentum": m.momentum,
        "affine": m.affine,
        "track_running_stats": m.track_running_stats,
    }


def _ln(m: nn.LayerNorm) -> dict[str, Any]:
    return {
        "normalized_shape": list(m.normalized_shape),
        "eps": m.eps,
        "elementwise_affine": m.elementwise_affine,
        "bias": m.bias is not None if m.elementwise_affine else True,
    }


def _gn(m: nn.GroupNorm) -> dict[str, Any]:
    return {"num_groups": m.num_groups, "num_channels": m.num_channels, "eps": m.eps, "affine": m.affine}


def _mha(m: nn.MultiheadAttention) -> dict[str, Any]:
    return {
        "embed_dim": m.embed_dim,
        "num_heads": m.num_heads,
        "dropout": m.dropout,
        "bias": m.in_proj_bias is not None,
        "add_bias_kv": m.bias_k is not None,
        "kdim": m.kdim,
        "vdim": m.vdim,
        "batch_first": m.batch_first,
    }


def _emb(m: nn.Embedding) -> dict[str, Any]:
    return {"num_embeddings": m.num_embeddings, "embedding_dim": m.embedding_dim}


def _empty(_: nn.Module) -> dict[str, Any]:
    return {}


for _cls in (nn.Conv1d, nn.Conv2d, nn.Conv3d):
    register_layer(_cls, _conv)
register_layer(nn.ConvTranspose2d, _conv_t)
register_layer(nn.Linear, _linear)
for _cls in (nn.BatchNorm1d, nn.BatchNorm2d):
    register_layer(_cls, _bn)
register_layer(nn.LayerNorm, _ln)
register_layer(nn.GroupNorm, _gn)
register_layer(nn.MultiheadAttention, _mha)
register_layer(nn.Embedding, _emb)
for _cls in (nn.Identity, nn.ReLU, nn.Flatten):
    register_layer(_cls, _empty)
register_layer(nn.Dropout, lambda m: {"p": m.p})
register_layer(nn.Sequential, _empty, lambda _cfg: nn.Sequential())
