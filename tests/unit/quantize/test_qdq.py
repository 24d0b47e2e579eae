"""The Q/DQ checker on hand-built ONNX graphs: each TensorRT rule is caught, valid graphs pass."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from compress.errors import ModelError
from compress.quantize.qdq import check_qdq


def _graph(path, *, act_zp=0, act_dtype=np.int8, weight_scale_shape=(4,), weight_axis=0, weight_dtype=np.int8):
    """input -> Q -> DQ -> Conv(weight: int8 initializer -> DQ) -> output."""
    w = np.arange(4 * 2 * 3 * 3, dtype=np.int64).reshape(4, 2, 3, 3) % 7 - 3
    inits = [
        numpy_helper.from_array(np.array(0.02, np.float32), "a_scale"),
        numpy_helper.from_array(np.array(act_zp, act_dtype), "a_zp"),
        numpy_helper.from_array(w.astype(weight_dtype), "w_q"),
        numpy_helper.from_array(np.full(weight_scale_shape, 0.01, np.float32).reshape(weight_scale_shape), "w_scale"),
        numpy_helper.from_array(np.zeros(weight_scale_shape, weight_dtype), "w_zp"),
    ]
    nodes = [
        helper.make_node("QuantizeLinear", ["input", "a_scale", "a_zp"], ["xq"], name="q_in"),
        helper.make_node("DequantizeLinear", ["xq", "a_scale", "a_zp"], ["xdq"], name="dq_in"),
        helper.make_node("DequantizeLinear", ["w_q", "w_scale", "w_zp"], ["w"], name="dq_w", axis=weight_axis),
        helper.make_node("Conv", ["xdq", "w"], ["output"], name="conv", pads=[1, 1, 1, 1]),
    ]
    graph = helper.make_graph(
        nodes,
        "g",
        [helper.make_tensor_value_info("input", TensorProto.FLOAT, [1, 2, 5, 5])],
        [helper.make_tensor_value_info("output", TensorProto.FLOAT, [1, 4, 5, 5])],
        inits,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    onnx.checker.check_model(model)
    onnx.save(model, str(path))
    return path


def test_valid_tensorrt_graph_passes(tmp_path):
    r = check_qdq(_graph(tmp_path / "ok.onnx"), "tensorrt")
    assert r["valid"], r["violations"]
    assert (r["quantize_linear"], r["dequantize_linear"]) == (1, 2)
    assert r["weights"] == {"per_channel": 1, "per_tensor": 0, "axes": {"0": 1}}
    assert r["activations"]["per_tensor"] == 1 and r["symmetric"]
    assert r["quantized_compute_nodes"] == 1 and r["float_compute_nodes"] == []


def test_asymmetric_activation_is_a_tensorrt_violation(tmp_path):
    path = _graph(tmp_path / "asym.onnx", act_zp=5)
    r = check_qdq(path, "tensorrt")
    assert not r["valid"] and not r["symmetric"]
    assert any("asymmetric" in v and "q_in" in v for v in r["violations"])
    assert check_qdq(path, "onnxruntime")["valid"]  # ONNX Runtime accepts asymmetric graphs


def test_uint8_is_a_tensorrt_violation(tmp_path):
    r = check_qdq(_graph(tmp_path / "u8.onnx", act_zp=0, act_dtype=np.uint8), "tensorrt")
    assert r["dtypes"]["uint8"] == 2
    assert any("uint8" in v for v in r["violations"])


def test_per_tensor_weight_is_a_tensorrt_violation(tmp_path):
    r = check_qdq(_graph(tmp_path / "pt.onnx", weight_scale_shape=()), "tensorrt")
    assert r["weights"]["per_tensor"] == 1
    assert any("per tensor" in v and "dq_w" in v for v in r["violations"])


def test_wrong_channel_axis_is_a_tensorrt_violation(tmp_path):
    r = check_qdq(_graph(tmp_path / "ax.onnx", weight_scale_shape=(2,), weight_axis=1), "tensorrt")
    assert any("axis 1" in v for v in r["violations"])


def test_float_graph_is_not_valid_and_bad_input_is_a_typed_error(tmp_path):
    bad = tmp_path / "bad.onnx"
    bad.write_bytes(b"not onnx")
    with pytest.raises(Exception) as e:
        check_qdq(bad)
    assert "not a readable ONNX file" in str(e.value)
    with pytest.raises(ModelError):
        check_qdq(tmp_path / "missing.onnx")
