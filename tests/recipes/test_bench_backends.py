"""A recipe's `bench.backends`: every variant benched on each backend, one report column per backend."""

import json

import pytest
import yaml
from typer.testing import CliRunner

from compress.cli.main import app
from compress.recipe import parse_recipe

runner = CliRunner()
QUICK = {"latency": {"min_iters": 3, "min_time_s": 0.0, "warmup_iters": 1, "warmup_s": 0.0}}
RECIPE = {
    "name": "backends",
    "data": {"name": "digits", "image_size": 8, "limit": 96},
    "steps": [
        {
            "name": "a",
            "technique": "train",
            "model": "builtin:simple_cnn",
            "model_kwargs": {"width": 0.25},
            "params": {"epochs": 1},
        },
        {"name": "b", "technique": "train", "model": "a", "params": {"epochs": 1}},
    ],
}


def recipe(**bench):
    return {**RECIPE, "bench": {**QUICK, **bench}}


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """The same two-variant recipe benched on onnxruntime alone and on onnxruntime + torch."""
    from compress.pipeline import run_recipe

    tmp = tmp_path_factory.mktemp("backends")
    return {
        "single": run_recipe(parse_recipe(recipe()), tmp / "single"),
        "both": run_recipe(parse_recipe(recipe(backends=["onnxruntime", {"backend": "torch"}])), tmp / "both"),
    }


def test_each_variant_is_benched_on_each_backend_with_its_info(runs):
    for name in ("a", "b"):
        m = json.loads((runs["both"] / "variants" / name / "manifest.json").read_text())["metrics"]
        ort, torch = m["benches"]
        assert (ort["label"], torch["label"]) == ("onnxruntime/cpu", "torch/cpu")
        assert ort["runtime"]["backend"] == "onnxruntime" and torch["runtime"]["backend"] == "torch"
        assert torch["runtime"]["device"] == "cpu" and torch["runtime"]["version"]
        assert ort["latency"]["p50_ms"] > 0 and torch["latency"]["p50_ms"] > 0
        assert m["latency"] == ort["latency"] and m["runtime"] == ort["runtime"]  # the first is primary
        assert "deployed_accuracy" in m


def test_report_has_one_latency_column_per_backend(runs):
    report = json.loads((runs["both"] / "report" / "report.json").read_text())
    assert report["backends"] == ["onnxruntime/cpu", "torch/cpu"]
    a, b = report["variants"]
    assert [x["label"] for x in b["benches"]] == report["backends"]
    assert a["benches"][1]["speedup"] == pytest.approx(1.0)
    assert b["benches"][1]["speedup"] == pytest.approx(a["benches"][1]["p50_ms"] / b["benches"][1]["p50_ms"])
    assert b["speedup"] == pytest.approx(b["benches"][0]["speedup"])  # the primary figure is the first's
    md = (runs["both"] / "report" / "report.md").read_text()
    header = next(line for line in md.splitlines() if line.startswith("| variant"))
    assert "| p50 ms onnxruntime/cpu | speedup onnxruntime/cpu | p50 ms torch/cpu | speedup torch/cpu |" in header
    assert "p90 ms" not in header
    row = next(line for line in md.splitlines() if line.startswith("| b"))
    assert f"| {b['benches'][1]['p50_ms']:.3f} |" in row
    from rich.console import Console

    from compress.report import rich_table

    con = Console(width=400, record=True)
    con.print(rich_table(report))
    text = con.export_text()
    assert "p50 ms torch/cpu" in text and "speedup onnxruntime/cpu" in text and "p99 ms" not in text


def test_single_backend_report_is_unchanged(runs):
    report = json.loads((runs["single"] / "report" / "report.json").read_text())
    assert "backends" not in report and all("benches" not in v for v in report["variants"])
    m = json.loads((runs["single"] / "variants" / "a" / "manifest.json").read_text())
    assert "benches" not in m["metrics"] and m["metrics"]["runtime"]["backend"] == "onnxruntime"
    config = json.loads((runs["single"] / "manifest.json").read_text())["config"]
    assert "backends" not in config["bench"]  # the recorded recipe is what it was before `backends`
    md = (runs["single"] / "report" / "report.md").read_text()
    assert "| Δ | p50 ms | p90 ms | p99 ms | speedup | size |" in md


def test_a_torch_only_recipe_benches_the_checkpoint(tmp_path):
    """`backend: torch` alone times the variant's model.pt (not its ONNX file); fidelity, which compares
    the ONNX files, goes through ONNX Runtime."""
    from compress.pipeline import run_recipe

    one = {**RECIPE, "steps": RECIPE["steps"][:1], "bench": {**QUICK, "backend": "torch"}}
    out = run_recipe(parse_recipe(one), tmp_path / "r")
    m = json.loads((out / "variants" / "a" / "manifest.json").read_text())["metrics"]
    assert m["runtime"]["backend"] == "torch" and m["latency"]["p50_ms"] > 0
    assert m["fidelity"]["top1_agreement"] == 1.0 and "deployed_accuracy" in m


def one_line(result, fragment):
    out = result.output.strip()
    assert result.exit_code == 2, out
    assert "Traceback" not in out and len(out.splitlines()) == 1, out
    assert fragment in out, out


@pytest.mark.parametrize(
    ("bench", "fragment"),
    [
        ({"backends": ["onnxruntime", "onnxrt"]}, "bench.backends[1]: unknown backend 'onnxrt'; available:"),
        ({"backend": "onnxrt"}, "bench.backend: unknown backend 'onnxrt'"),
        ({"backends": ["tensorrt"]}, "bench.backends[0]: tensorrt runs a built engine"),
        ({"backends": ["torch", "torch"]}, "the same backend and options as backends[0]"),
        ({"backends": [{"backend": "onnxruntime", "sparse": "auto"}]}, "runs on --backend torch-cuda"),
        ({"backends": [{"backend": "torch", "bogus": 1}]}, "unknown key 'bogus'"),
        ({"backend": "torch", "backends": ["onnxruntime"]}, "give 'backend' or 'backends', not both"),
        ({"backends": []}, "non-empty list"),
    ],
)
def test_bad_backends_are_one_line_errors_at_check(tmp_path, bench, fragment):
    path = tmp_path / "r.yaml"
    path.write_text(yaml.safe_dump(recipe(**bench)))
    one_line(runner.invoke(app, ["run", str(path), "--check"]), fragment)


def test_a_gpu_backend_without_a_gpu_fails_at_check(tmp_path):
    import torch

    if torch.cuda.is_available():
        pytest.skip("this machine has a GPU")
    path = tmp_path / "r.yaml"
    path.write_text(yaml.safe_dump(recipe(backends=["onnxruntime", {"backend": "torch-cuda", "precision": "fp16"}])))
    one_line(runner.invoke(app, ["run", str(path), "--check"]), "bench.backends[1]: torch-cuda on cuda needs a CUDA")
    from compress.errors import BackendError
    from compress.pipeline import run_recipe

    with pytest.raises(BackendError, match="needs a CUDA device"):  # before any step runs
        run_recipe(parse_recipe(recipe(backends=["onnxruntime", "torch-cuda"])), tmp_path / "out")
    assert not (tmp_path / "out").exists() and not (tmp_path / "out.partial").exists()
