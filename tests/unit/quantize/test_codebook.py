"""Codebook quantization: packed storage, k indices per layer, small ONNX matching torch, JLCM vs k-means."""

from __future__ import annotations

import torch
from torch import nn

from compress.layers.codebook import CodebookWeight, pack_indices, unpack_indices
from compress.methods import Context, get_method
from compress.models.checkpoint import load_checkpoint, save_model
from compress.quantize.codebook import (
    CodebookConfig,
    KMeansConfig,
    assign,
    dequantize,
    group_channels,
    jlcm_layer,
    kmeans_codebooks,
    reconstruction_error,
)


def test_pack_unpack_round_trip_at_every_width():
    for bits in (1, 2, 3, 4, 5, 8):
        idx = torch.randint(0, 2**bits, (101,))
        packed = pack_indices(idx, bits)
        assert packed.numel() == -(-101 * bits // 8)
        assert torch.equal(unpack_indices(packed, bits, 101), idx)


def test_jlcm_reconstruction_not_worse_than_kmeans_and_usually_better():
    torch.manual_seed(0)
    layer = nn.Conv2d(8, 16, 3, padding=1, bias=False)
    x = torch.randn(64, 8, 6, 6)
    cfg = CodebookConfig(bits=2, groups=4, steps=150)
    idx, gid, cb, stats = jlcm_layer(layer, x, 2, 4, cfg, torch.Generator().manual_seed(0))
    # k-means per layer (Deep Compression) on the same layer
    g1 = group_channels(layer.weight, 1)
    cb1 = kmeans_codebooks(layer.weight.detach(), g1, 2, 30)
    km = reconstruction_error(layer, x, dequantize(assign(layer.weight.detach(), g1, cb1), g1, cb1, layer.weight.shape))
    err = reconstruction_error(layer, x, dequantize(idx, gid, cb, layer.weight.shape))
    assert err <= stats["kmeans_mse"] + 1e-12 and err < km
    assert cb.shape == (4, 4) and int(idx.max()) < 4


def test_codebook_method_small_checkpoint_and_onnx_matching_torch(trained, digits, tmp_path):
    r = get_method("quantize", "codebook").fn(
        trained, CodebookConfig(bits=3, groups=2, steps=20, calib_size=64), Context(data=digits, workdir=tmp_path)
    )
    layers = [m for m in r.model.module.modules() if isinstance(m, CodebookWeight)]
    assert len(layers) == 5
    for m in layers:
        assert m.codebooks.shape[1] == 8 and int(m.indices().max()) < 8
        assert len(torch.unique(m.weight_value())) <= 8 * m.codebooks.shape[0]
    assert 3.0 <= r.metrics["bits_per_weight"] < 3.6
    float_bytes = 4 * r.metrics["quantized_weights"]
    assert r.metrics["onnx_bytes"] < 0.5 * float_bytes and r.metrics["size_bytes"] < 0.5 * float_bytes
    assert r.metrics["onnx_max_abs_diff"] <= 1e-4
    assert r.metrics["accuracy"] > 0.6
    # the checkpoint reloads to the same network
    loaded = load_checkpoint(save_model(r.model, tmp_path / "saved.pt"))
    x = torch.rand(4, *digits.input_shape)
    assert torch.equal(loaded.module(x), r.model.module.eval()(x))


def test_kmeans_baseline_has_one_codebook_per_layer(trained, digits, tmp_path):
    r = get_method("quantize", "kmeans").fn(trained, KMeansConfig(bits=2), Context(data=digits, workdir=tmp_path))
    for m in r.model.module.modules():
        if isinstance(m, CodebookWeight):
            assert m.codebooks.shape == (1, 4)
