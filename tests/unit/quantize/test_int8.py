"""INT8 through NNCF on a tiny trained CNN: Q/DQ ONNX that runs in ONNX Runtime close to float."""

from __future__ import annotations

import onnx
import pytest

pytest.importorskip("nncf")  # a declared dependency; absent only on bare accelerator images

from compress.errors import CompressError, RecipeError
from compress.methods import Context, get_method
from compress.quantize.budget import onnx_scope
from compress.quantize.int8 import Int8Config, fold_weight_quantizers
from compress.quantize.qdq import check_qdq


def _run(model, data, tmp_path, **kw):
    ctx = Context(data=data, workdir=tmp_path)
    kw.setdefault("require_speedup", False)  # timings of a 12 px model decide nothing; guard tests set it
    kw.setdefault("mixed_by_latency", False)
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
    # what ORT really ran: every Conv/Gemm as an integer kernel, and a measured speed with its interval
    assert r.metrics["int8_ops"] == f"{qdq['compute_nodes']}/{qdq['compute_nodes']}"
    assert r.metrics["runtime"]["integer_ops"]["QLinearConv"] >= 1
    assert r.metrics["speedup_ci"][0] <= r.metrics["speedup"] <= r.metrics["speedup_ci"][1]


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


def _fake_speed(verdict, speedup, calls=None, busy=False):
    def measure(*args, rounds=8, **kwargs):
        if calls is not None:
            calls.append(rounds)
        v = verdict[min(len(calls) - 1, len(verdict) - 1)] if isinstance(verdict, list) else verdict
        return {
            "speedup": speedup,
            "speedup_ci": [speedup * 0.9, speedup * 1.1],
            "confidence": 0.95,
            "verdict": v,
            "float_ms": 1.0,
            "quantized_ms": 1.0 / speedup,
            "rounds": rounds,
            "method": "fake",
            "threads": 1,
            "busy_machine": busy,
            **({"other_cpu_share": 0.6, "cpus": 2, "machine_load": 3.0} if busy else {}),
        }

    return measure


def test_speed_guard_is_on_by_default_names_the_slow_ops_and_only_reports_when_turned_off(
    trained, digits, tmp_path, monkeypatch
):
    import compress.quantize.speed as speed

    monkeypatch.setattr(speed, "measure_speedup", _fake_speed("slower", 0.5))
    for i, flag in enumerate((None, True)):  # None: the default a recipe step gets
        with pytest.raises(CompressError, match=r"SLOWER than float: 0.50x.*slow ops: QLinearConv \d+%"):
            _run(trained, digits, tmp_path / f"a{i}", require_speedup=flag)
    r = _run(trained, digits, tmp_path / "b", require_speedup=False)
    assert r.metrics["speed_verdict"] == "slower" and "SLOWER than float" in r.metrics["int8_summary"]
    assert r.metrics["speed_guard"] is False
    r = _run(trained, digits, tmp_path / "c", require_speedup=None, speed_check=False)  # nothing measured: no guard
    assert "speed_verdict" not in r.metrics and r.metrics["speed_guard"] is False
    with pytest.raises(ValueError, match="require_speedup needs speed_check"):
        Int8Config(require_speedup=True, speed_check=False)


def test_inconclusive_speed_is_measured_again_longer_then_reported_not_an_error(trained, digits, tmp_path, monkeypatch):
    import compress.quantize.speed as speed

    calls: list[int] = []
    monkeypatch.setattr(speed, "measure_speedup", _fake_speed(speed.UNDECIDED, 1.05, calls))
    r = _run(trained, digits, tmp_path / "a", require_speedup=None, speed_rounds=6)
    assert calls == [6, 12]  # a second, twice as long measurement
    assert r.metrics["speed_guard"] is True and r.metrics["speed_verdict"] == speed.UNDECIDED
    assert r.metrics["speed"]["first_attempt"]["rounds"] == 6 and r.metrics["speed"]["rounds"] == 12
    assert "not measurably faster than float: 1.05x" in r.metrics["int8_summary"]
    calls.clear()  # decided by the longer measurement: its verdict counts
    monkeypatch.setattr(speed, "measure_speedup", _fake_speed([speed.UNDECIDED, speed.SLOWER], 0.9, calls))
    with pytest.raises(CompressError, match="SLOWER than float"):
        _run(trained, digits, tmp_path / "b", require_speedup=None, speed_rounds=6)
    assert calls == [6, 12]
    calls.clear()  # a clear verdict is not measured twice
    monkeypatch.setattr(speed, "measure_speedup", _fake_speed(speed.FASTER, 1.5, calls))
    r = _run(trained, digits, tmp_path / "c", require_speedup=None, speed_rounds=6)
    assert calls == [6] and "first_attempt" not in r.metrics["speed"]


def test_mixed_by_latency_keeps_a_layer_in_float_only_when_that_is_faster(trained, digits, tmp_path, monkeypatch):
    import compress.quantize.budget as budget
    import compress.quantize.speed as speed

    monkeypatch.setattr(budget, "latency_candidates", lambda *a, **k: [{"layer": "0", "cost_us": 1.0}])
    monkeypatch.setattr(speed, "measure_speedup", _fake_speed("faster", 1.3))
    r = _run(trained, digits, tmp_path / "a", mixed_by_latency=True)
    assert r.metrics["latency_float_layers"] == ["0"] and "0" in r.metrics["float_layers"]
    assert len(check_qdq(r.onnx, "onnxruntime")["float_compute_nodes"]) == 1
    monkeypatch.setattr(speed, "measure_speedup", _fake_speed("slower", 0.8))
    r = _run(trained, digits, tmp_path / "b", mixed_by_latency=True)
    assert r.metrics["latency_float_layers"] == [] and check_qdq(r.onnx, "onnxruntime")["float_compute_nodes"] == []


def test_onnx_scope_follows_the_torchscript_node_names():
    assert onnx_scope("layer1.0.conv1") == "/layer1/layer1.0/conv1/"
    assert onnx_scope("features.1.conv.0.0") == "/features/features.1/conv/conv.0/conv.0.0/"


def test_mixed_by_latency_runs_by_default_when_int8_is_not_faster_and_keeps_only_what_measures_faster(
    trained, digits, tmp_path, monkeypatch
):
    import compress.quantize.budget as budget
    import compress.quantize.speed as speed

    layers = [{"layer": "0", "cost_us": 2.0}, {"layer": "3", "cost_us": 1.0}, {"layer": "6", "cost_us": 0.5}]
    monkeypatch.setattr(budget, "latency_candidates", lambda *a, **k: layers)
    calls: list[int] = []
    # all-INT8 vs float: slower; trial "0" vs all-INT8: faster (kept); trial "3" vs that: slower (dropped);
    # then the final file vs float: faster
    verdicts = [speed.SLOWER, speed.FASTER, speed.SLOWER, speed.FASTER]
    monkeypatch.setattr(speed, "measure_speedup", _fake_speed(verdicts, 1.2, calls))
    r = _run(trained, digits, tmp_path / "a", mixed_by_latency=None, latency_trials=2)
    assert len(calls) == 4
    assert r.metrics["latency_float_layers"] == ["0"] and r.metrics["speed_verdict"] == speed.FASTER
    trial = r.metrics["mixed_by_latency_trial"]
    assert trial["candidates"] == ["0", "3"] and [t["kept"] for t in trial["trials"]] == [True, False]
    assert len(check_qdq(r.onnx, "onnxruntime")["float_compute_nodes"]) == 1  # the dropped trial was undone
    calls.clear()  # a faster all-INT8 model is left as it is
    monkeypatch.setattr(speed, "measure_speedup", _fake_speed(speed.FASTER, 1.5, calls))
    r = _run(trained, digits, tmp_path / "b", mixed_by_latency=None)
    assert calls == [8] and r.metrics["latency_float_layers"] == [] and r.metrics["mixed_by_latency_trial"] is None


def test_on_a_busy_machine_the_check_is_not_repeated_and_the_latency_plan_not_tried(
    trained, digits, tmp_path, monkeypatch
):
    import compress.quantize.budget as budget
    import compress.quantize.speed as speed

    monkeypatch.setattr(budget, "latency_candidates", lambda *a, **k: [{"layer": "0", "cost_us": 2.0}])
    calls: list[int] = []
    monkeypatch.setattr(speed, "measure_speedup", _fake_speed(speed.UNDECIDED, 1.2, calls, busy=True))
    r = _run(trained, digits, tmp_path / "a", mixed_by_latency=None, speed_rounds=6)
    assert calls == [6]  # neither measured again longer nor timed for latency trials
    assert r.metrics["latency_float_layers"] == [] and "busy" in r.metrics["mixed_by_latency_trial"]["skipped"]
    assert "other processes took 60% of 2 CPUs" in r.metrics["int8_summary"]
    assert "not tried (busy machine)" in r.metrics["int8_summary"]
    calls.clear()  # asked for explicitly, the plan still runs
    r = _run(trained, digits, tmp_path / "b", mixed_by_latency=True, speed_rounds=6)
    assert len(calls) == 2 and r.metrics["mixed_by_latency_trial"]["trials"][0]["kept"] is False


def test_u8s8_saturation_is_told_by_vnni_on_x86_only():
    from compress.backends.onnxruntime import u8s8_saturates

    assert u8s8_saturates(("avx2",), "x86_64")
    assert not u8s8_saturates(("avx2", "avx512f", "avx512_vnni"), "x86_64")
    assert not u8s8_saturates(("avx2", "avx_vnni"), "AMD64")
    assert not u8s8_saturates((), "aarch64")


def test_overflow_fix_puts_every_weight_in_half_the_int8_range(trained, digits, tmp_path):
    import numpy as np
    from onnx import numpy_helper

    def widest(path) -> int:
        inits = onnx.load(str(path)).graph.initializer
        return max(int(np.abs(numpy_helper.to_array(t).astype(np.int32)).max()) for t in inits if t.data_type == 3)

    half = _run(trained, digits, tmp_path / "a", overflow_fix="enable", speed_check=False)
    full = _run(trained, digits, tmp_path / "b", overflow_fix="disable", speed_check=False)
    assert half.metrics["overflow_fix"] == "enable" and widest(half.onnx) <= 64
    assert full.metrics["overflow_fix"] == "disable" and widest(full.onnx) > 64
    assert half.metrics["accuracy_drop"] <= 0.05


def test_output_ranges_reach_the_rewrites_and_default_to_mse(trained, digits, tmp_path, monkeypatch):
    import compress.quantize.nncf_adapter as adapter

    seen = []
    real = adapter.apply_rewrites

    def spy(path, names, calib=None, range_estimator="unset"):
        seen.append(range_estimator)
        return real(path, names, calib, range_estimator)

    monkeypatch.setattr(adapter, "apply_rewrites", spy)
    assert Int8Config().output_ranges == "mse"
    _run(trained, digits, tmp_path / "a", speed_check=False)
    _run(trained, digits, tmp_path / "b", speed_check=False, output_ranges="mean_minmax")
    assert seen == ["mse", "mean_minmax"]
