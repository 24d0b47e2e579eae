"""`compress compare` between ONNX Runtime artifacts (and torch) on CPU, and `compress build`'s guards."""

from __future__ import annotations

import json

import numpy as np
import pytest
from typer.testing import CliRunner

from compress.cli.main import app


def _onnx(path, noise: float = 0.0):
    """A real exported model: a tiny CNN on 3x8x8 digits, its head perturbed by `noise`."""
    import torch

    from compress.export import export_onnx
    from compress.export.onnx import ExportConfig
    from compress.models.sources import load_model

    torch.manual_seed(0)
    model = load_model(
        "builtin:simple_cnn", num_classes=10, in_channels=3, input_shape=(3, 8, 8), kwargs={"width": 0.25}
    )
    if noise:
        with torch.no_grad():
            last = [m for m in model.module.modules() if isinstance(m, torch.nn.Linear)][-1]
            last.weight.add_(torch.randn_like(last.weight) * noise)
    export_onnx(model, path, ExportConfig(exporter="torchscript", opset=17))  # the quicker exporter
    return model, path


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    d = tmp_path_factory.mktemp("cmp")
    model, a = _onnx(d / "a.onnx")
    _, b = _onnx(d / "b.onnx", noise=0.05)
    from compress.models import save_model

    pt = save_model(model, d / "a.pt")
    return a, b, pt


def _run(*args):
    return CliRunner().invoke(app, [str(a) for a in args])


def test_same_model_passes_with_zero_error(models, tmp_path):
    a, _, _ = models
    out = tmp_path / "cmp.json"
    r = _run("compare", a, a, "--input-shape", "3,8,8", "--samples", "10", "--batch-size", "4", "--json", out)
    assert r.exit_code == 0, r.output
    assert "PASS" in r.output
    res = json.loads(out.read_text())
    (stats,) = res["outputs"].values()
    assert res["passed"] and stats["abs"]["max"] == 0 and stats["top1_agreement"] == 1.0
    assert res["inputs"] == {"source": "random", "samples": 10, "seed": 0}
    assert res["a"]["backend"] == res["b"]["backend"] == "onnxruntime"


def test_a_changed_model_fails_tight_tolerances_and_passes_loose_ones(models, tmp_path):
    a, b, _ = models
    out = tmp_path / "cmp.json"
    tight = _run(
        "compare",
        a,
        b,
        "--data",
        "digits",
        "--image-size",
        "8",
        "--limit",
        "40",
        "--atol",
        "1e-5",
        "--rtol",
        "1e-5",
        "--json",
        out,
    )
    assert tight.exit_code == 1, tight.output
    assert "FAIL" in tight.output
    res = json.loads(out.read_text())
    (stats,) = res["outputs"].values()
    assert res["inputs"]["source"] == "data" and stats["failed_elements"] > 0 and stats["abs"]["max"] > 1e-5
    loose = _run(
        "compare", a, b, "--data", "digits", "--image-size", "8", "--limit", "40", "--atol", "10", "--rtol", "10"
    )
    assert loose.exit_code == 0, loose.output
    gated = _run(
        "compare", a, b, "--input-shape", "3,8,8", "--atol", "10", "--rtol", "10", "--min-top1-agreement", "1.01"
    )
    assert gated.exit_code == 2 and "[0, 1]" in gated.output


def test_onnx_against_its_torch_source(models):
    a, _, pt = models
    r = _run(
        "compare",
        pt,
        a,
        "--backends",
        "torch,onnxruntime",
        "--input-shape",
        "3,8,8",
        "--atol",
        "1e-4",
        "--rtol",
        "1e-3",
    )
    assert r.exit_code == 0, r.output
    assert "(torch)" in r.output and "(onnxruntime)" in r.output


@pytest.mark.parametrize(
    "args, says",
    [
        (["--backends", "a,b,c"], "one or two names"),
        (["--backends", "onnxruntime,trt"], "unknown backend 'trt'"),
        (["--samples", "0"], "at least 1"),
        (["--input-shape", "3,9,9"], "expects"),
    ],
)
def test_bad_input_is_one_line_exit_2(models, args, says):
    a, b, _ = models
    r = _run("compare", a, b, *args)
    assert r.exit_code == 2, r.output
    assert says in r.output and "Traceback" not in r.output


def test_build_plan_only_shows_polygraphy_loaders(models):
    pytest.importorskip("polygraphy")
    a, _, _ = models
    r = _run(
        "build",
        a,
        "--shapes",
        "1x3x8x8:4x3x8x8:8x3x8x8",
        "--sparse-weights",
        "--workspace",
        "256M",
        "--opt-level",
        "4",
        "--plan-only",
    )
    assert r.exit_code == 0, r.output
    plan = json.loads(r.output[r.output.index("{") :])
    assert plan["network"] == {"loader": "NetworkFromOnnxPath", "path": str(a), "strongly_typed": True}
    assert plan["config"]["sparse_weights"] is True and plan["config"]["builder_optimization_level"] == 4
    assert plan["config"]["workspace_bytes"] == 256 * 2**20
    assert plan["flags"]["shapes"][0]["max"] == [8, 3, 8, 8]


def test_build_without_tensorrt_names_the_extra_and_leaves_nothing(models, tmp_path):
    from compress.backends.tensorrt import have_tensorrt

    if have_tensorrt():
        pytest.skip("TensorRT is installed here")
    a, _, _ = models
    out = tmp_path / "engine"
    r = _run("build", a, "--shapes", "1x3x8x8:4x3x8x8:8x3x8x8", "--out", out)
    assert r.exit_code == 2, r.output
    assert "compress[tensorrt]" in r.output
    assert not out.exists() and not out.with_name("engine.partial").exists()
    r = _run("build", a, "--shapes", "8x3x8x8:4x3x8x8:1x3x8x8", "--plan-only")
    assert r.exit_code == 2 and "min <= opt <= max" in r.output
    r = _run("build", a, "--backend", "openvino", "--out", out)
    assert r.exit_code == 2 and "unknown build backend" in r.output


def test_random_inputs_follow_the_seed(models):
    from compress.compare import CompareConfig, batches, load_session

    a, _, _ = models
    sess, _ = load_session(a, "onnxruntime")
    cfg = CompareConfig(input_shape=(3, 8, 8), samples=5, batch_size=2)
    one = np.concatenate(list(batches(sess, cfg)))
    two = np.concatenate(list(batches(sess, cfg)))
    other = np.concatenate(list(batches(sess, CompareConfig(input_shape=(3, 8, 8), samples=5, seed=1))))
    assert one.shape == (5, 3, 8, 8) and np.array_equal(one, two) and not np.array_equal(one, other)


def test_build_writes_a_run_dir_with_engine_log_and_layers(models, tmp_path, monkeypatch):
    """`compress build`'s run directory, with TensorRT's build itself stood in for (no GPU here)."""
    pytest.importorskip("polygraphy")
    import types

    import compress.backends.cuda as cuda
    import compress.backends.tensorrt as trt_backend

    def fake_build(plan, work, trt):
        (work / "engine.plan").write_bytes(b"engine")
        (work / "build.log").write_text("built\n")
        (work / "layers.json").write_text(json.dumps({"Layers": [{"Outputs": [{"Format/Datatype": "Int8"}]}]}))

    monkeypatch.setattr(trt_backend, "require_tensorrt", lambda: types.SimpleNamespace(__version__="10.99.0"))
    monkeypatch.setattr(trt_backend, "_build", fake_build)
    monkeypatch.setattr(cuda, "require_cuda", lambda what: None)
    monkeypatch.setattr(cuda, "gpu_name", lambda index=0: "NVIDIA H200")
    a, _, _ = models
    out = tmp_path / "trt"
    args = ["build", a, "--shapes", "1x3x8x8:4x3x8x8:8x3x8x8", "--sparse-weights", "--out", out]
    r = _run(*args, "--cache-dir", tmp_path / "cache")
    assert r.exit_code == 0, r.output
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["command"] == "build" and manifest["status"] == "complete"
    assert {"engine", "build_log", "layers"} <= set(manifest["artifacts"])
    build = manifest["metrics"]["build"]
    assert build["gpu"] == "NVIDIA H200" and build["flags"]["sparse_weights"] is True
    assert build["layers"]["by_precision"] == {"int8": 1}
    r = _run(*args, "--cache-dir", tmp_path / "cache")
    assert r.exit_code == 2 and "exists" in r.output  # a run directory is not replaced without --force
    r = _run(*args, "--cache-dir", tmp_path / "cache", "--force")
    assert r.exit_code == 0 and "from the cache" in r.output


def test_polygraphy_comparator_gives_the_same_verdict(models, tmp_path):
    pytest.importorskip("polygraphy")
    a, b, _ = models
    common = ["compare", a, b, "--input-shape", "3,8,8", "--samples", "12", "--via", "polygraphy"]
    out = tmp_path / "pg.json"
    tight = _run(*common, "--atol", "1e-5", "--rtol", "1e-5", "--json", out)
    assert tight.exit_code == 1, tight.output
    res = json.loads(out.read_text())
    assert res["via"] == "polygraphy Comparator" and res["a"]["runner"] == "A" and not res["passed"]
    ours = _run("compare", a, b, "--input-shape", "3,8,8", "--samples", "12", "--json", tmp_path / "ours.json")
    assert ours.exit_code == 1
    mine = json.loads((tmp_path / "ours.json").read_text())["outputs"]
    assert [v["abs"] for v in mine.values()] == [v["abs"] for v in res["outputs"].values()]  # same inputs, outputs
    loose = _run(*common, "--atol", "10", "--rtol", "10")
    assert loose.exit_code == 0, loose.output
    r = _run(
        "compare", a, models[2], "--backends", "onnxruntime,torch", "--via", "polygraphy", "--input-shape", "3,8,8"
    )
    assert r.exit_code == 2 and "use --via compress" in r.output
