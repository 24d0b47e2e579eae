"""`compress quantize` and `compress info --qdq` through the CLI."""

import json

import pytest
from typer.testing import CliRunner

from compress.cli.main import app

runner = CliRunner()
SMALL = ["--data", "digits", "--image-size", "16", "--limit", "160"]


def invoke(*args):
    return runner.invoke(app, [str(a) for a in args])


@pytest.fixture(scope="module")
def teacher(tmp_path_factory):
    out = tmp_path_factory.mktemp("q") / "teacher"
    r = invoke("train", "--model", "builtin:resnet_tiny", "--width", "0.5", *SMALL, "--epochs", "2", "--out", out)
    assert r.exit_code == 0, r.output
    return out


def test_int8_for_tensorrt_passes_the_qdq_checker(teacher, tmp_path):
    pytest.importorskip("nncf")
    out = tmp_path / "int8"
    r = invoke(
        "quantize",
        "--model",
        teacher,
        "--method",
        "int8",
        "--target",
        "tensorrt",
        "--calib-size",
        "64",
        *SMALL,
        "--out",
        out,
    )
    assert r.exit_code == 0, r.output
    manifest = json.loads((out / "manifest.json").read_text())
    assert "onnx" in manifest["artifacts"] and manifest["steps"][-1]["method"] == "int8"
    r = invoke("info", out / "model.onnx", "--qdq", "--target", "tensorrt", "--json")
    assert r.exit_code == 0, r.output
    report = json.loads(r.output)["qdq"]
    assert report["valid"] and report["violations"] == [] and report["dequantize_linear"] > 0


def test_codebook_run_is_small(teacher, tmp_path):
    out = tmp_path / "cb"
    r = invoke(
        "quantize",
        "--model",
        teacher,
        "--method",
        "codebook",
        "--bits",
        "3",
        "--groups",
        "2",
        "--steps",
        "5",
        *SMALL,
        "--out",
        out,
    )
    assert r.exit_code == 0, r.output
    manifest = json.loads((out / "manifest.json").read_text())
    float_size = json.loads((teacher / "manifest.json").read_text())["artifacts"]["torch"]["bytes"]
    assert manifest["artifacts"]["onnx"]["bytes"] < float_size
    assert manifest["metrics"]["bits_per_weight"] < 8


def test_flag_for_another_method_is_refused(teacher, tmp_path):
    pytest.importorskip("nncf")
    r = invoke("quantize", "--model", teacher, "--method", "int8", "--bits", "3", *SMALL, "--out", tmp_path / "x")
    assert r.exit_code == 2 and r.output.startswith("error: ") and "Traceback" not in r.output


def test_int8_for_onnxruntime_records_what_the_runtime_ran(teacher, tmp_path):
    pytest.importorskip("nncf")
    out = tmp_path / "int8-ort"
    # no latency plan: on a 12 px model its timings may keep a layer float, and this test is about the record
    args = ("--calib-size", "64", "--no-mixed-by-latency", "--overflow-fix", "enable", *SMALL, "--out", out)
    r = invoke("quantize", "--model", teacher, "--method", "int8", *args)
    assert r.exit_code == 0, r.output
    assert "compute ops run as integer kernels on onnxruntime CPU" in r.output
    metrics = json.loads((out / "manifest.json").read_text())["metrics"]
    done, total = (int(v) for v in metrics["int8_ops"].split("/"))
    assert metrics["overflow_fix"] == "enable" and isinstance(metrics["cpu_isa"], list)
    assert done == total > 0 and metrics["runtime"]["float_compute_nodes"] == []
    assert metrics["speed_verdict"] in ("faster", "slower", "not significantly faster")
    lo, hi = metrics["speedup_ci"]
    assert lo <= metrics["speedup"] <= hi
    r = invoke("info", out / "model.onnx", "--runtime", "onnxruntime", "--json")
    assert r.exit_code == 0, r.output
    report = json.loads(r.output)["runtime"]
    assert report["summary"] == f"int8 ops {done}/{total}" and report["integer_ops"]["QLinearConv"] > 0
    assert invoke("export", teacher, "--out", tmp_path / "float.onnx").exit_code == 0
    r = invoke("info", tmp_path / "float.onnx", "--runtime", "onnxruntime", "--json")  # a float model: 0 integer
    assert r.exit_code == 0, r.output
    assert json.loads(r.output)["runtime"]["integer_compute_ops"] == 0
    r = invoke("info", out / "model.onnx", "--runtime", "tensorrt")
    assert r.exit_code == 2 and "unknown --runtime" in r.output and "Traceback" not in r.output


def test_cli_reports_a_slow_int8_model_and_fails_on_it_only_with_require_speedup(teacher, tmp_path, monkeypatch):
    pytest.importorskip("nncf")
    import compress.quantize.speed as speed

    def slower(*args, rounds=8, **kwargs):
        return {
            "speedup": 0.5, "speedup_ci": [0.45, 0.55], "confidence": 0.95, "verdict": speed.SLOWER,
            "float_ms": 1.0, "quantized_ms": 2.0, "rounds": rounds, "method": "fake", "threads": 1,
        }  # fmt: skip

    monkeypatch.setattr(speed, "measure_speedup", slower)
    args = ("quantize", "--model", teacher, "--method", "int8", "--calib-size", "32", *SMALL)
    r = invoke(*args, "--out", tmp_path / "a")
    assert r.exit_code == 0, r.output  # the CLI default: reported, not an error
    assert "SLOWER than float: 0.50x" in r.output
    metrics = json.loads((tmp_path / "a" / "manifest.json").read_text())["metrics"]
    assert metrics["speed_verdict"] == "slower" and metrics["speed_guard"] is False
    r = invoke(*args, "--require-speedup", "--out", tmp_path / "b")
    assert r.exit_code != 0 and "Traceback" not in r.output
    assert "SLOWER than float: 0.50x" in r.output and "slow ops:" in r.output
