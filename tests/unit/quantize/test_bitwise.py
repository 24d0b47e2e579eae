"""Bit-wise training: integer weights times alpha, bit-exact INT8 Q/DQ ONNX, sparsity, save/load."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
import torch
from onnx import numpy_helper

from compress.layers import BitwiseLinear, BitwiseWeight
from compress.methods import Context, get_method
from compress.models.checkpoint import load_checkpoint, save_model
from compress.quantize.bitwise import BitwiseConfig, weight_sparsity
from compress.quantize.qdq import check_qdq


@pytest.fixture(scope="module")
def result(trained, digits, tmp_path_factory):
    return get_method("quantize", "bitwise").fn(
        trained,
        BitwiseConfig(bits=6, train_bits="msb:3", epochs=1),
        Context(data=digits, workdir=tmp_path_factory.mktemp("bw")),
    )


def test_weights_are_integer_multiples_of_alpha(result):
    for m in result.model.module.modules():
        if isinstance(m, BitwiseWeight):
            q = m.integer_weight().detach()
            assert torch.equal(q, q.round()) and float(q.abs().max()) <= 31
            assert torch.equal(m.weight_value().detach(), m.alpha * q)


def test_onnx_weights_dequantize_bit_exactly(result):
    model = onnx.load(str(result.onnx))
    inits = {t.name: numpy_helper.to_array(t) for t in model.graph.initializer}
    torch_w = {
        f"{n}.weight": m.weight_value().detach().numpy()
        for n, m in result.model.module.named_modules()
        if isinstance(m, BitwiseWeight)
    }
    for name, w in torch_w.items():
        q, s = inits[f"{name}_int8"], inits[f"{name}_scale"]
        assert q.dtype == np.int8
        deq = q.astype(np.float32) * s.reshape(-1, *[1] * (q.ndim - 1))
        assert np.array_equal(deq, w)
    assert check_qdq(result.onnx, "onnxruntime")["weights"]["per_channel"] == len(torch_w)
    assert result.metrics["onnx_max_abs_diff"] < 1e-4
    # the report says what ORT runs: float kernels behind a weight-only DequantizeLinear (a size format)
    assert result.metrics["int8_ops"].startswith("0/") and "size format" in result.metrics["deploy_note"]


def test_sparsity_counts_exact_zeros():
    layer = BitwiseLinear(4, 2, False, 4, 4)
    q = torch.tensor([[0, 1, -3, 0], [7, 0, -7, 2]], dtype=torch.float32)
    layer.set_from_integers(q, 0.5)
    assert torch.equal(layer.weight_value().detach(), q * 0.5)
    s = weight_sparsity(torch.nn.Sequential(layer))
    assert s["zero_weights"] == 3 and s["sparsity"] == pytest.approx(3 / 8)


def test_msb_training_leaves_low_bits_untouched(trained, result):
    from compress.quantize.bitwise import to_bitwise

    start = trained.copy()
    to_bitwise(start.module, BitwiseConfig(bits=6, train_bits="msb:3"))
    for (_, a), (_, b) in zip(
        [(n, m) for n, m in start.module.named_modules() if isinstance(m, BitwiseWeight)],
        [(n, m) for n, m in result.model.module.named_modules() if isinstance(m, BitwiseWeight)],
        strict=True,
    ):
        assert torch.equal(a.magnitude[:3] > 0, b.magnitude[:3] > 0)  # bits 0..2 frozen


def test_save_load_round_trip(result, digits, tmp_path):
    loaded = load_checkpoint(save_model(result.model, tmp_path / "saved.pt"))
    x = torch.rand(3, *digits.input_shape)
    assert torch.equal(loaded.module(x), result.model.module.eval()(x))
