"""torch.nn layers a saved architecture may name, keyed "nn.<Class>"."""

from __future__ import annotations

from typing import Any

from torch import nn

from compress.layers.registry import register_layer


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


for _cls, _key, _describe in (
    (nn.Conv1d, "nn.Conv1d", _conv),
    (nn.Conv2d, "nn.Conv2d", _conv),
    (nn.Conv3d, "nn.Conv3d", _conv),
    (nn.ConvTranspose2d, "nn.ConvTranspose2d", _conv_t),
    (nn.Linear, "nn.Linear", _linear),
    (nn.BatchNorm1d, "nn.BatchNorm1d", _bn),
    (nn.BatchNorm2d, "nn.BatchNorm2d", _bn),
    (nn.LayerNorm, "nn.LayerNorm", _ln),
    (nn.GroupNorm, "nn.GroupNorm", _gn),
    (nn.MultiheadAttention, "nn.MultiheadAttention", _mha),
    (nn.Embedding, "nn.Embedding", _emb),
    (nn.Identity, "nn.Identity", _empty),
    (nn.ReLU, "nn.ReLU", _empty),
    (nn.Flatten, "nn.Flatten", _empty),
    (nn.Dropout, "nn.Dropout", lambda m: {"p": m.p}),
):
    register_layer(_cls, _describe, key=_key)
register_layer(nn.Sequential, _empty, lambda _cfg: nn.Sequential(), key="nn.Sequential")
