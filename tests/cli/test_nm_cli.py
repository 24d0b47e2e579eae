"""`prune --method nm / dynamic-nm`, `info --sparsity` and INT8 on top, through the CLI."""

import json

import numpy as np
import pytest
from typer.testing import CliRunner

from compress.cli.main import app

runner = CliRunner()
SMALL = ["--data", "digits", "--image-size", "12", "--limit", "64", "--channels", "1"]


def invoke(*args):
    return runner.invoke(app, [str(a) for a in args])


@pytest.fixture(scope="module")
def sparse_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("nm") / "24"
    r = invoke(
        "prune", "--model", "builtin:resnet_tiny", "--method", "nm", "--n", 2, "--m", 4, "--permute",
        *SMALL, "--finetune-epochs", 1, "--out", out,
    )  # fmt: skip
    assert r.exit_code == 0, r.output
    return out


def test_nm_prune_keeps_the_pattern_into_onnx_and_reports_ineligible_layers(sparse_run):
    metrics = json.loads((sparse_run / "manifest.json").read_text())["metrics"]
    assert metrics["pattern"] == "2:4" and metrics["pattern_holds"] is True
    assert metrics["ineligible"] == [
        {"name": "stem.0", "op": "conv", "shape": [16, 1, 3, 3], "reason": "input channels 1 not a multiple of 4"}
    ]
    assert "no sparse kernels ran" in metrics["sparse_kernels"]
    assert metrics["permutation"]["kept_after"] >= metrics["permutation"]["kept_before"]
    r = invoke("info", sparse_run / "model.onnx", "--sparsity", "--json")
    assert r.exit_code == 0, r.output
    report = json.loads(r.output)
    assert report["sparse_layers"] == report["eligible_layers"] == metrics["sparse_layers"]
    r = invoke("info", sparse_run / "model.onnx", "--sparsity")
    assert "no sparse kernels ran" in r.output and "not a multiple of 4" in r.output


def test_int8_on_top_keeps_the_pattern(sparse_run, tmp_path):
    pytest.importorskip("nncf")
    out = tmp_path / "q"
    r = invoke("quantize", "--model", sparse_run, "--method", "int8", *SMALL, "--calib-size", 32, "--out", out)
    assert r.exit_code == 0, r.output
    r = invoke("info", out / "model.onnx", "--sparsity", "--json")
    report = json.loads(r.output)
    int8 = [row for row in report["layers"] if row["int8"] and row["can_carry"]]
    assert int8 and all(row["holds"] for row in int8)


def test_dynamic_nm_runs_routed_through_onnxruntime(tmp_path):
    out = tmp_path / "dyn"
    r = invoke(
        "prune", "--model", "builtin:dncnn", "--method", "dynamic-nm", "--levels", "1:4,2:4,4:4",
        "--data", "digits", "--task", "denoising", "--image-size", "8", "--limit", "32", "--channels", "1",
        "--epochs", 1, "--out", out,
    )  # fmt: skip
    assert r.exit_code == 0, r.output
    metrics = json.loads((out / "manifest.json").read_text())["metrics"]
    assert metrics["levels"] == ["1:4", "2:4", "4:4"]
    assert metrics["level_macs"][0] < metrics["level_macs"][1] < metrics["level_macs"][2]
    assert abs(sum(metrics["level_share"]) - 1.0) < 1e-6 and metrics["export"]["parity"]["ok"]
    import onnxruntime as ort

    y = ort.InferenceSession(str(out / "model.onnx")).run(None, {"input": np.zeros((3, 1, 8, 8), np.float32)})[0]
    assert y.shape == (3, 1, 8, 8)


def test_flag_errors_are_one_line(tmp_path):
    r = invoke(
        "prune", "--model", "builtin:resnet_tiny", "--method", "nm", "--levels", "2:4,4:4", "--out", tmp_path / "a"
    )
    assert r.exit_code != 0 and "--levels does not apply to prune method 'nm'" in r.output
    assert "Traceback" not in r.output
    r = invoke("prune", "--model", "builtin:resnet_tiny", "--method", "nm", "--n", 4, "--m", 2, "--out", tmp_path / "b")
    assert r.exit_code != 0 and "0 < n < m" in r.output and "Traceback" not in r.output
    r = invoke(
        "prune", "--model", "builtin:dncnn", "--method", "dynamic-nm", "--levels", "1:4,2:8", "--out", tmp_path / "c"
    )
    assert r.exit_code != 0 and "one M" in r.output


def test_bench_sparse_auto_needs_the_torch_cuda_backend(sparse_run):
    r = invoke("bench", sparse_run / "model.onnx", "--sparse", "auto", "--min-iters", 1, "--min-time", 0)
    assert r.exit_code == 2 and r.output.count("\n") == 1
    assert "--sparse auto runs on --backend torch-cuda" in r.output
    r = invoke("bench", sparse_run / "model.onnx", "--backend", "torch-cuda", "--sparse", "sometimes")
    assert r.exit_code == 2 and "sometimes" in r.output and "Traceback" not in r.output
