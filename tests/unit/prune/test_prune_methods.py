"""The registered prune methods end to end on a tiny residual net and digits: budget, accuracy, records."""

from __future__ import annotations

import json

import pytest
import torch

from compress.config import from_dict
from compress.errors import RecipeError
from compress.methods import Context, get_method, method_names
from compress.train.loop import TrainConfig, train

FAST = {"epochs": 1, "batch_size": 64, "lr": 3e-3}


@pytest.fixture(scope="module")
def trained(digits_small):
    from compress.models.sources import load_model

    model = load_model("builtin:resnet_tiny", num_classes=10, in_channels=3, input_shape=digits_small.input_shape)
    metrics = train(model.module, digits_small, TrainConfig(epochs=4, lr=3e-3), show_progress=False).metrics
    return model, metrics["accuracy"]


def run(name: str, model, data, tmp_path, **params):
    method = get_method("prune", name)
    config = from_dict(method.config, params, where=f"prune.{name}")
    return method.fn(model, config, Context(data=data, workdir=tmp_path))


def test_methods_are_registered():
    assert {"channel", "continuous", "search"} <= set(method_names("prune"))


def test_channel_taylor_finetune_with_distillation(trained, digits_small, tmp_path):
    model, dense_acc = trained
    res = run(
        "channel",
        model,
        digits_small,
        tmp_path,
        target_macs=0.5,
        importance="taylor",
        allocation="global",
        finetune_epochs=1,
        finetune=FAST,
        distill=True,
    )
    m = res.metrics
    assert m["macs_ratio"] <= 0.5 and m["verified"] == "exact"
    assert m["val_accuracy"] > 0.5 * dense_acc  # one epoch of fine-tuning recovers a usable model
    assert json.loads((tmp_path / "prune_report.json").read_text())["metrics"]["macs_after"] == m["macs_after"]
    assert sum(p.numel() for p in model.module.parameters()) > m["params_after"]  # input left untouched


def test_channel_iterative_steps_reach_ratio(trained, digits_small, tmp_path):
    model, _ = trained
    res = run("channel", model, digits_small, tmp_path, ratio=0.5, iterative_steps=2, finetune_epochs=0)
    assert len(res.metrics["steps"]) == 2
    assert res.metrics["steps"][0]["macs"] > res.metrics["steps"][1]["macs"]
    assert res.metrics["macs_ratio"] < 0.4


def test_continuous_meets_budget_and_removes_gated_channels(trained, digits_small, tmp_path):
    model, dense_acc = trained
    res = run("continuous", model, digits_small, tmp_path, target_macs=0.4, train={**FAST, "epochs": 2})
    m = res.metrics
    assert m["macs_ratio"] <= 0.4 and m["units_removed"] > 0 and m["verified"] == "exact"
    assert m["val_accuracy"] > 0.5 * dense_acc
    assert not any(h for mod in res.model.module.modules() for h in mod._forward_pre_hooks.values())


def test_search_records_every_sample(trained, digits_small, tmp_path):
    model, _ = trained
    res = run("search", model, digits_small, tmp_path, target_macs=0.5, samples=3, sample_epochs=1, finetune=FAST)
    samples = json.loads((tmp_path / "search_samples.json").read_text())["samples"]
    assert len(samples) == 3 and all(s["macs_ratio"] <= 0.5 for s in samples)
    assert len({json.dumps(s["widths"], sort_keys=True) for s in samples}) == 3  # different configurations
    best = max(samples, key=lambda s: s["val_accuracy"])
    assert res.metrics["best_sample"] == best["sample"]
    x = torch.randn(2, *digits_small.input_shape)
    assert res.model.module(x).shape == (2, 10)


def test_bad_config_is_a_recipe_error():
    with pytest.raises(RecipeError, match="ratio"):
        from_dict(get_method("prune", "channel").config, {"ratio": 1.5})
    with pytest.raises(RecipeError, match="unknown key"):
        from_dict(get_method("prune", "channel").config, {"ratios": 0.5})


def test_channel_finetunes_with_a_named_distillation_method(trained, digits_small, tmp_path):
    """--distill funmatch: the unpruned model teaches through function matching (its own objective)."""
    model, _ = trained
    plain = run("channel", model, digits_small, tmp_path / "a", ratio=0.5, finetune_epochs=0)
    res = run(
        "channel", model, digits_small, tmp_path / "b", ratio=0.5, finetune_epochs=1, distill="funmatch",
        distill_params={"train": {"batch_size": 64}},
    )  # fmt: skip
    assert res.metrics["val_accuracy"] > 0.3
    assert (tmp_path / "b" / "finetune1").is_dir()  # the method ran with its own workdir (resumable)
    changed = [
        not torch.equal(p, q)
        for p, q in zip(plain.model.module.parameters(), res.model.module.parameters(), strict=True)
    ]
    assert any(changed)
    with pytest.raises(RecipeError, match="unknown distill method"):
        run("channel", model, digits_small, tmp_path / "c", ratio=0.5, finetune_epochs=1, distill="nope")


def test_reconstruction_brings_the_pruned_outputs_back_towards_the_original(trained, digits_small, tmp_path):
    """Least-squares re-fitting lowers the error to the unpruned outputs on images it did not fit."""
    model, _ = trained
    x = torch.stack([digits_small.val[i][0] for i in range(len(digits_small.val))])
    model.module.eval()
    with torch.no_grad():
        y = model.module(x)
    errors = {}
    for rec in (False, True):
        res = run("channel", model, digits_small, tmp_path / str(rec), ratio=0.5, reconstruct=rec, finetune_epochs=0)
        assert res.metrics["verified"] == "exact"  # the re-fitted network is still exactly the sliced one
        res.model.module.eval()
        with torch.no_grad():
            errors[rec] = float(((res.model.module(x) - y) ** 2).mean())
    assert errors[True] < 0.7 * errors[False]
    assert res.metrics["steps"][0]["reconstruction"]["layers"] > 0
