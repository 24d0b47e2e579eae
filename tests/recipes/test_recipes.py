"""Every recipe in recipes/ validates; the quickstart's pipeline runs end to end on a shrunken copy."""

import json
from pathlib import Path

import pytest
import yaml

from compress.recipe import load_recipe, parse_recipe

RECIPES = sorted((Path(__file__).parents[2] / "recipes").glob("*.yaml"))


def test_there_are_recipes():
    assert any(p.name == "quickstart.yaml" for p in RECIPES)


@pytest.mark.parametrize("path", RECIPES, ids=lambda p: p.name)
def test_recipe_validates(path):
    recipe = load_recipe(path)
    assert recipe.steps and all(s.name in recipe.step_configs for s in recipe.steps)


def _shrunk(path: Path) -> dict:
    """The same recipe, every training shortened and the data cut down."""
    raw = yaml.safe_load(path.read_text())
    raw["data"] = {**raw.get("data", {}), "limit": 160, "image_size": 16}
    for step in raw["steps"]:
        params = step.setdefault("params", {})
        for key in ("epochs", "finetune_epochs", "qat_epochs"):
            if key in params:
                params[key] = min(params[key], 1)
        if step["model"].startswith("torchvision:"):
            step["model"] = "builtin:resnet_tiny"
        if step.get("method") == "int8":  # a 16 px network's timings decide nothing; the guard is tested on its own
            params["require_speedup"] = False
    raw["bench"] = {
        "batch_size": 1,
        "latency": {"min_iters": 5, "min_time_s": 0.01, "warmup_iters": 1, "warmup_s": 0.0},
    }
    return raw


@pytest.mark.slow
def test_quickstart_pipeline_end_to_end(tmp_path):
    from compress.pipeline import run_recipe

    pytest.importorskip("nncf")  # the quickstart has an INT8 step
    recipe = parse_recipe(_shrunk(RECIPES[[p.name for p in RECIPES].index("quickstart.yaml")]))
    out = run_recipe(recipe, tmp_path / "quick")
    report = json.loads((out / "report" / "report.json").read_text())
    names = [v["name"] for v in report["variants"]]
    assert names == [s.name for s in recipe.steps if s.variant]
    assert len(names) >= 3
    for v in report["variants"]:
        assert v["value"] is not None and v["latency"]["p50_ms"] > 0 and v["size_bytes"] > 0
    assert (out / "report" / "pareto.png").exists()
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["status"] == "complete" and manifest["variants"] == names


def test_int8_steps_guard_their_speed_unless_the_step_turns_it_off():
    from compress.quantize.int8 import guards_speed

    def int8_step(**params):
        raw = {
            "name": "r",
            "data": {"name": "digits"},
            "steps": [
                {"name": "t", "technique": "train", "model": "builtin:simple_cnn"},
                {"name": "q", "technique": "quantize", "method": "int8", "model": "t", "params": params},
            ],
        }
        return parse_recipe(raw).step_configs["q"]

    assert guards_speed(int8_step()) and int8_step().require_speedup is None
    assert not guards_speed(int8_step(require_speedup=False))
    assert not guards_speed(int8_step(speed_check=False))  # nothing measured, nothing to guard
    quick = load_recipe(RECIPES[[p.name for p in RECIPES].index("quickstart.yaml")])
    assert guards_speed(quick.step_configs["teacher_int8"])


def test_unknown_step_reference_is_reported():
    from compress.errors import RecipeError

    raw = {"name": "x", "steps": [{"name": "a", "technique": "train", "model": "teacher"}]}
    with pytest.raises(RecipeError, match=r"steps\[0\].model: 'teacher' is neither an earlier step"):
        parse_recipe(raw)
    raw = {"name": "x", "steps": [{"name": "a", "technique": "shrink", "model": "builtin:simple_cnn"}]}
    with pytest.raises(RecipeError, match="unknown technique 'shrink'"):
        parse_recipe(raw)


def test_interrupted_recipe_resumes_without_redoing_finished_steps(tmp_path, monkeypatch):
    from compress import pipeline
    from compress.errors import RunDirError

    raw = {
        "name": "resume",
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
        "bench": {"latency": {"min_iters": 3, "min_time_s": 0.0, "warmup_iters": 1, "warmup_s": 0.0}},
    }
    recipe = parse_recipe(raw)
    real = pipeline.run_technique
    calls = []

    def interrupt_on_b(technique, config, model, **kw):
        calls.append(model.history[-1]["technique"] if model.history else "fresh")
        if len(calls) == 2:
            raise KeyboardInterrupt
        return real(technique, config, model, **kw)

    monkeypatch.setattr(pipeline, "run_technique", interrupt_on_b)
    with pytest.raises(KeyboardInterrupt):
        pipeline.run_recipe(recipe, tmp_path / "r")
    assert (tmp_path / "r.partial" / "variants" / "a" / "manifest.json").exists()
    assert not (tmp_path / "r").exists()
    with pytest.raises(RunDirError, match="--resume"):
        pipeline.run_recipe(recipe, tmp_path / "r")
    a_manifest = (tmp_path / "r.partial" / "variants" / "a" / "manifest.json").read_text()
    out = pipeline.run_recipe(recipe, tmp_path / "r", resume=True)
    assert len(calls) == 3  # only b ran again
    assert (out / "variants" / "a" / "manifest.json").read_text() == a_manifest
    assert json.loads((out / "manifest.json").read_text())["variants"] == ["a", "b"]
    steps = json.loads((out / "variants" / "b" / "manifest.json").read_text())["steps"]
    assert [s["technique"] for s in steps] == ["train", "train"]
