"""INT8 through NNCF on a tiny trained CNN: Q/DQ ONNX that runs in ONNX Runtime close to float."""

from __future__ import annotations

import onnx
import pytest

pytest.importorskip("nncf")  # a declared dependency; absent only on bare accelerator images

from compress.errors import RecipeError
from compress.methods import Context, get_method
from compress.quantize.int8 import Int8Config, fold_weight_quantizers
from compress.quantize.qdq import check_qdq


def _run(model, data, tmp_path, **kw):
    ctx = Context(data=data, workdir=tmp_path)
    return get_method("quantize", "int8").fn(model, Int8Config(calib_size=64, **kw), ctx)


def test_ptq_onnx_route_runs_in_ort_close_to_float(trained, digits, tmp_path):
    r = _run(trained, digits, tmp_path)
    assert r.onnx.is_file() and r.metrics["route"] == "onnx"
    ops = {n.op_type for n in onnx.load(str(r.onnx)).graph.node}
    assert {"QuantizeLinear", "DequantizeLinear"} <= ops
    assert r.metrics["accuracy_drop"] <= 0.05, r.metrics
    assert r.metrics["size_bytes"] < 0.5 * r.metrics["float_size_bytes"]  # int8 initializers
    qdq = check_qdq(r.onnx, "onnxruntime")
    assert qdq["valid"] and qdq["quantized_compute_nodes"] == qdq["compute_nodes"]


def test_tensorrt_target_passes_the_checker(trained, digits, tmp_path):
    r = _run(trained, digits, tmp_path, target="tensorrt")
    qdq = check_qdq(r.onnx, "tensorrt")
    assert qdq["valid"], qdq["violations"]
    assert set(qdq["dtypes"]) == {"int8"} and qdq["symmetric"]
    assert qdq["weights"]["per_tensor"] == 0 and qdq["weights"]["per_channel"] >= 4


def test_ignored_layer_stays_float_and_bad_pattern_fails(trained, digits, tmp_path):
    r = _run(trained, digits, tmp_path, ignored=["14"])  # the classifier of simple_cnn
    qdq = check_qdq(r.onnx, "onnxruntime")
    assert len(qdq["float_compute_nodes"]) == 1 and "Gemm" in qdq["float_compute_nodes"][0]
    assert r.metrics["float_layers"] == ["14"] and r.metrics["bits_per_weight"] > 8
    with pytest.raises(RecipeError, match="matches no Conv/Linear"):
        _run(trained, digits, tmp_path, ignored=["nope"])


def test_accuracy_budget_keeps_sensitive_layers_in_float(trained, digits, tmp_path):
    # an unreachable budget: the method must restore max_float_layers layers and say which
    r = _run(trained, digits, tmp_path, max_accuracy_drop=-1.0, max_float_layers=2)
    assert len(r.metrics["budget_restored_layers"]) == 2 and r.metrics["budget_met"] is False
    assert len(check_qdq(r.onnx, "onnxruntime")["float_compute_nodes"]) == 2


def test_torch_route_with_qat_exports_int8_qdq(trained, digits, tmp_path):
    r = _run(trained, digits, tmp_path, qat_epochs=1, target="tensorrt")
    assert r.metrics["route"] == "torch"
    qdq = check_qdq(r.onnx, "tensorrt")
    assert qdq["valid"], qdq["violations"]
    assert r.metrics["accuracy_drop"] <= 0.05, r.metrics
    init_types = {t.data_type for t in onnx.load(str(r.onnx)).graph.initializer if len(t.dims) == 4}
    assert init_types == {onnx.TensorProto.INT8}  # conv weights stored as integers
    assert fold_weight_quantizers(r.onnx) == 0  # nothing left to fold
