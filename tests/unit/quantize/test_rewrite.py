"""Q/DQ placement for ONNX Runtime CPU on hand-built graphs: each rewrite keeps the values and makes ORT
run the compute ops as integer kernels (read back from ORT's optimised graph)."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from compress.backends.onnxruntime import runtime_report
from compress.errors import CompressError
from compress.quantize.rewrite import (
    absorb_activations,
    activations_to_uint8,
    apply_rewrites,
    dequantize_after_shape_ops,
    quantize_biases,
    quantize_outputs,
    tensor_ranges,
    unquantized_outputs,
)
from compress.quantize.targets import rules_for

ORT_REWRITES = rules_for("onnxruntime").rewrites
RNG = np.random.default_rng(0)


def _init(name, array):
    return numpy_helper.from_array(np.asarray(array), name)


def _qdq(x, out, scale, zp, nodes, inits):
    inits += [_init(f"{out}_s", np.float32(scale)), _init(f"{out}_z", zp)]
    nodes += [
        helper.make_node("QuantizeLinear", [x, f"{out}_s", f"{out}_z"], [f"{out}_q"]),
        helper.make_node("DequantizeLinear", [f"{out}_q", f"{out}_s", f"{out}_z"], [out]),
    ]


def _conv(x, out, cin, cout, nodes, inits, bias=True):
    w = RNG.integers(-127, 128, size=(cout, cin, 3, 3)).astype(np.int8)
    inits += [
        _init(f"{out}_w", w),
        _init(f"{out}_ws", np.full(cout, 0.01, np.float32)),
        _init(f"{out}_wz", np.zeros(cout, np.int8)),
    ]
    nodes.append(helper.make_node("DequantizeLinear", [f"{out}_w", f"{out}_ws", f"{out}_wz"], [f"{out}_wf"], axis=0))
    ins = [x, f"{out}_wf"]
    if bias:
        inits.append(_init(f"{out}_b", RNG.standard_normal(cout).astype(np.float32) * 0.1))
        ins.append(f"{out}_b")
    nodes.append(helper.make_node("Conv", ins, [out], pads=[1, 1, 1, 1], name=f"/{out}/Conv"))


def _model(nodes, inits, out, shape=(1, 4, 8, 8)):
    graph = helper.make_graph(
        nodes,
        "g",
        [helper.make_tensor_value_info("input", TensorProto.FLOAT, list(shape))],
        [helper.make_tensor_value_info(out, TensorProto.FLOAT, None)],
        inits,
    )
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


def mobilenet_block():
    """NNCF's layout: int8 input, Conv -> Clip(0, 6) -> int8 Q (zero-point 0), a second Conv with an int8 Q after."""
    nodes, inits = [], []
    _qdq("input", "x", 0.05, np.int8(0), nodes, inits)
    _conv("x", "c1", 4, 8, nodes, inits)
    inits += [_init("lo", np.float32(0.0)), _init("hi", np.float32(6.0))]
    nodes.append(helper.make_node("Clip", ["c1", "lo", "hi"], ["r1"]))
    _qdq("r1", "a1", 0.04, np.int8(0), nodes, inits)
    _conv("a1", "c2", 8, 8, nodes, inits)
    _qdq("c2", "out", 0.05, np.int8(0), nodes, inits)
    return _model(nodes, inits, "out")


def _save(model, path):
    onnx.save(model, str(path))
    return path


def _run(path, x):
    import onnxruntime as ort

    so = ort.SessionOptions()
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    return ort.InferenceSession(str(path), so, providers=["CPUExecutionProvider"]).run(None, {"input": x})[0]


def test_nncf_layout_leaves_a_conv_in_float_and_the_placement_fixes_it(tmp_path):
    before = _save(mobilenet_block(), tmp_path / "before.onnx")
    rep = runtime_report(before, runs=1)
    assert rep["compute_ops"] == 2 and rep["integer_compute_ops"] < 2  # the bug users hit
    after = tmp_path / "after.onnx"
    after.write_bytes(before.read_bytes())
    counts = apply_rewrites(after, ORT_REWRITES)
    assert counts["absorb_activations"] == 1 and counts["activations_to_uint8"] >= 2
    rep = runtime_report(after, runs=1)
    assert rep["integer_compute_ops"] == rep["compute_ops"] == 2, rep["ops"]
    assert rep["summary"] == "int8 ops 2/2" and rep["integer_ops"]["QLinearConv"] == 2
    assert rep["time_share"] and abs(sum(rep["time_share"].values()) - 1) < 1e-6
    x = RNG.standard_normal((1, 4, 8, 8)).astype(np.float32)
    # the absorbed range is finer (uint8 over [0, 5.08] instead of int8 over [-5.12, 5.08]): outputs may move
    # by a few output steps (0.05); a wrong rewrite (lost Clip, wrong zero-point) moves them by far more
    diff = np.abs(_run(after, x) - _run(before, x))
    assert diff.max() <= 4 * 0.05 + 1e-6 and diff.mean() < 0.02


def test_uint8_rewrite_is_bit_exact_and_absorb_keeps_clip_semantics():
    m = mobilenet_block()
    x = RNG.standard_normal((1, 4, 8, 8)).astype(np.float32) * 3
    import tempfile
    from pathlib import Path

    with tempfile.TemporaryDirectory() as tmp:
        ref = _run(_save(m, Path(tmp) / "a.onnx"), x)
        assert activations_to_uint8(m) == 3
        assert {numpy_helper.to_array(t).dtype for t in m.graph.initializer if t.name.endswith("_u8")} == {
            np.dtype(np.uint8)
        }
        np.testing.assert_array_equal(_run(_save(m, Path(tmp) / "b.onnx"), x), ref)
        assert absorb_activations(m) == 1
        assert "Clip" not in {n.op_type for n in m.graph.node}
        q = next(n for n in m.graph.node if n.op_type == "QuantizeLinear" and n.input[0] == "c1")
        scale = numpy_helper.to_array(next(t for t in m.graph.initializer if t.name == q.input[1]))
        assert scale == pytest.approx(127 * 0.04 / 255)  # the int8 top of range, on 255 uint8 steps


def test_clip_with_a_negative_floor_is_not_absorbed():
    m = mobilenet_block()
    lo = next(t for t in m.graph.initializer if t.name == "lo")
    lo.CopyFrom(_init("lo", np.float32(-1.0)))
    assert absorb_activations(m) == 0 and "Clip" in {n.op_type for n in m.graph.node}


def test_classifier_gemm_behind_flatten_with_float_bias_becomes_qgemm(tmp_path):
    nodes, inits = [], []
    _qdq("input", "x", 0.05, np.uint8(128), nodes, inits)
    nodes.append(helper.make_node("Flatten", ["x"], ["flat"], axis=1))
    w = RNG.integers(-127, 128, size=(10, 16)).astype(np.int8)
    inits += [_init("w", w), _init("ws", np.full(10, 0.01, np.float32)), _init("wz", np.zeros(10, np.int8))]
    inits.append(_init("b", RNG.standard_normal(10).astype(np.float32)))
    nodes.append(helper.make_node("DequantizeLinear", ["w", "ws", "wz"], ["wf"], axis=-2))
    nodes.append(helper.make_node("Gemm", ["flat", "wf", "b"], ["out"], transB=1, name="/fc/Gemm"))
    m = _model(nodes, inits, "out", shape=(1, 16, 1, 1))
    before = _save(m, tmp_path / "before.onnx")
    assert runtime_report(before, runs=1)["float_compute_nodes"] == ["/fc/Gemm"]
    x = RNG.standard_normal((1, 16, 1, 1)).astype(np.float32)
    ref = _run(before, x)
    assert dequantize_after_shape_ops(m) >= 2 and quantize_biases(m) == 1
    after = _save(m, tmp_path / "after.onnx")
    rep = runtime_report(after, runs=1)
    assert rep["integer_compute_ops"] == 1 and "QGemm" in rep["integer_ops"]
    np.testing.assert_allclose(_run(after, x), ref, atol=0.5 * 0.05 * 0.01 + 1e-6)  # half an int32 bias step


def _hardswish_block():
    """Q/DQ -> Conv c1 -> HardSwish (no integer kernel) -> Q/DQ -> Conv c2 -> Q/DQ."""
    nodes, inits = [], []
    _qdq("input", "x", 0.05, np.uint8(128), nodes, inits)
    _conv("x", "c1", 4, 8, nodes, inits)
    nodes.append(helper.make_node("HardSwish", ["c1"], ["h1"]))
    _qdq("h1", "a1", 0.05, np.uint8(128), nodes, inits)
    _conv("a1", "c2", 8, 8, nodes, inits)
    _qdq("c2", "out", 0.05, np.uint8(128), nodes, inits)
    return nodes, inits


def test_conv_before_an_activation_without_integer_kernel_gets_its_output_quantized(tmp_path):
    nodes, inits = _hardswish_block()
    m = _model(nodes, inits, "out")
    before = _save(m, tmp_path / "before.onnx")
    assert runtime_report(before, runs=1)["float_compute_nodes"] == ["/c1/Conv"]
    assert unquantized_outputs(m) == ["c1"]
    calib = [RNG.standard_normal((1, 4, 8, 8)).astype(np.float32) for _ in range(4)]
    ranges = tensor_ranges(before, ["c1"], calib)
    assert ranges["c1"][0] < 0 < ranges["c1"][1]
    assert quantize_outputs(m, ranges) == 1
    after = _save(m, tmp_path / "after.onnx")
    rep = runtime_report(after, runs=1)
    assert rep["integer_compute_ops"] == 2, rep["ops"]
    x = calib[0]
    step = (ranges["c1"][1] - ranges["c1"][0]) / 255
    assert np.abs(_run(after, x) - _run(before, x)).max() < 20 * step + 0.1  # one extra rounding, propagated


def _gated_block(kind):
    """Q/DQ input -> Conv -> uint8 Q/DQ -> HardSwish | HardSigmoid*x | Sigmoid*x -> Q/DQ -> Conv -> Q/DQ."""
    nodes, inits = [], []
    _qdq("input", "x", 0.05, np.uint8(128), nodes, inits)
    _conv("x", "c1", 4, 8, nodes, inits)
    _qdq("c1", "a0", 0.08, np.uint8(128), nodes, inits)
    if kind == "hardswish":
        nodes.append(helper.make_node("HardSwish", ["a0"], ["h1"]))
    else:
        gate = [helper.make_node("Sigmoid", ["a0"], ["g"])] if kind == "silu" else []
        gate = gate or [helper.make_node("HardSigmoid", ["a0"], ["g"], alpha=1 / 6, beta=0.5)]
        nodes += [*gate, helper.make_node("Mul", ["g", "a0"], ["h1"])]
    _qdq("h1", "a1", 0.04, np.uint8(20), nodes, inits)
    _conv("a1", "c2", 8, 8, nodes, inits)
    _qdq("c2", "out", 0.05, np.uint8(128), nodes, inits)
    return _model(nodes, inits, "out")


@pytest.mark.parametrize("kind", ["hardswish", "hardsigmoid_mul", "silu"])
def test_hardswish_and_silu_between_quantized_tensors_run_as_integer_ops(kind, tmp_path):
    from compress.quantize.rewrite import integer_activations

    m = _gated_block(kind)
    before = _save(m, tmp_path / "before.onnx")
    float_ops = {"HardSwish", "HardSigmoid", "Sigmoid", "Mul"}
    assert float_ops & set(runtime_report(before, runs=1)["ops"])
    assert integer_activations(m) == 1
    after = _save(m, tmp_path / "after.onnx")
    rep = runtime_report(after, runs=1)
    gate_op = "QLinearSigmoid" if kind == "silu" else "QLinearAdd"
    assert rep["ops"].get(gate_op) == 1 and rep["ops"].get("QLinearMul") == 1, rep["ops"]
    assert not float_ops & set(rep["ops"]) and rep["integer_compute_ops"] == 2
    xs = [RNG.standard_normal((1, 4, 8, 8)).astype(np.float32) for _ in range(3)]
    # the gate is rounded to 1/255: the product moves by at most a step or two of the output grid
    for x in xs:
        assert np.abs(_run(after, x) - _run(before, x)).max() <= 0.05 * 8 + 1e-6


def test_gated_activation_read_in_float_is_left_alone():
    from compress.quantize.rewrite import integer_activations

    m = _gated_block("silu")
    g = m.graph
    g.output[0].name = "h1"  # the product is a graph output: nothing quantizes it
    assert integer_activations(m) == 0


def test_squeeze_excitation_pool_runs_on_the_integer_map(tmp_path):
    from compress.quantize.rewrite import unquantized_pools

    nodes, inits = [], []
    _qdq("input", "x", 0.05, np.uint8(128), nodes, inits)
    _conv("x", "c1", 4, 8, nodes, inits)
    _qdq("c1", "a1", 0.05, np.uint8(128), nodes, inits)
    inits.append(_init("fc_w", RNG.standard_normal((8, 8, 1, 1)).astype(np.float32) * 0.3))
    nodes += [
        helper.make_node("GlobalAveragePool", ["a1"], ["pooled"]),
        helper.make_node("Conv", ["pooled", "fc_w"], ["fc"], name="/se/fc/Conv"),  # SE convs stay float
        helper.make_node("Sigmoid", ["fc"], ["scale"]),
        helper.make_node("Mul", ["a1", "scale"], ["out"]),
    ]
    m = _model(nodes, inits, "out")
    before = _save(m, tmp_path / "before.onnx")
    assert "QLinearGlobalAveragePool" not in runtime_report(before, runs=1)["ops"]
    assert unquantized_pools(m) == ["pooled"]
    calib = [RNG.standard_normal((1, 4, 8, 8)).astype(np.float32) for _ in range(4)]
    observed = tensor_ranges(before, ["pooled"], calib)
    assert observed["pooled"][0] < observed["pooled"][1]
    # the rewrite is checked on a range that covers every calibration value (no clipping): one rounding step
    ranges = {"pooled": (observed["pooled"][0] - 2.0, observed["pooled"][1] + 2.0)}
    assert quantize_outputs(m, ranges) == 1 and unquantized_pools(m) == []
    after = _save(m, tmp_path / "after.onnx")
    assert runtime_report(after, runs=1)["ops"].get("QLinearGlobalAveragePool") == 1
    step = (ranges["pooled"][1] - ranges["pooled"][0]) / 255
    for x in calib:
        assert np.abs(_run(after, x) - _run(before, x)).max() < 4 * step + 0.05


def test_observed_ranges_are_the_mean_of_each_samples_extremes_whatever_the_batching(tmp_path):
    inits = [_init("two", np.float32(2.0))]
    nodes = [helper.make_node("Mul", ["input", "two"], ["t"]), helper.make_node("Relu", ["t"], ["out"])]
    path = _save(_model(nodes, inits, "out", shape=("N", 4, 8, 8)), tmp_path / "m.onnx")
    samples = RNG.standard_normal((6, 4, 8, 8)).astype(np.float32)
    samples[0, 0, 0, 0] = 40.0  # one outlier image sets the global maximum
    lo = 2 * samples.reshape(6, -1).min(1).mean()
    hi = 2 * samples.reshape(6, -1).max(1).mean()
    for batches in ([samples[i : i + 1] for i in range(6)], [samples[:4], samples[4:]]):
        got = tensor_ranges(path, ["t"], batches, "mean_minmax")["t"]
        np.testing.assert_allclose(got, (lo, hi), rtol=1e-5)
    assert hi < 0.5 * 2 * samples.max()  # not the extremes over the whole set


def _scaled_tensor_model(tmp_path):
    inits = [_init("two", np.float32(2.0))]
    nodes = [helper.make_node("Mul", ["input", "two"], ["t"]), helper.make_node("Relu", ["t"], ["out"])]
    return _save(_model(nodes, inits, "out", shape=("N", 4, 8, 8)), tmp_path / "m.onnx")


def test_percentile_ranges_leave_out_rare_outliers_and_follow_the_bulk(tmp_path):
    path = _scaled_tensor_model(tmp_path)
    samples = RNG.standard_normal((40, 4, 8, 8)).astype(np.float32)  # 10,240 values
    samples[3, 0, 0, 0], samples[7, 1, 2, 3] = 60.0, -45.0  # two extreme values
    lo, hi = tensor_ranges(path, ["t"], [samples[:16], samples[16:]], "percentile")["t"]
    ref = 2 * np.quantile(samples, [1e-4, 1 - 1e-4])  # every value is kept below RANGE_SAMPLES per batch
    np.testing.assert_allclose((lo, hi), ref, rtol=1e-5)
    assert -10 < lo < -5 and 5 < hi < 10  # the bulk's tails (2 x 3.7 sd), not the outliers
    mm_lo, mm_hi = tensor_ranges(path, ["t"], [samples[:16], samples[16:]], "mean_minmax")["t"]
    assert mm_hi > hi  # the per-sample extremes include the outlier image's 120


def test_mse_range_clips_outliers_and_keeps_a_full_uniform_range():
    from compress.quantize.rewrite import _mse_range

    uniform = np.linspace(-1.0, 3.0, 20001).astype(np.float32)
    lo, hi = _mse_range(uniform, float(uniform.min()), float(uniform.max()))
    assert (lo, hi) == pytest.approx((-1.0, 3.0))  # clipping a uniform tensor only adds error
    heavy = np.random.default_rng(0).laplace(size=20000).astype(np.float32)  # long tails: clipping pays

    def err(lo: float, hi: float) -> float:
        scale = (hi - lo) / 255.0
        zp = np.clip(np.rint(-lo / scale), 0, 255)
        return float(np.mean(((np.clip(np.rint(heavy / scale) + zp, 0, 255) - zp) * scale - heavy) ** 2))

    lo, hi = _mse_range(heavy, float(heavy.min()), float(heavy.max()))
    assert heavy.min() < lo < 0 < hi < heavy.max()
    assert err(lo, hi) < err(float(heavy.min()), float(heavy.max()))


def test_unknown_range_estimator_is_an_error_naming_the_choices(tmp_path):
    path = _scaled_tensor_model(tmp_path)
    with pytest.raises(CompressError, match="unknown range estimator 'max'; available: mse, percentile, mean_minmax"):
        tensor_ranges(path, ["t"], [RNG.standard_normal((1, 4, 8, 8)).astype(np.float32)], "max")


def _pool_block():
    """Conv -> uint8 Q/DQ -> MaxPool -> Q/DQ on a grid of its own -> Conv, NNCF's layout around a pool."""
    nodes, inits = [], []
    _qdq("input", "x", 0.05, np.uint8(128), nodes, inits)
    _conv("x", "c1", 4, 8, nodes, inits)
    _qdq("c1", "a1", 0.04, np.uint8(128), nodes, inits)
    nodes.append(helper.make_node("MaxPool", ["a1"], ["p"], kernel_shape=[2, 2], strides=[2, 2]))
    _qdq("p", "a2", 0.035, np.uint8(120), nodes, inits)
    _conv("a2", "c2", 8, 8, nodes, inits)
    _qdq("c2", "out", 0.05, np.uint8(128), nodes, inits)
    return _model(nodes, inits, "out")


def test_pool_requantized_on_its_input_grid_is_exact_and_runs_on_integers(tmp_path):
    from compress.quantize.rewrite import share_pool_grid

    before = _save(_pool_block(), tmp_path / "before.onnx")
    plain = onnx.load(str(before))  # the same weights, the pool's output not rounded a second time
    for node in plain.graph.node:
        if node.op_type == "Conv" and node.input[0] == "a2":
            node.input[0] = "p"
    reference = _save(plain, tmp_path / "reference.onnx")
    conversions = sum(runtime_report(before, runs=1)["conversion_ops"].values())  # DQ -> float MaxPool -> Q
    model = onnx.load(str(before))
    assert share_pool_grid(model) == 1 and share_pool_grid(model) == 0  # idempotent
    after = _save(model, tmp_path / "after.onnx")
    rep = runtime_report(after, runs=1)
    # only the model's input Q and output DQ convert; the pool's DQ and Q are gone
    assert rep["conversion_ops"] == {"QuantizeLinear": 1, "DequantizeLinear": 1} and conversions > 2
    assert rep["integer_compute_ops"] == 2
    for _ in range(3):
        x = RNG.standard_normal((1, 4, 8, 8)).astype(np.float32)
        np.testing.assert_allclose(_run(after, x), _run(reference, x), atol=1e-6)
        assert np.abs(_run(before, x) - _run(reference, x)).max() > 0  # the second grid did round


def test_nncf_pool_layout_runs_on_integers_through_the_ort_rules(tmp_path):
    """ResNet's stem as NNCF writes it: the MaxPool's output, unquantized, feeds a conv and the residual Add.
    The ORT rules quantize it for the Add, put that Q on the pool's input grid, then give the next conv its
    int32 bias on that grid, so both convs fuse and the pool runs on uint8 (no DQ/Q around it)."""
    nodes, inits = [], []
    _qdq("input", "x", 0.05, np.uint8(128), nodes, inits)
    _conv("x", "c1", 4, 8, nodes, inits)
    _qdq("c1", "a1", 0.04, np.uint8(128), nodes, inits)
    nodes.append(helper.make_node("MaxPool", ["a1"], ["p"], kernel_shape=[2, 2], strides=[2, 2]))
    _conv("p", "c2", 8, 8, nodes, inits)
    _qdq("c2", "a3", 0.05, np.uint8(128), nodes, inits)
    nodes.append(helper.make_node("Add", ["a3", "p"], ["s"]))
    _qdq("s", "out", 0.06, np.uint8(128), nodes, inits)
    path = _save(_model(nodes, inits, "out"), tmp_path / "nncf.onnx")
    calib = [RNG.standard_normal((1, 4, 8, 8)).astype(np.float32) for _ in range(4)]
    counts = apply_rewrites(path, ORT_REWRITES, calib)
    assert counts["quantize_outputs"] >= 1 and counts["share_pool_grid"] == 1 and counts["quantize_biases"] == 2
    rep = runtime_report(path, runs=1)
    assert rep["integer_compute_ops"] == 2 and rep["conversion_ops"] == {"QuantizeLinear": 1, "DequantizeLinear": 1}


def _shared_bias_chain(bias):
    """Two convs reading one bias tensor, as the exporter writes equal biases (a random-init BatchNorm folds to
    all-zero biases); their weight scales differ, so their int32 biases do too."""
    nodes, inits = [], []
    _qdq("input", "x", 0.05, np.uint8(128), nodes, inits)
    _conv("x", "c1", 4, 8, nodes, inits, bias=False)
    _qdq("c1", "a1", 0.04, np.uint8(128), nodes, inits)
    _conv("a1", "c2", 8, 8, nodes, inits, bias=False)
    next(t for t in inits if t.name == "c2_ws").CopyFrom(_init("c2_ws", np.full(8, 0.02, np.float32)))
    _qdq("c2", "out", 0.05, np.uint8(128), nodes, inits)
    inits.append(_init("shared_b", bias))
    for n in nodes:
        if n.op_type == "Conv":
            n.input.append("shared_b")
    return _model(nodes, inits, "out")


@pytest.mark.parametrize("bias", ["zero", "nonzero"])
def test_convs_sharing_one_bias_tensor_each_get_their_own_int32_bias_and_fuse(bias, tmp_path):
    values = np.zeros(8, np.float32) if bias == "zero" else RNG.standard_normal(8).astype(np.float32) * 0.1
    after = _save(_shared_bias_chain(values), tmp_path / "after.onnx")
    assert apply_rewrites(after, ORT_REWRITES)["quantize_biases"] == 2
    m = onnx.load(str(after))
    names = [t.name for t in m.graph.initializer]
    assert len(names) == len(set(names))  # one int32 bias (and scale) per conv, not two under one name
    rep = runtime_report(after, runs=1)
    assert rep["integer_compute_ops"] == rep["compute_ops"] == 2, rep["ops"]
    # each conv's bias on its own grid (ORT's integer kernel reads the int32 as if its scale were s_x * s_w)
    inits = {t.name: numpy_helper.to_array(t) for t in m.graph.initializer}
    producer = {o: n for n in m.graph.node for o in n.output}
    for conv in (n for n in m.graph.node if n.op_type == "Conv"):
        dq_x, dq_w, dq_b = (producer[i] for i in conv.input)
        s = inits[dq_x.input[1]] * inits[dq_w.input[1]]
        np.testing.assert_array_equal(inits[dq_b.input[1]], s)
        np.testing.assert_allclose(inits[dq_b.input[0]] * s, values, atol=0.5 * s.max() + 1e-9)


def test_a_rewrite_that_writes_one_initializer_name_twice_is_an_error(tmp_path, monkeypatch):
    from compress.errors import CompressError
    from compress.quantize import rewrite

    def twice(model):
        model.graph.initializer.extend([_init("dup", np.float32(1.0)), _init("dup", np.float32(2.0))])
        return 1

    monkeypatch.setattr(rewrite, "share_pool_grid", twice)
    path = _save(mobilenet_block(), tmp_path / "m.onnx")
    with pytest.raises(CompressError, match="share_pool_grid.*'dup' twice"):
        apply_rewrites(path, ("share_pool_grid",))


@pytest.mark.parametrize("estimator", ["mse", "mean_minmax"])
def test_apply_rewrites_quantizes_outputs_with_the_chosen_range_estimator(tmp_path, estimator):
    nodes, inits = _hardswish_block()
    path = _save(_model(nodes, inits, "out"), tmp_path / "m.onnx")
    calib = [RNG.standard_normal((1, 4, 8, 8)).astype(np.float32) for _ in range(8)]
    calib[2][0, :, 3, 3] = 25.0  # one image with extreme pixels: the two estimators disagree
    lo, hi = tensor_ranges(path, ["c1"], calib, estimator)["c1"]
    assert apply_rewrites(path, ("quantize_outputs",), calib, estimator)["quantize_outputs"] == 1
    inits_after = {t.name: numpy_helper.to_array(t) for t in onnx.load(str(path)).graph.initializer}
    lo, hi = min(lo, 0.0), max(hi, 0.0)
    assert float(inits_after["c1_out_scale"]) == pytest.approx((hi - lo) / 255.0, rel=1e-6)
    other = tensor_ranges(_save(_model(nodes, inits, "out"), tmp_path / "o.onnx"), ["c1"], calib,
                          "mean_minmax" if estimator == "mse" else "mse")["c1"]  # fmt: skip
    assert (hi - lo) != pytest.approx(max(other[1], 0.0) - min(other[0], 0.0), rel=1e-3)
