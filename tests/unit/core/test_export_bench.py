import numpy as np
import pytest

from compress.backends import get_backend
from compress.bench import BenchConfig, LatencyConfig, bench
from compress.bench.latency import measure, summarize
from compress.errors import BackendError, DataError, ModelError
from compress.export import ExportConfig, export_onnx


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    from compress.models.sources import load_model

    model = load_model("builtin:simple_cnn", num_classes=10, input_shape=(3, 16, 16), kwargs={"width": 0.25})
    path = tmp_path_factory.mktemp("onnx") / "m.onnx"
    report = export_onnx(model, path, ExportConfig(exporter="torchscript"))
    return model, path, report


def test_export_checks_parity_and_batch_is_dynamic(exported):
    model, path, report = exported
    assert report["parity"]["ok"] and report["parity"]["max_abs_diff"] < 1e-4
    assert report["parity"]["top1_agreement"] == 1.0
    session = get_backend("onnxruntime").load(path)
    assert session.input_shape[0] is None and session.input_shape[1:] == [3, 16, 16]
    out = session.run(np.random.rand(5, 3, 16, 16).astype(np.float32))
    assert out.shape == (5, 10)


def test_dynamo_export(tmp_path):
    from compress.models.sources import load_model

    model = load_model("builtin:resnet_tiny", num_classes=10, input_shape=(3, 16, 16), kwargs={"width": 0.25})
    report = export_onnx(model, tmp_path / "d.onnx")
    assert report["exporter"] == "dynamo" and report["opset"] >= 18 and report["parity"]["ok"]


def test_failed_parity_is_an_error_and_leaves_nothing(tmp_path):
    from compress.models.sources import load_model

    model = load_model("builtin:simple_cnn", num_classes=10, input_shape=(3, 16, 16), kwargs={"width": 0.25})
    with pytest.raises(BackendError, match="parity check failed"):
        export_onnx(model, tmp_path / "p.onnx", ExportConfig(exporter="torchscript", atol=-1.0, rtol=0.0))
    assert list(tmp_path.iterdir()) == []


def test_export_without_input_shape_is_refused(tmp_path):
    import torch

    from compress.models.model import Model

    with pytest.raises(ModelError, match="input shape"):
        export_onnx(Model(torch.nn.Identity(), {}, ()), tmp_path / "x.onnx")


def test_wrong_input_shape_and_corrupted_onnx(exported, tmp_path):
    _, path, _ = exported
    session = get_backend("onnxruntime").load(path)
    with pytest.raises(BackendError, match=r"expects \[batch, 3, 16, 16\]"):
        session.run(np.zeros((1, 3, 32, 32), np.float32))
    bad = tmp_path / "bad.onnx"
    bad.write_bytes(path.read_bytes()[:500])
    with pytest.raises(BackendError, match="not a loadable ONNX model"):
        get_backend("onnxruntime").load(bad)
    with pytest.raises(BackendError, match="unknown backend 'tvm'"):
        get_backend("tvm")


def test_bench_measures_latency_and_accuracy_through_onnx(exported, digits_small):
    _, path, _ = exported
    cfg = BenchConfig(latency=LatencyConfig(warmup_iters=2, warmup_s=0.0, min_iters=20, min_time_s=0.05))
    result = bench(path, cfg, data=digits_small)
    lat = result["latency"]
    assert lat["n"] >= 20 and lat["min_ms"] <= lat["p50_ms"] <= lat["p99_ms"] <= lat["max_ms"]
    assert result["metrics"]["samples"] == len(digits_small.val)
    assert 0.0 <= result["metrics"]["accuracy"] <= 1.0
    assert result["runtime"]["providers"] == ["CPUExecutionProvider"]
    from compress.data import DataConfig, load_data

    with pytest.raises(DataError, match="expects inputs"):
        bench(path, cfg, data=load_data(DataConfig(image_size=32, limit=16)))


def test_summarize_and_measure():
    s = summarize(np.array([0.001, 0.002, 0.003, 0.004]), batch_size=2)
    assert s["n"] == 4 and s["p50_ms"] == pytest.approx(2.5) and s["min_ms"] == pytest.approx(1.0)
    assert s["throughput"] == pytest.approx(2 / 0.0025)
    assert s["cov"] == pytest.approx(s["std_ms"] / s["mean_ms"])
    calls = []
    times = measure(lambda: calls.append(1), LatencyConfig(warmup_iters=5, warmup_s=0.0, min_iters=30, min_time_s=0.0))
    assert len(times) == 30 and len(calls) == 35
