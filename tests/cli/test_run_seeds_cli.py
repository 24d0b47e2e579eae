"""`compress run RECIPE --seeds N`: one whole run per seed, a summary of mean ± spread, resumable."""

import json
import statistics

import pytest
import yaml
from typer.testing import CliRunner

from compress.cli.main import app

runner = CliRunner()
RECIPE = {
    "name": "seeds",
    "data": {"name": "digits", "image_size": 8, "limit": 96},
    "steps": [
        {
            "name": "a",
            "technique": "train",
            "model": "builtin:simple_cnn",
            "model_kwargs": {"width": 0.25},
            "params": {"epochs": 1},
        },
        {
            "name": "b",
            "technique": "distill",
            "method": "kd",
            "model": "builtin:simple_cnn",
            "model_kwargs": {"width": 0.25},
            "teacher": "a",
            "params": {"train": {"epochs": 1}},
        },
    ],
    "bench": {"latency": {"min_iters": 3, "min_time_s": 0.0, "warmup_iters": 1, "warmup_s": 0.0}},
}


def invoke(*args):
    return runner.invoke(app, [str(a) for a in args])


def one_line(result, code: int, fragment: str = "") -> str:
    out = result.output.strip()
    assert result.exit_code == code, out
    assert "Traceback" not in out and len(out.splitlines()) == 1, out
    assert fragment in out, out
    return out


def write_recipe(folder, **changes):
    path = folder / "recipe.yaml"
    path.write_text(yaml.safe_dump({**RECIPE, **changes}))
    return path


@pytest.fixture(scope="module")
def seeds_run(tmp_path_factory):
    """Two seeds, interrupted in seed 1's second step, refused without --resume, then resumed."""
    from compress import pipeline

    folder = tmp_path_factory.mktemp("seeds")
    recipe, out = write_recipe(folder), folder / "out"
    real = pipeline.run_technique
    calls = []

    def interrupt_seed_1_b(technique, config, model, **kw):
        calls.append(technique)
        if len(calls) == 4:  # seed 0: a, b; seed 1: a, then b is interrupted
            raise KeyboardInterrupt
        return real(technique, config, model, **kw)

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(pipeline, "run_technique", interrupt_seed_1_b)
        interrupted = invoke("run", recipe, "--seeds", 2, "--out", out)
        seed_0 = (out / "seed-0" / "manifest.json").read_text()
        refused = invoke("run", recipe, "--seeds", 2, "--out", out)
        resumed = invoke("run", recipe, "--seeds", 2, "--out", out, "--resume")
    return {
        "out": out,
        "calls": calls,
        "interrupted": interrupted,
        "refused": refused,
        "resumed": resumed,
        "seed_0": seed_0,
    }


def test_resume_keeps_the_finished_seed_and_finishes_the_interrupted_one(seeds_run):
    out = seeds_run["out"]
    assert seeds_run["interrupted"].exit_code == 130, seeds_run["interrupted"].output
    one_line(seeds_run["refused"], 2, "--resume")
    r = seeds_run["resumed"]
    assert r.exit_code == 0, r.output
    assert len(seeds_run["calls"]) == 5  # only seed 1's b ran again: seed 0 and seed 1's a were kept
    assert "seed 0: kept" in r.output and "seed 1: done" in r.output
    assert (out / "seed-0" / "manifest.json").read_text() == seeds_run["seed_0"]
    for seed in (0, 1):
        manifest = json.loads((out / f"seed-{seed}" / "manifest.json").read_text())
        assert manifest["status"] == "complete" and manifest["variants"] == ["a", "b"]
        assert manifest["config"]["seed"] == seed and "seeds" not in manifest["config"]
    assert not list(out.glob("*.partial")) and not list(out.glob(".*.lock")) and not list(out.parent.glob(".*.lock"))


def test_summary_is_the_mean_and_spread_of_the_seed_runs(seeds_run):
    out = seeds_run["out"]
    assert "over 2 seeds" in seeds_run["resumed"].output and "of 2" in seeds_run["resumed"].output
    summary = json.loads((out / "summary.json").read_text())
    assert summary["seeds"] == [0, 1] and summary["baseline"] == "a" and summary["metric"] == "accuracy"
    assert "| b | kd |" in (out / "summary.md").read_text()

    def manifest_metrics(seed, name):
        return json.loads((out / f"seed-{seed}" / "variants" / name / "manifest.json").read_text())["metrics"]

    by_name = {v["name"]: v for v in summary["variants"]}
    assert list(by_name) == ["a", "b"]
    for name, v in by_name.items():
        runs = [manifest_metrics(s, name) for s in (0, 1)]
        for key in ("deployed_accuracy", "deployed_loss", "macs"):
            values = [m[key] for m in runs]
            assert v["figures"][key]["mean"] == pytest.approx(statistics.fmean(values))
            assert v["figures"][key]["std"] == pytest.approx(statistics.stdev(values))
            assert v["figures"][key]["n"] == 2
        assert v["value"]["mean"] == pytest.approx(statistics.fmean(m["deployed_accuracy"] for m in runs))
        assert v["figures"]["deployed_loss"]["std"] > 0  # the seed moved the training of both steps
        assert v["figures"]["deployed_samples"]["std"] == 0  # the same held-out images for every seed
    base = [manifest_metrics(s, "a")["deployed_accuracy"] for s in (0, 1)]
    b = [manifest_metrics(s, "b")["deployed_accuracy"] for s in (0, 1)]
    paired = by_name["b"]["vs_baseline"]
    assert paired["values"] == pytest.approx([x - y for x, y in zip(b, base, strict=True)])
    assert paired["ahead"] == sum(x > y for x, y in zip(b, base, strict=True)) and paired["n"] == 2
    assert by_name["a"]["vs_baseline"] is None


@pytest.mark.parametrize(
    ("args", "changes", "fragment"),
    [
        (["--seeds", "0"], {}, "--seeds must be between 1 and 100, got 0"),
        (["--seeds", "101"], {}, "--seeds must be between 1 and 100, got 101"),
        ([], {"seeds": 0}, "seeds: must be between 1 and 100, got 0"),
        ([], {"seeds": "three"}, "seeds: expected an integer"),
    ],
)
def test_bad_seed_counts_are_one_line_errors(tmp_path, args, changes, fragment):
    recipe = write_recipe(tmp_path, **changes)
    one_line(invoke("run", recipe, "--check", *args), 2, fragment)
    one_line(invoke("run", recipe, "--out", tmp_path / "out", *args), 2, fragment)
    assert not (tmp_path / "out").exists()


def test_check_validates_a_many_seed_recipe_once(tmp_path):
    recipe = write_recipe(tmp_path, seeds=3)
    out = one_line(invoke("run", recipe, "--check"), 0, "valid")
    assert "3 seeds from 0" in out
    assert "seeds from" not in one_line(invoke("run", recipe, "--check", "--seeds", "1"), 0, "valid")
