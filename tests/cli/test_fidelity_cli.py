"""Fidelity to a reference model through the CLI (bench, check, report) and in recipes, on images
without labels (`images:PATH`) and on digits."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from PIL import Image
from typer.testing import CliRunner

from compress.cli.main import app

FAST_BENCH = ["--min-iters", "3", "--min-time", "0", "--warmup", "0", "--threads", "1"]
FAST_CHECK = ["--rounds", "6", "--iters", "3", "--threads", "1", "--max-slowdown", "off"]


def _run_dir(path, seed: int, num_classes: int = 10):
    """A committed run directory holding a tiny CNN (its checkpoint and its ONNX export)."""
    from compress.export.onnx import ExportConfig, export_onnx
    from compress.models.checkpoint import save_model
    from compress.models.sources import load_model
    from compress.runs import RunDir

    model = load_model(
        "builtin:simple_cnn",
        num_classes=num_classes,
        in_channels=3,
        input_shape=(3, 8, 8),
        kwargs={"width": 0.25},
        seed=seed,
    )
    run = RunDir(path, "train")
    save_model(model, run.file("model.pt"))
    run.add_artifact("torch", "model.pt")
    export_onnx(model, run.file("model.onnx"), ExportConfig(exporter="torchscript", opset=17))
    run.add_artifact("onnx", "model.onnx")
    return run.commit(), model


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    d = tmp_path_factory.mktemp("fidelity")
    rng = np.random.default_rng(0)
    for i in range(20):
        sub = d / "photos" / ("a" if i % 2 else "b")
        sub.mkdir(parents=True, exist_ok=True)
        Image.fromarray(rng.integers(0, 255, (10 + i % 3, 12, 3), dtype=np.uint8)).save(sub / f"{i}.png")
    a, model_a = _run_dir(d / "a", seed=0)
    b, model_b = _run_dir(d / "b", seed=1)
    five, _ = _run_dir(d / "five", seed=2, num_classes=5)
    return {"dir": d, "images": f"images:{d / 'photos'}", "a": a, "b": b, "five": five, "ma": model_a, "mb": model_b}


def _invoke(*args):
    return CliRunner().invoke(app, [str(a) for a in args])


def _one_line_error(out, text: str) -> None:
    assert out.exit_code == 2, out.output
    lines = [line for line in out.output.strip().splitlines() if line.strip()]
    assert len(lines) == 1 and text in lines[0], out.output


def test_bench_on_images_reports_fidelity_not_accuracy_and_records_it(setup, tmp_path):
    from compress.bench.fidelity import top1_agreement
    from compress.data import DataConfig, load_data

    data = ["--data", setup["images"], "--image-size", "8"]
    out = _invoke("bench", setup["b"], *data, "--reference", setup["a"], "--json", tmp_path / "b.json", *FAST_BENCH)
    assert out.exit_code == 0, out.output
    result = json.loads((tmp_path / "b.json").read_text())
    assert "metrics" not in result  # no labels: no accuracy at all
    fid = result["fidelity"]
    assert fid["reference"] == str(setup["a"]) and fid["reference_kind"] == "onnx" and fid["samples"] == 4
    # the same figure from the two PyTorch models on the same validation images
    x = torch.stack([x for x, _ in load_data(DataConfig(name=setup["images"], image_size=8)).val])
    with torch.no_grad():
        want = top1_agreement(setup["mb"].module.eval()(x).numpy(), setup["ma"].module.eval()(x).numpy())
    assert fid["top1_agreement"] == pytest.approx(want)
    assert fid["kl_divergence"] > 0.0
    manifest = json.loads((setup["b"] / "manifest.json").read_text())
    assert manifest["metrics"]["fidelity"]["top1_agreement"] == fid["top1_agreement"]
    assert "deployed_accuracy" not in manifest["metrics"]


def test_bench_against_the_pytorch_original_of_the_same_network(setup, tmp_path):
    out = _invoke(
        "bench", setup["a"], "--data", "digits", "--image-size", "8", "--limit", "40",
        "--reference", setup["a"] / "model.pt", "--json", tmp_path / "a.json", *FAST_BENCH,
    )  # fmt: skip
    assert out.exit_code == 0, out.output
    result = json.loads((tmp_path / "a.json").read_text())
    assert "accuracy" in result["metrics"]  # digits has labels: accuracy too
    fid = result["fidelity"]
    assert fid["reference_kind"] == "torch" and fid["top1_agreement"] == 1.0 and fid["kl_divergence"] < 1e-6


def test_report_shows_fidelity_columns_and_ranks_unlabelled_variants_by_agreement(setup, tmp_path):
    for name in ("a", "b"):
        assert _invoke("bench", setup[name], "--data", setup["images"], "--image-size", "8",
                       "--reference", setup["a"], *FAST_BENCH).exit_code == 0  # fmt: skip
    out = _invoke("report", setup["a"], setup["b"], "--out", tmp_path / "rep")
    assert out.exit_code == 0, out.output
    report = json.loads((tmp_path / "rep" / "report.json").read_text())
    assert report["metric"] == "top1_agreement" and report["fidelity_reference"] == str(setup["a"])
    rows = {r["name"]: r for r in report["variants"]}
    assert rows["a"]["value"] == 1.0 and rows["b"]["value"] == rows["b"]["fidelity"]["top1_agreement"]
    md = (tmp_path / "rep" / "report.md").read_text()
    assert "| top1_agreement |" in md and "top-5 agr." in md and "KL" in md and "100.00%" in md
    assert "top-1 agr." not in md  # the metric column already is top-1 agreement
    assert "top-5 agr." in out.output


def test_check_gates_top1_agreement(setup, tmp_path):
    data = ["--data", setup["images"], "--image-size", "8"]
    same = _invoke("check", "-a", setup["a"], "-b", setup["a"], *data, "--min-top1-agreement", "99%",
                   "--json", tmp_path / "same.json", *FAST_CHECK)  # fmt: skip
    assert same.exit_code == 0, same.output
    gates = {g["name"]: g for g in json.loads((tmp_path / "same.json").read_text())["gates"]}
    assert gates["fidelity"]["status"] == "pass" and gates["fidelity"]["candidate"] == 1.0
    assert gates["accuracy"]["status"] == "skipped" and "no labels" in gates["accuracy"]["message"]
    assert gates["latency"]["status"] == "skipped"  # --max-slowdown off
    other = _invoke("check", "-a", setup["a"], "-b", setup["b"], *data, "--min-top1-agreement", "1.0",
                    "--json", tmp_path / "other.json", *FAST_CHECK)  # fmt: skip
    gates = {g["name"]: g for g in json.loads((tmp_path / "other.json").read_text())["gates"]}
    if gates["fidelity"]["candidate"] < 1.0:  # two random networks: they disagree somewhere
        assert other.exit_code == 1 and gates["fidelity"]["status"] == "fail", other.output
    # against an explicit reference (b itself): b agrees with b
    ref = _invoke("check", "-a", setup["a"], "-b", setup["b"], *data, "--reference", setup["b"],
                  "--min-top1-agreement", "100%", *FAST_CHECK)  # fmt: skip
    assert ref.exit_code == 0, ref.output


def test_check_reads_fidelity_from_saved_bench_results(setup, tmp_path):
    data = ["--data", setup["images"], "--image-size", "8"]
    for name in ("a", "b"):
        out = _invoke("bench", setup[name], *data, "--reference", setup["a"], "--json", tmp_path / f"{name}.json",
                      *FAST_BENCH)  # fmt: skip
        assert out.exit_code == 0, out.output
    top1 = json.loads((tmp_path / "b.json").read_text())["fidelity"]["top1_agreement"]
    out = _invoke("check", "--baseline-json", tmp_path / "a.json", "--candidate-json", tmp_path / "b.json",
                  "--min-top1-agreement", str(top1), "--max-slowdown", "off", "--max-size-increase", "off",
                  "--json", tmp_path / "c.json")  # fmt: skip
    gates = {g["name"]: g for g in json.loads((tmp_path / "c.json").read_text())["gates"]}
    assert gates["fidelity"]["status"] == "pass" and gates["fidelity"]["candidate"] == top1, out.output


def test_bad_fidelity_input_is_a_one_line_exit_2(setup):
    images = ["--data", setup["images"], "--image-size", "8"]
    _one_line_error(_invoke("bench", setup["a"], "--reference", setup["b"], *FAST_BENCH), "--reference needs --data")
    _one_line_error(
        _invoke("bench", setup["a"], *images, "--weights", setup["a"] / "model.pt", *FAST_BENCH),
        "--weights goes with --reference",
    )
    _one_line_error(_invoke("bench", setup["a"], *images, "--reference", setup["five"], *FAST_BENCH), "not comparable")
    _one_line_error(
        _invoke("bench", setup["a"], *images, "--reference", setup["dir"] / "missing.onnx", *FAST_BENCH), "missing"
    )
    _one_line_error(
        _invoke("check", "-a", setup["a"], "-b", setup["b"], *images, "--min-top1-agreement", "lots", *FAST_CHECK),
        "--min-top1-agreement",
    )
    _one_line_error(
        _invoke("check", "-a", setup["a"], "-b", setup["b"], *images, "--min-top1-agreement", "150%", *FAST_CHECK),
        "min_top1_agreement",
    )
    _one_line_error(
        _invoke("check", "-a", setup["a"], "-b", setup["b"], "--min-top1-agreement", "99%", *FAST_CHECK),
        "--min-top1-agreement needs classification --data",
    )


def test_recipe_variants_record_fidelity_to_the_first_variant(tmp_path):
    from compress.bench.fidelity import record_recipe_fidelity
    from compress.pipeline import run_recipe
    from compress.recipe import parse_recipe

    raw = {
        "name": "fid",
        "data": {"name": "digits", "image_size": 8, "limit": 64},
        "steps": [
            {
                "name": "a",
                "technique": "train",
                "model": "builtin:simple_cnn",
                "model_kwargs": {"width": 0.25},
                "params": {"epochs": 1},
            },
            {"name": "b", "technique": "train", "model": "a", "params": {"epochs": 1, "lr": 0.05}},
        ],  # fmt: skip
        "bench": {"latency": {"min_iters": 3, "min_time_s": 0.0, "warmup_iters": 1, "warmup_s": 0.0}},
        "export": {"exporter": "torchscript", "opset": 17},
    }
    out = run_recipe(parse_recipe(raw), tmp_path / "r")
    fa = json.loads((out / "variants" / "a" / "manifest.json").read_text())["metrics"]["fidelity"]
    fb = json.loads((out / "variants" / "b" / "manifest.json").read_text())["metrics"]["fidelity"]
    assert fa["reference"] == "a" and fa["top1_agreement"] == 1.0 and fa["kl_divergence"] < 1e-9
    assert fb["reference"] == "a" and fb["samples"] == fa["samples"] and fb["kl_divergence"] > 0.0
    report = json.loads((out / "report" / "report.json").read_text())
    assert report["metric"] == "accuracy" and report["fidelity_reference"] == "a"
    assert "top-1 agr." in (out / "report" / "report.md").read_text()
    raw["bench"]["fidelity"] = False  # turned off: nothing is measured (the variant is never touched)
    recipe = parse_recipe(raw)
    assert record_recipe_fidelity(None, recipe, recipe.steps[1], None, None) is None
