"""TensorRT builds and runs through Polygraphy. Skipped without TensorRT and a CUDA device."""

import json

import numpy as np
import pytest
import torch


def _have_trt() -> bool:
    try:
        import polygraphy  # noqa: F401

        from compress.backends.tensorrt import have_tensorrt

        return have_tensorrt()
    except ImportError:
        return False


pytestmark = [
    pytest.mark.tensorrt,
    pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device"),
    pytest.mark.skipif(not _have_trt(), reason="needs TensorRT and Polygraphy (pip install 'compress[tensorrt]')"),
]


@pytest.fixture
def onnx_file(tmp_path, tiny_model):
    from compress.export import export_onnx

    path = tmp_path / "m.onnx"
    export_onnx(tiny_model, path)
    return path


@pytest.mark.parametrize("precision", ["auto", "fp16"])
def test_build_run_and_match_onnxruntime(tmp_path, tiny_model, onnx_file, precision):
    from compress.backends import get_backend
    from compress.backends.base import BackendOptions
    from compress.backends.tensorrt import TensorRTBuildConfig, build_engine
    from compress.bench.latency import LatencyConfig, measure

    c, h, w = tiny_model.input_shape
    cfg = TensorRTBuildConfig(
        precision=precision,
        shapes=f"1x{c}x{h}x{w}:4x{c}x{h}x{w}:8x{c}x{h}x{w}",
        workspace="256M",
        timing_cache=str(tmp_path / "timing.cache"),
        cache_dir=str(tmp_path / "engines"),
    )
    work = tmp_path / "run"
    work.mkdir()
    report = build_engine(onnx_file, cfg, work_dir=work)
    assert not report["cache_hit"] and (work / "engine.plan").stat().st_size > 0
    assert (tmp_path / "timing.cache").is_file()
    layers = json.loads((work / "layers.json").read_text())
    assert report["layers"]["layers"] == len(layers["Layers"]) > 0
    again = tmp_path / "again"
    again.mkdir()
    assert build_engine(onnx_file, cfg, work_dir=again)["cache_hit"]

    x = np.random.default_rng(0).random((4, c, h, w), dtype=np.float32)
    trt_sess = get_backend("tensorrt").load(work / "engine.plan", BackendOptions(device="cuda"))
    ort_sess = get_backend("onnxruntime").load(onnx_file)
    tol = 5e-2 if precision == "fp16" else 1e-3
    np.testing.assert_allclose(trt_sess.run(x), ort_sess.run(x), atol=tol, rtol=tol)
    for graph in (False, True):
        sess = get_backend("tensorrt").load(work / "engine.plan", BackendOptions(device="cuda", cuda_graph=graph))
        times = measure(
            sess.runner(x), LatencyConfig(warmup_iters=3, warmup_s=0, min_iters=10, min_time_s=0), timer=sess.timer()
        )
        assert len(times) == 10 and times.min() > 0


def test_build_cli_writes_a_run_dir_and_compare_passes(tmp_path, tiny_model, onnx_file):
    from typer.testing import CliRunner

    from compress.cli.main import app

    c, h, w = tiny_model.input_shape
    out = tmp_path / "trt"
    r = CliRunner().invoke(
        app,
        [
            "build",
            str(onnx_file),
            "--shapes",
            f"1x{c}x{h}x{w}:4x{c}x{h}x{w}:8x{c}x{h}x{w}",
            "--out",
            str(out),
            "--cache-dir",
            str(tmp_path / "engines"),
        ],
    )
    assert r.exit_code == 0, r.output
    manifest = json.loads((out / "manifest.json").read_text())
    assert {"engine", "build_log", "layers"} <= set(manifest["artifacts"])
    r = CliRunner().invoke(
        app,
        [
            "compare",
            str(onnx_file),
            str(out),
            "--backends",
            "onnxruntime,tensorrt",
            "--input-shape",
            f"{c},{h},{w}",
            "--atol",
            "1e-3",
            "--rtol",
            "1e-3",
        ],
    )
    assert r.exit_code == 0, r.output
