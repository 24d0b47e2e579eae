"""The TensorRT path up to the build, on CPU: options -> Polygraphy's lazy loaders, cache keys, fp16."""

import json

import numpy as np
import pytest
from conftest import small_onnx

from compress.errors import BackendError, MissingDependencyError

pytest.importorskip("polygraphy")


def _have_trt():
    from compress.backends.tensorrt import have_tensorrt

    return have_tensorrt()


HAVE_TRT = _have_trt()


def test_shapes_parse_min_opt_max_named_and_fixed():
    from compress.backends.tensorrt import parse_shapes

    (p,) = parse_shapes("1x3x224x224:8x3x224x224:32x3x224x224")
    assert (p.name, p.min, p.opt, p.max) == (None, (1, 3, 224, 224), (8, 3, 224, 224), (32, 3, 224, 224))
    (fixed,) = parse_shapes("x=4x3x8x8")
    assert fixed.name == "x" and fixed.min == fixed.opt == fixed.max == (4, 3, 8, 8)
    two = parse_shapes("a=1x3:2x3:4x3, b=1x5:1x5:1x5")
    assert [q.name for q in two] == ["a", "b"] and two[0].max == (4, 3)


@pytest.mark.parametrize(
    "text, says",
    [
        ("1x3x8x8:4x3x8:4x3x8x8", "different ranks"),
        ("4x3x8x8:2x3x8x8:8x3x8x8", "min <= opt <= max"),
        ("0x3:1x3:2x3", "min <= opt <= max"),
        ("1,3,8,8", "separated by x"),
        ("1x3:2x3:4x3:8x3", "expected MIN:OPT:MAX"),
        ("a=1x3:2x3:4x3,1x5:1x5:1x5", "each must be named"),
        ("", "empty"),
    ],
)
def test_bad_shapes_are_one_line_errors(text, says):
    from compress.backends.tensorrt import parse_shapes

    with pytest.raises(BackendError, match=says):
        parse_shapes(text)


def test_workspace_sizes():
    from compress.backends.tensorrt import parse_bytes

    assert parse_bytes("4G") == 4 * 2**30
    assert parse_bytes("512MiB") == 512 * 2**20
    assert parse_bytes("1048576") == 2**20
    assert parse_bytes(None) is None
    with pytest.raises(BackendError, match="--workspace"):
        parse_bytes("lots")


def test_plan_maps_every_option_to_polygraphy_loaders(tmp_path):
    from polygraphy.backend import trt as pg_trt

    from compress.backends.tensorrt import TensorRTBuildConfig, WorkspaceLimit, plan_build

    path = small_onnx(tmp_path / "m.onnx")
    cache = tmp_path / "timing.cache"
    cfg = TensorRTBuildConfig(
        shapes="1x3x8x8:4x3x8x8:16x3x8x8", workspace="1G", timing_cache=str(cache), sparse_weights=True, opt_level=5
    )
    plan = plan_build(path, cfg, work_dir=tmp_path)
    assert isinstance(plan.network, pg_trt.NetworkFromOnnxPath)
    assert plan.network.strongly_typed is True and plan.network.path == str(path)
    cc = plan.create_config
    assert isinstance(cc, pg_trt.CreateConfig)
    assert cc.sparse_weights is True and cc.builder_optimization_level == 5
    shapes = cc.profiles[0]["input"]
    assert (tuple(shapes.min), tuple(shapes.opt), tuple(shapes.max)) == ((1, 3, 8, 8), (4, 3, 8, 8), (16, 3, 8, 8))
    assert cc.timing_cache_path is None  # the cache file does not exist yet: nothing to load
    assert isinstance(plan.config, pg_trt.PostprocessConfig)
    assert isinstance(plan.config._func, WorkspaceLimit) and plan.config._func.limit_bytes == 2**30
    assert isinstance(plan.engine, pg_trt.EngineFromNetwork) and plan.engine.timing_cache_path == str(cache)
    assert plan.flags["shapes"][0]["name"] == "input"  # named after the model's input

    cache.write_bytes(b"x")
    again = plan_build(
        path, TensorRTBuildConfig(shapes="1x3x8x8:4x3x8x8:16x3x8x8", timing_cache=str(cache)), work_dir=tmp_path
    )
    assert again.create_config.timing_cache_path == str(cache)  # loaded once it exists
    assert again.config is again.create_config  # no workspace limit: no post-processing
    assert again.create_config.sparse_weights is False and again.create_config.builder_optimization_level is None
    json.dumps(plan.describe())  # what --plan-only prints is plain JSON


def test_profiles_are_checked_against_the_model(tmp_path):
    from compress.backends.tensorrt import TensorRTBuildConfig, plan_build

    path = small_onnx(tmp_path / "m.onnx")
    for shapes, says in [
        (None, "dynamic input"),
        ("1x3x8x8:2x3x8x8:4x3x9x9", "axis 2 is fixed at 8"),
        ("other=1x3x8x8:1x3x8x8:1x3x8x8", "not an input"),
        ("1x3x8:1x3x8:1x3x8", "rank 3"),
    ]:
        with pytest.raises(BackendError, match=says):
            plan_build(path, TensorRTBuildConfig(shapes=shapes), work_dir=tmp_path)
    fixed = small_onnx(tmp_path / "fixed.onnx", batch=2)
    assert plan_build(fixed, TensorRTBuildConfig(), work_dir=tmp_path).profiles == []
    with pytest.raises(BackendError, match="levels are 0 to 5"):
        plan_build(fixed, TensorRTBuildConfig(opt_level=7), work_dir=tmp_path)
    with pytest.raises(BackendError, match="unknown precision"):
        plan_build(fixed, TensorRTBuildConfig(precision="int4"), work_dir=tmp_path)


def test_engine_cache_key_follows_gpu_version_flags_and_model():
    from compress.backends.tensorrt import TensorRTBuildConfig, engine_cache_key

    flags = TensorRTBuildConfig(shapes="1x3x8x8:2x3x8x8:4x3x8x8").flags()
    base = engine_cache_key("aa", "NVIDIA H200", "10.13.0", flags)
    assert base == engine_cache_key("aa", "NVIDIA H200", "10.13.0", dict(flags))
    others = {
        engine_cache_key("bb", "NVIDIA H200", "10.13.0", flags),
        engine_cache_key("aa", "NVIDIA A100-SXM4-80GB", "10.13.0", flags),
        engine_cache_key("aa", "NVIDIA H200", "11.0.0", flags),
        engine_cache_key("aa", "NVIDIA H200", "10.13.0", {**flags, "sparse_weights": True}),
        engine_cache_key("aa", "NVIDIA H200", "10.13.0", TensorRTBuildConfig(precision="fp16").flags()),
    }
    assert base not in others and len(others) == 5
    # the timing cache changes only how fast the engine builds, not the engine
    assert TensorRTBuildConfig(timing_cache="a").flags() == TensorRTBuildConfig(timing_cache="b").flags()


def test_fp16_conversion_keeps_float_io_and_matches_in_onnxruntime(tmp_path):
    import onnx
    import onnxruntime as ort

    from compress.backends.tensorrt import TensorRTBuildConfig, plan_build

    src = small_onnx(tmp_path / "m.onnx")
    plan = plan_build(src, TensorRTBuildConfig(precision="fp16", shapes="1x3x8x8:2x3x8x8:4x3x8x8"), work_dir=tmp_path)
    assert plan.onnx == tmp_path / "model.fp16.onnx" and plan.network.path == str(plan.onnx)
    half = onnx.load(str(plan.onnx))
    assert {i.data_type for i in half.graph.initializer} == {onnx.TensorProto.FLOAT16}
    assert half.graph.input[0].type.tensor_type.elem_type == onnx.TensorProto.FLOAT
    assert half.graph.output[0].type.tensor_type.elem_type == onnx.TensorProto.FLOAT
    x = np.random.default_rng(0).random((4, 3, 8, 8), dtype=np.float32)
    y32 = ort.InferenceSession(str(src)).run(None, {"input": x})[0]
    y16 = ort.InferenceSession(str(plan.onnx)).run(None, {"input": x})[0]
    assert y16.dtype == np.float32
    np.testing.assert_allclose(y16, y32, atol=1e-2, rtol=1e-2)
    assert not np.array_equal(y16, y32)  # really computed in half precision


def test_fp16_of_a_qdq_graph_raises_it_to_opset_19(tmp_path, monkeypatch):
    """Q/DQ take fp16 scales from opset 19 on; compress's INT8 graphs are opset 17, so INT8 + fp16 (the usual
    TensorRT deployment) needs the graph raised first, by ONNX's version converter."""
    import onnx
    import onnxruntime as ort

    from compress.backends.tensorrt import TensorRTBuildConfig, plan_build

    cfg = TensorRTBuildConfig(precision="fp16", shapes="1x3x8x8:2x3x8x8:4x3x8x8")
    x = np.random.default_rng(0).random((2, 3, 8, 8), dtype=np.float32)
    for opset in (17, 19):
        src = small_onnx(tmp_path / f"q{opset}.onnx", qdq=True, opset=opset)
        work = tmp_path / f"w{opset}"
        work.mkdir()
        plan = plan_build(src, cfg, work_dir=work)
        assert any("QuantizeLinear" in n for n in plan.notes)
        assert any("opset 17 to 19" in n for n in plan.notes) is (opset == 17)
        half = onnx.load(str(plan.onnx))
        assert next(o.version for o in half.opset_import if o.domain in ("", "ai.onnx")) == 19
        assert onnx.TensorProto.FLOAT16 in {i.data_type for i in half.graph.initializer}
        assert sorted(f.name for f in work.iterdir()) == ["model.fp16.onnx"]  # the opset-19 copy is not kept
        y16 = ort.InferenceSession(str(plan.onnx)).run(None, {"input": x})[0]
        y32 = ort.InferenceSession(str(src)).run(None, {"input": x})[0]
        assert y16.shape == (2, 5) and y16.dtype == np.float32
        np.testing.assert_allclose(y16, y32, atol=5e-2, rtol=5e-2)

    def no_adapter(model, version):
        raise RuntimeError("No Adapter For QuantizeLinear")

    monkeypatch.setattr("onnx.version_converter.convert_version", no_adapter)
    with pytest.raises(BackendError, match=r"opset >= 19.*could not raise it \(No Adapter For QuantizeLinear\)"):
        plan_build(small_onnx(tmp_path / "q18.onnx", qdq=True), cfg, work_dir=tmp_path)


@pytest.mark.skipif(HAVE_TRT, reason="TensorRT is installed here")
def test_without_tensorrt_build_and_load_name_the_extra(tmp_path):
    from compress.backends import get_backend
    from compress.backends.tensorrt import TensorRTBuildConfig, build_engine

    path = small_onnx(tmp_path / "m.onnx", batch=2)
    with pytest.raises(MissingDependencyError, match=r"compress\[tensorrt\]"):
        build_engine(path, TensorRTBuildConfig(), work_dir=tmp_path)
    engine = tmp_path / "engine.plan"
    engine.write_bytes(b"not an engine")
    with pytest.raises(MissingDependencyError, match=r"compress\[tensorrt\]"):
        get_backend("tensorrt").load(engine)


def test_layer_summary_from_the_engine_inspector():
    from compress.backends.tensorrt import summarize_layers

    info = {
        "Layers": [
            {
                "Name": "conv1",
                "Outputs": [{"Format/Datatype": "Int8 NC/32HW32"}],
                "TacticName": "sm90_xmma_fprop_sparse",
            },
            {"Name": "conv2", "Outputs": [{"Format/Datatype": "Half format"}], "TacticName": "sm90_xmma_fprop"},
            {"Name": "fc", "Outputs": [{"Format/Datatype": "Float"}], "TacticValue": "0x1"},
            "a name only",
        ]
    }
    s = summarize_layers(info)
    assert s["layers"] == 4
    assert s["by_precision"] == {"int8": 1, "fp16": 1, "fp32": 1, "unknown": 1}
    assert s["sparse_tactics"] == 1


def test_layer_summary_reads_tensorrt_11_split_datatype_field():
    """TensorRT 11's inspector splits "Format/Datatype" into "Datatype" and "Format" (its 10.x-to-11.x
    migration guide); the format string alone names a layout, not the layer's type."""
    from compress.backends.tensorrt import summarize_layers

    def layer(dtype, fmt):
        return {"Name": dtype, "Outputs": [{"Name": "t", "Datatype": dtype, "Format": fmt}], "TacticName": "k"}

    info = {
        "Layers": [
            layer("Int8", "Thirty-two wide channel vectorized row major format (kCHW32)"),
            layer("Half", "Row major linear FP32 format (kLINEAR)"),  # the type field wins over the format text
            layer("Float", "Row major linear format (kLINEAR)"),
            layer("BFloat16", "Row major linear format (kLINEAR)"),
            layer("FP8", "Row major linear format (kLINEAR)"),
        ],
        "I/O Tensors": [{"Name": "input", "IOMode": "Input", "DataType": "Float"}],
    }
    assert summarize_layers(info)["by_precision"] == {"int8": 1, "fp16": 1, "fp32": 1, "bf16": 1, "fp8": 1}
    # the 10.x combined field still reads, BFloat16 there too (it contains "float": not fp32)
    ten = {"Layers": [{"Outputs": [{"Format/Datatype": "Row major linear BFloat16 format"}]}]}
    assert summarize_layers(ten)["by_precision"] == {"bf16": 1}


def test_backends_resolve_lazily_and_know_their_artifact():
    import sys

    from compress.backends import artifact_role, get_backend

    assert get_backend("tensorrt").name == "tensorrt" and get_backend("torch-cuda").name == "torch-cuda"
    assert not hasattr(sys.modules.get("tensorrt"), "Builder") or HAVE_TRT  # choosing it did not import TensorRT
    assert [artifact_role(b) for b in ("onnxruntime", "torch", "torch-cuda", "tensorrt")] == [
        "onnx",
        "torch",
        "torch",
        "engine",
    ]
    with pytest.raises(BackendError, match="unknown backend 'trt'; available:"):
        artifact_role("trt")


def test_engine_cache_reuses_an_engine_only_for_the_same_gpu_and_flags(tmp_path, monkeypatch):
    """The cache logic of build_engine, with the TensorRT build itself stood in for (no GPU here)."""
    import types

    import compress.backends.cuda as cuda
    import compress.backends.tensorrt as trt_backend

    fake_trt = types.SimpleNamespace(__version__="10.99.0", Builder=object)
    gpu = {"name": "NVIDIA H200"}
    builds = []

    def fake_build(plan, work, trt):
        builds.append(plan.flags)
        (work / "engine.plan").write_bytes(b"engine for " + gpu["name"].encode())
        (work / "build.log").write_text("built\n")
        (work / "layers.json").write_text(json.dumps({"Layers": [{"Outputs": [{"Format/Datatype": "Half"}]}]}))

    monkeypatch.setattr(trt_backend, "require_tensorrt", lambda: fake_trt)
    monkeypatch.setattr(trt_backend, "_build", fake_build)
    monkeypatch.setattr(cuda, "require_cuda", lambda what: None)
    monkeypatch.setattr(cuda, "gpu_name", lambda index=0: gpu["name"])
    path = small_onnx(tmp_path / "m.onnx", batch=2)
    cfg = trt_backend.TensorRTBuildConfig(cache_dir=str(tmp_path / "cache"))

    def build(name, config=cfg):
        work = tmp_path / name
        work.mkdir()
        return trt_backend.build_engine(path, config, work_dir=work), work

    first, _ = build("a")
    second, work_b = build("b")
    assert (first["cache_hit"], second["cache_hit"], len(builds)) == (False, True, 1)
    assert (work_b / "engine.plan").read_bytes() == b"engine for NVIDIA H200"
    assert second["layers"]["by_precision"] == {"fp16": 1}
    gpu["name"] = "NVIDIA L4"
    third, work_c = build("c")
    assert not third["cache_hit"] and third["cache_key"] != first["cache_key"] and len(builds) == 2
    sparse, _ = build("d", trt_backend.TensorRTBuildConfig(cache_dir=str(tmp_path / "cache"), sparse_weights=True))
    assert not sparse["cache_hit"] and builds[-1]["sparse_weights"] is True
    again, _ = build("e", trt_backend.TensorRTBuildConfig(cache_dir=str(tmp_path / "cache"), use_cache=False))
    assert not again["cache_hit"] and len(builds) == 4
