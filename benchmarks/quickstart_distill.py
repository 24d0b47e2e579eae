"""The quickstart's distilled variant against its parent, over seeds (issue #15).

Runs the three quickstart steps that matter (teacher, student_tiny, student_tiny_fm) through the same
library calls `compress run` makes (`pipeline.load_input`, `prepare_for_model`, `run_technique`), at
each seed, and scores every network on the 359 held-out digits (torch evaluation; the deployed ONNX
model agrees with it, see the quickstart report). The teacher and the parent are trained once per
seed and kept in `--cache`; each `--variant` is the recipe's funmatch step with some params changed
(see VARIANTS), so the suspects can be measured one at a time on the same parents.

    python benchmarks/quickstart_distill.py --seeds 0 1 2 --variant recipe function_matching zero_lr \
        zero_lr_plain_recal plain_recal no_recal lr1e-4 T2 mix_alpha0.2 frozen_bn consistent_lr1e-3 \
        --out benchmarks/quickstart_distill.json
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import os
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import write_result  # noqa: E402

RECIPE = Path(__file__).resolve().parents[1] / "recipes" / "quickstart.yaml"
PARENT, CHILD, TEACHER = "student_tiny", "student_tiny_fm", "teacher"

# funmatch params changed from the recipe's step (dotted keys reach into `train`)
FM = {"mode": "function_matching"}  # the step before issue #15: mixup views (no crop at 32 px)
VARIANTS: dict[str, dict] = {
    "recipe": {},  # the recipe's step as it stands
    "function_matching": FM,
    # the suspects, one at a time, on the function_matching step
    "no_recal": {**FM, "train.bn_recalibration": 0},  # BN running stats as training leaves them
    "plain_recal": {**FM, "recalibrate_on": "plain"},  # BN re-estimated on plain training images
    "zero_lr": {**FM, "train.lr": 1e-12},  # no learning: what BN statistics of mixed views alone do
    "zero_lr_no_recal": {**FM, "train.lr": 1e-12, "train.bn_recalibration": 0},
    "zero_lr_plain_recal": {**FM, "train.lr": 1e-12, "recalibrate_on": "plain"},
    "lr1e-4": {**FM, "train.lr": 1e-4},
    "T2": {**FM, "temperature": 2.0},
    "mix_alpha0.2": {**FM, "mix_alpha": 0.2},  # gentler mixup: a = max(a, 1 - a) mostly above 0.9
    "mix_alpha0.2_plain_recal": {**FM, "mix_alpha": 0.2, "recalibrate_on": "plain"},
    # BatchNorm held at the parent's plain-image statistics while it learns on mixed views (a probe,
    # not a library option: the objective puts every BatchNorm in eval mode at each step)
    "frozen_bn": {**FM, "_frozen_bn": True, "train.bn_recalibration": 0},
    # without mixup (the same plain image for both networks at 32 px)
    "consistent": {"mode": "consistent"},
    "consistent_lr1e-3": {"mode": "consistent", "train.lr": 1e-3},
    "consistent_lr2e-4": {"mode": "consistent", "train.lr": 2e-4},
    "consistent_T2": {"mode": "consistent", "temperature": 2.0},
    "fixed_teacher": {"mode": "fixed_teacher"},
}


def params_with(params: dict, changes: dict) -> dict:
    out = copy.deepcopy(params)
    for key, value in changes.items():
        *path, last = key.split(".")
        d = out
        for p in path:
            d = d.setdefault(p, {})
        d[last] = value
    return out


@contextlib.contextmanager
def frozen_batchnorm(on: bool):
    """While on, function matching's student keeps every BatchNorm in eval mode during training."""
    from compress.distill.funmatch import FunMatchObjective

    original = FunMatchObjective.loss

    def loss(self, model, aux, batch, ctx):
        for m in model.modules():
            if isinstance(m, torch.nn.modules.batchnorm._BatchNorm):
                m.eval()
        return original(self, model, aux, batch, ctx)

    if on:
        FunMatchObjective.loss = loss
    try:
        yield
    finally:
        FunMatchObjective.loss = original


def accuracy(model, data) -> float:
    from compress.train.evaluate import evaluate

    return float(evaluate(model.module, data.val, data.task)["accuracy"])


def trained(step, recipe, data, cache: Path):
    """A step's model, from the cache or trained as `compress run` trains it."""
    from compress.data import prepare_for_model
    from compress.models.checkpoint import save_model
    from compress.models.sources import load_model
    from compress.pipeline import load_input, run_technique

    path = cache / f"seed-{recipe.seed}" / f"{step.name}.pt"
    if path.exists():
        return load_model(str(path))
    model = load_input(step.model, data, kwargs=step.model_kwargs, seed=recipe.seed)
    data = prepare_for_model(data, model.preprocessing)
    result = run_technique(step.technique, recipe.step_configs[step.name], model, data=data)
    path.parent.mkdir(parents=True, exist_ok=True)
    save_model(result.model, path)
    return result.model


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    ap.add_argument("--variant", nargs="+", default=["recipe"], choices=sorted(VARIANTS))
    ap.add_argument("--recipe", default=str(RECIPE))
    ap.add_argument("--cache", default="/tmp/quickstart_distill_cache")
    ap.add_argument("--out", default=None)
    args = ap.parse_args()
    torch.set_num_threads(int(os.environ.get("OMP_NUM_THREADS", "1")))

    from compress.data import load_data, prepare_for_model
    from compress.methods import get_method
    from compress.pipeline import run_technique
    from compress.recipe import load_recipe, reseed, step_config

    base = load_recipe(args.recipe)
    steps = {s.name: s for s in base.steps}
    rows = []
    for seed in args.seeds:
        recipe = reseed(base, seed)
        data = load_data(recipe.data)
        teacher = trained(steps[TEACHER], recipe, data, Path(args.cache))
        parent = trained(steps[PARENT], recipe, data, Path(args.cache))
        tdata = prepare_for_model(data, teacher.preprocessing)
        row = {"seed": seed, "teacher": accuracy(teacher, tdata), "parent": accuracy(parent, tdata)}
        step = steps[CHILD]
        method = get_method(step.technique, step.method)
        for name in args.variant:
            changes = dict(VARIANTS[name])
            frozen = changes.pop("_frozen_bn", False)
            params = params_with(step.params, changes)
            config = step_config(method, params, seed, where=name)
            student = parent.copy()
            if not student.preprocessing:
                student.preprocessing = dict(teacher.preprocessing)
            sdata = prepare_for_model(data, student.preprocessing)
            started = time.perf_counter()
            with frozen_batchnorm(frozen):
                result = run_technique("distill", config, student, data=sdata, teacher=teacher.copy())
            row[name] = accuracy(result.model, sdata)
            row[f"{name}_s"] = round(time.perf_counter() - started, 1)
            print(f"seed {seed} {name}: {row[name]:.4f} (parent {row['parent']:.4f}, teacher {row['teacher']:.4f})",
                  flush=True)  # fmt: skip
        rows.append(row)

    result = {
        "recipe": str(args.recipe),
        "seeds": args.seeds,
        "rows": rows,
        "summary": {k: summary_of([r[k] for r in rows]) for k in ["teacher", "parent", *args.variant]},
        "minus_parent": {v: summary_of([r[v] - r["parent"] for r in rows]) for v in args.variant},
        "val_images": len(data.val),
    }
    for k, s in result["summary"].items():
        d = result["minus_parent"].get(k)
        vs = f"   vs parent {100 * d['mean']:+.2f} ± {100 * d['sd']:.2f} pt" if d else ""
        print(f"{k:24s} {100 * s['mean']:.2f} ± {100 * s['sd']:.2f}{vs}")
    if args.out:
        write_result(args.out, result)


def summary_of(vals):
    """Mean and sample standard deviation ("spread")."""
    return {"mean": statistics.mean(vals), "sd": statistics.stdev(vals) if len(vals) > 1 else 0.0}


if __name__ == "__main__":
    main()
