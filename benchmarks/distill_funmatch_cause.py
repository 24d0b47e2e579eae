"""Why function matching collapsed on digits: each suspect measured on its own.

Part 1 (digits 16x16 grey, 600 training images, resnet_tiny teacher -> simple_cnn width 0.25, 12
epochs, 3 seeds): the old settings (crops down to 5% of the image, no BatchNorm recalibration), each
fix alone, both, BatchNorm re-estimated on plain images against on the student's training views;
plus, for one seed, the learning rate. For each view setting it also measures the
teacher on the student's training views: how often its top class is the image's label, and how
confident it is (a confident teacher that is wrong on most views is a noisy target).

Part 2 (digits 32x32 RGB, a torchvision mobilenet_v3_small student, 3 epochs, no augmentation at
all): evaluation with the running BatchNorm statistics training leaves, with the batch's own
statistics, and after recalibration. torchvision's MobileNetV3 uses BN momentum 0.01, so a short
run leaves its running statistics far from the weights' and the student predicts one class.

Part 3: the teacher runs in eval mode (its outputs inside the objective equal its eval outputs and
its BN buffers do not move).

    python benchmarks/distill_funmatch_cause.py --out results/distill_funmatch_cause.json
"""

from __future__ import annotations

import argparse
import copy
import os
import statistics
import sys
import time
from pathlib import Path

import torch
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import write_result  # noqa: E402

from compress.data import DataConfig, load_data  # noqa: E402
from compress.distill.funmatch import FunMatchConfig, FunMatchObjective, make_views  # noqa: E402
from compress.methods import Context, apply  # noqa: E402
from compress.models.sources import load_model  # noqa: E402
from compress.train.loop import StepContext, TrainConfig, recalibrate_batchnorm, train  # noqa: E402


def tensors(ds):
    xs, ys = zip(*[ds[i] for i in range(len(ds))], strict=True)
    return torch.stack(xs), torch.tensor([int(y) for y in ys])


@torch.no_grad()
def accuracy(module, x, y, batch_stats=False):
    module.eval()
    if batch_stats:
        for m in module.modules():
            if isinstance(m, nn.modules.batchnorm._BatchNorm):
                m.train()
    acc = float((module(x).argmax(1) == y).float().mean())
    module.eval()
    return acc


@torch.no_grad()
def teacher_on_views(teacher, x, y, cfg):
    xs, _ = make_views(x, cfg, torch.Generator().manual_seed(123))
    p = torch.softmax(teacher.eval()(xs), 1)
    return float((p.argmax(1) == y).float().mean()), float(p.max(1).values.mean())


def patient(epochs, seed, lr=5e-3, recal=32):
    return TrainConfig(
        epochs=epochs, batch_size=32, lr=lr, optimizer="adam", weight_decay=1e-5, grad_clip=1.0,
        warmup_epochs=1.0, seed=seed, bn_recalibration=recal,
    )  # fmt: skip


def part1(seeds: int, rows_wanted=None) -> dict:
    data = load_data(DataConfig(name="digits", image_size=16, channels=1, limit=600))
    teacher = load_model("builtin:resnet_tiny", num_classes=10, input_shape=data.input_shape, seed=0)
    tacc = train(teacher.module, data, TrainConfig(epochs=10, batch_size=32, lr=4e-3), show_progress=False)
    xv, yv = tensors(data.val)
    xt, yt = tensors(data.train)
    plain, views = {"recalibrate_on": "plain"}, {"recalibrate_on": "views"}
    settings = [
        ("before: 5% crops, no BN recalibration", {"min_area": 0.05}, 0, 5e-3, seeds),
        ("BN recalibrated on plain images (the old attempt)", {"min_area": 0.05, **plain}, 32, 5e-3, seeds),
        ("BN recalibrated on the training views", {"min_area": 0.05, **views}, 32, 5e-3, seeds),
        ("views scaled to the input size, no recalibration", {}, 0, 5e-3, seeds),
        ("both (the new defaults)", {}, 32, 5e-3, seeds),
        ("crops to 50%, BN recalibrated on plain images", {"min_area": 0.5, **plain}, 32, 5e-3, seeds),
        ("crops to 50%, BN recalibrated on the training views", {"min_area": 0.5, **views}, 32, 5e-3, seeds),
    ]
    settings = [s for i, s in enumerate(settings) if rows_wanted is None or i in rows_wanted] + [
        ("new defaults, lr 1e-3", {}, 32, 1e-3, 1),
        ("new defaults, lr 1e-2", {}, 32, 1e-2, 1),
    ]
    rows = []
    for name, kw, recal, lr, n in settings:
        cfg0 = FunMatchConfig(**kw)
        agree, conf = teacher_on_views(teacher.module, xt, yt, cfg0)
        accs = []
        for seed in range(n):
            student = load_model(
                "builtin:simple_cnn", num_classes=10, input_shape=data.input_shape, kwargs={"width": 0.25}, seed=seed
            )
            cfg = FunMatchConfig(**kw, train=patient(12, seed, lr, recal))
            accs.append(apply("distill", student, cfg, Context(data=data, teacher=teacher)).metrics["accuracy"])
        rows.append(
            {
                "setting": name,
                "min_area": FunMatchConfig(**kw).min_area or "auto (1.0 at 16 px)",
                "bn_recalibration": FunMatchConfig(**kw).recalibrate_on if recal else "none",
                "lr": lr,
                "seeds": n,
                "accuracy": accs,
                "mean": statistics.mean(accs),
                "std": statistics.stdev(accs) if n > 1 else 0.0,
                "teacher_top1_on_views": agree,
                "teacher_confidence_on_views": conf,
            }
        )
        print(rows[-1], flush=True)
    return {
        "teacher_accuracy": tacc.metrics["accuracy"],
        "rows": rows,
        "val_accuracy_of_teacher": accuracy(teacher.module, xv, yv),
    }


def part2() -> dict:
    data = load_data(DataConfig(name="digits", image_size=32, channels=3, limit=600))
    teacher = load_model("builtin:resnet_tiny", num_classes=10, input_shape=data.input_shape, seed=0)
    tacc = train(teacher.module, data, TrainConfig(epochs=6, batch_size=32, lr=4e-3), show_progress=False)
    xv, yv = tensors(data.val)
    student = load_model("torchvision:mobilenet_v3_small", num_classes=10, input_shape=data.input_shape, seed=0)
    momenta = sorted({m.momentum for m in student.module.modules() if isinstance(m, nn.BatchNorm2d)})
    cfg = FunMatchConfig(mode="consistent", min_area=1.0, mix="none", train=patient(3, 0, 5e-3, recal=0))
    res = apply("distill", student, cfg, Context(data=data, teacher=teacher))
    m = res.model.module
    recal = copy.deepcopy(m)
    recalibrate_batchnorm(recal, data.train, 32, 32, torch.device("cpu"))
    with torch.no_grad():
        distinct = int(m.eval()(xv).argmax(1).unique().numel())
    out = {
        "teacher": f"builtin:resnet_tiny, {tacc.metrics['accuracy']:.4f}",
        "student_bn_momentum": momenta,
        "epochs": 3,
        "steps": res.metrics["steps"],
        "running_stats_accuracy": accuracy(m, xv, yv),
        "distinct_predicted_classes": distinct,
        "batch_stats_accuracy": accuracy(m, xv, yv, batch_stats=True),
        "recalibrated_accuracy": accuracy(recal, xv, yv),
    }
    print(out, flush=True)
    return out


def part3() -> dict:
    data = load_data(DataConfig(name="digits", image_size=16, channels=1, limit=64))
    teacher = load_model("builtin:resnet_tiny", num_classes=10, input_shape=data.input_shape, seed=0).module
    x, y = tensors(data.train)
    buffers = {k: v.clone() for k, v in teacher.state_dict().items()}
    obj = FunMatchObjective(teacher.train(), "classification", FunMatchConfig(mode="fixed_teacher"))
    obj.setup(nn.Linear(1, 1), torch.device("cpu"))
    student = load_model("builtin:simple_cnn", num_classes=10, input_shape=data.input_shape).module.train()
    obj.loss(student, None, (x[:32], y[:32]), StepContext(0, 0, 1, torch.device("cpu"), torch.Generator()))
    with torch.no_grad():
        same = torch.equal(obj.teach(x[:32]), copy.deepcopy(teacher).eval()(x[:32]))
    moved = [k for k, v in teacher.state_dict().items() if not torch.equal(v, buffers[k])]
    return {"teacher_in_eval_mode": not teacher.training, "outputs_equal_eval_outputs": same, "buffers_moved": moved}


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--out", default="results/distill_funmatch_cause.json")
    p.add_argument("--seeds", type=int, default=3)
    p.add_argument("--parts", default="1,2,3", help="which parts to run (see the module docstring)")
    p.add_argument("--rows", default=None, help="part 1: indices of the view/BN settings to run (default all)")
    p.add_argument("--threads", type=int, default=2)
    args = p.parse_args()
    os.environ.setdefault("COMPRESS_PROGRESS", "0")
    torch.set_num_threads(args.threads)
    t0 = time.perf_counter()
    parts = {int(v) for v in args.parts.split(",")}
    rows = None if args.rows is None else {int(v) for v in args.rows.split(",")}
    out = {"benchmark": "distill_funmatch_cause"}
    if 3 in parts:
        out["part3_teacher_mode"] = part3()
    if 2 in parts:
        out["part2_bn_momentum"] = part2()
    if 1 in parts:
        out["part1_views_bn_lr"] = part1(args.seeds, rows)
    out["total_seconds"] = round(time.perf_counter() - t0, 1)
    lines = []
    if "part1_views_bn_lr" in out:
        lines += [
            "| setting | min_area | BN recal | lr | seeds | accuracy % (mean ± std) | teacher top-1 on views | "
            "teacher confidence |",
            "|---|---|---|---:|---:|---:|---:|---:|",
        ]
        for r in out["part1_views_bn_lr"]["rows"]:
            lines.append(
                f"| {r['setting']} | {r['min_area']} | {r['bn_recalibration']} | {r['lr']:g} | "
                f"{r['seeds']} | {100 * r['mean']:.2f} ± {100 * r['std']:.2f} | {r['teacher_top1_on_views']:.1%} | "
                f"{r['teacher_confidence_on_views']:.2f} |"
            )
    if "part2_bn_momentum" in out:
        p2 = out["part2_bn_momentum"]
        lines += [
            "",
            f"mobilenet_v3_small (BN momentum {p2['student_bn_momentum']}), {p2['steps']} steps, no augmentation: "
            f"running statistics {p2['running_stats_accuracy']:.1%} ({p2['distinct_predicted_classes']} class(es) "
            f"predicted), batch statistics {p2['batch_stats_accuracy']:.1%}, "
            f"recalibrated {p2['recalibrated_accuracy']:.1%}",
        ]
    if "part3_teacher_mode" in out:
        lines += ["", f"teacher mode: {out['part3_teacher_mode']}"]
    Path(args.out).with_suffix(".md").write_text("\n".join(lines) + "\n")
    write_result(args.out, out)


if __name__ == "__main__":
    main()
