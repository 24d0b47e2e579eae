"""The core subcommands through Typer's CliRunner: exit codes, one-line errors, files written."""

import json
import subprocess
import sys

import pytest
from typer.testing import CliRunner

from compress.cli.main import app

runner = CliRunner()
SMALL = ["--data", "digits", "--image-size", "16", "--limit", "200"]


def invoke(*args):
    return runner.invoke(app, [str(a) for a in args])


def assert_user_error(result, fragment):
    assert result.exit_code == 2, result.output
    out = result.output.strip()
    assert out.startswith("error: ") and fragment in out, out
    assert "Traceback" not in out and len(out.splitlines()) == 1, out


def test_help_is_fast_and_imports_no_heavy_library():
    code = (
        "import sys; from compress.cli.main import app; "
        "print([m for m in ('torch', 'onnxruntime', 'nncf') if m in sys.modules])"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"
    result = invoke("--help")
    assert result.exit_code == 0
    for cmd in ("info", "train", "export", "bench", "run", "report"):
        assert cmd in result.output


@pytest.fixture(scope="module")
def teacher_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("runs") / "teacher"
    result = invoke("train", "--model", "builtin:simple_cnn", "--width", "0.25", *SMALL, "--epochs", "2", "--out", out)
    assert result.exit_code == 0, result.output
    return out


def test_train_export_bench_report_flow(teacher_run, tmp_path):
    manifest = json.loads((teacher_run / "manifest.json").read_text())
    assert manifest["status"] == "complete" and manifest["command"] == "train"
    assert manifest["artifacts"]["torch"]["path"] == "model.pt"
    assert manifest["steps"][0]["technique"] == "train"
    assert manifest["inputs"][0]["spec"] == "builtin:simple_cnn"
    assert "torch" in manifest["environment"]["versions"]

    onnx = teacher_run / "model.onnx"
    result = invoke("export", teacher_run, "--out", onnx)
    assert result.exit_code == 0, result.output
    assert json.loads((teacher_run / "manifest.json").read_text())["artifacts"]["onnx"]["path"] == "model.onnx"
    assert_user_error(invoke("export", teacher_run, "--out", onnx), "exists; pass --force")

    bench_json = tmp_path / "bench.json"
    result = invoke("bench", onnx, *SMALL, "--min-time", "0.05", "--min-iters", "10", "--json", bench_json)
    assert result.exit_code == 0, result.output
    data = json.loads(bench_json.read_text())
    assert data["latency"]["n"] >= 10 and "accuracy" in data["metrics"]
    assert data["runtime"]["backend"] == "onnxruntime"

    result = invoke("info", teacher_run, "--json")
    info = json.loads(result.output)
    assert info["params"] > 0 and info["macs"] > 0 and info["layers"][0]["name"] == "0"
    result = invoke("info", onnx)
    assert result.exit_code == 0 and "Conv" in result.output

    result = invoke("report", teacher_run, "--out", tmp_path / "rep")
    assert result.exit_code == 0, result.output
    assert (tmp_path / "rep" / "report.json").exists()


def test_run_dir_is_not_overwritten_without_force(teacher_run):
    before = (teacher_run / "manifest.json").read_text()
    result = invoke("train", "--model", "builtin:simple_cnn", *SMALL, "--epochs", "1", "--out", teacher_run)
    assert_user_error(result, "exists; pass --force")
    assert (teacher_run / "manifest.json").read_text() == before


def test_bad_inputs_give_one_line_errors(tmp_path, teacher_run):
    assert_user_error(invoke("info", "torchvision:resnet1000"), "unknown torchvision model 'resnet1000'")
    assert_user_error(invoke("info", tmp_path / "missing.pt"), "model not found")
    assert_user_error(
        invoke("train", "--model", "builtin:simple_cnn", "--data", "mnist", "--out", tmp_path / "x"),
        "unknown dataset 'mnist'; available:",
    )
    bad = tmp_path / "bad.pt"
    bad.write_bytes(b"not a checkpoint")
    assert_user_error(invoke("info", bad), "bad.pt")
    bad_onnx = tmp_path / "bad.onnx"
    bad_onnx.write_bytes(b"\x08\x07garbage")
    assert_user_error(invoke("bench", bad_onnx), "bad.onnx")
    assert_user_error(
        invoke("bench", teacher_run / "model.onnx", "--data", "digits", "--image-size", "32"), "expects inputs"
    )
    recipe = tmp_path / "r.yaml"
    step = "{name: a, technique: train, model: builtin:simple_cnn, params: {epoch: 1}}"
    recipe.write_text(f"name: x\nsteps:\n  - {step}\n")
    assert_user_error(invoke("run", recipe, "--check"), "steps[0].params: unknown key 'epoch'")
    recipe.write_text("name: x\nsteps: [\n")
    assert_user_error(invoke("run", recipe), "not valid YAML at line")
    assert not (tmp_path / "x").exists() and not (tmp_path / "x.partial").exists()


def test_bench_of_a_run_dir_is_recorded_for_the_report(teacher_run, tmp_path):
    if not (teacher_run / "model.onnx").exists():
        assert invoke("export", teacher_run, "--out", teacher_run / "model.onnx").exit_code == 0
    result = invoke("bench", teacher_run, *SMALL, "--min-time", "0.02", "--min-iters", "5")
    assert result.exit_code == 0, result.output
    manifest = json.loads((teacher_run / "manifest.json").read_text())
    assert manifest["metrics"]["latency"]["n"] >= 5 and "deployed_accuracy" in manifest["metrics"]
    result = invoke("report", teacher_run, "--out", tmp_path / "rep2")
    rep = json.loads((tmp_path / "rep2" / "report.json").read_text())
    assert rep["variants"][0]["latency"]["p50_ms"] > 0 and rep["variants"][0]["value"] is not None


def test_methods_lists_config_fields():
    result = invoke("methods", "train")
    assert result.exit_code == 0 and "supervised" in result.output and "warmup_epochs" in result.output
    assert_user_error(invoke("methods", "shrink"), "unknown technique 'shrink'")


def test_python_dash_m_compress_works():
    out = subprocess.run([sys.executable, "-m", "compress", "--help"], capture_output=True, text=True)
    assert out.returncode == 0 and "report" in out.stdout


def test_outputs_never_replace_inputs_or_existing_files(teacher_run, tmp_path):
    if not (teacher_run / "model.onnx").exists():
        assert invoke("export", teacher_run, "--out", teacher_run / "model.onnx").exit_code == 0
    existing = tmp_path / "mine.json"
    existing.write_text("keep")
    fast = ["--min-time", "0", "--min-iters", "2"]
    assert_user_error(invoke("bench", teacher_run / "model.onnx", *fast, "--json", existing), "exists; pass --force")
    assert existing.read_text() == "keep"
    assert_user_error(invoke("bench", teacher_run / "model.onnx", *fast, "--json", tmp_path), "is a directory")
    before = (teacher_run / "manifest.json").read_text()
    result = invoke(
        "prune", "--model", teacher_run, "--method", "channel", "--ratio", "0.5", "--out", teacher_run, "--force"
    )
    assert_user_error(result, "would replace the input")
    assert (teacher_run / "manifest.json").read_text() == before
    mine = tmp_path / "notes"
    mine.mkdir()
    (mine / "report.md").write_text("my notes")
    assert_user_error(invoke("report", teacher_run, "--out", mine), "not a report folder")
    assert (mine / "report.md").read_text() == "my notes"


def test_a_user_error_mid_run_leaves_no_partial_directory(teacher_run, tmp_path):
    out = tmp_path / "pruned"
    result = invoke(
        "prune", "--model", teacher_run, "--method", "channel", "--ratio", "0.5", "--finetune-epochs", "1", "--out", out
    )  # fine-tuning needs --data
    assert_user_error(result, "needs data")
    assert not out.exists() and not (tmp_path / "pruned.partial").exists()


def test_garbage_checkpoint_and_bad_shapes_are_one_line_errors(tmp_path):
    garbage = tmp_path / "g.pt"
    garbage.write_text("hello\n")
    assert_user_error(invoke("info", garbage), "not a model file (it is text)")
    assert_user_error(invoke("info", "builtin:simple_cnn", "--input-shape", "16,16"), "three positive sizes")
    assert_user_error(invoke("info", "torchvision:resnet18", "--input-shape", "1,32,32"), "does not accept inputs")


def test_usage_errors_are_one_line_from_the_real_entry_point():
    out = subprocess.run(
        [sys.executable, "-m", "compress", "train", "--epochs", "abc", "--model", "x", "--out", "y"],
        capture_output=True,
        text=True,
    )
    assert out.returncode == 2
    assert out.stderr.startswith("error: Invalid value for '--epochs'") and len(out.stderr.strip().splitlines()) == 1


def test_run_check_builds_the_models_it_names(tmp_path):
    recipe = tmp_path / "r.yaml"
    step = "{name: a, technique: train, model: builtin:simple_cnn, model_kwargs: {bogus: 1}}"
    recipe.write_text(f"name: x\nsteps:\n  - {step}\n")
    assert_user_error(invoke("run", recipe, "--check"), "builtin:simple_cnn rejects")
    recipe.write_text("name: x\nsteps:\n  - {name: a, technique: train, model: builtin:simple_cnn}\n")
    result = invoke("run", recipe, "--check")
    assert result.exit_code == 0 and "valid" in result.output
