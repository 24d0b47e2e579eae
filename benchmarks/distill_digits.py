"""Distillation on digits: scratch vs kd vs funmatch vs msd vs guidance vs feature_mse (same student,
same epochs), funmatch accuracy vs schedule length, and DDP with 1 vs 2 processes.

Small on purpose (16x16 grey digits, a few epochs) so it finishes in a few minutes on 2 shared CPU
cores; the numbers show the methods run and compare, not what long schedules reach.

    python benchmarks/distill_digits.py --out results/distill_digits.json
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

from compress.data import DataConfig, load_data
from compress.distill.feature import FeatureMSEConfig
from compress.distill.funmatch import FunMatchConfig
from compress.distill.guidance import GuidanceConfig
from compress.distill.kd import KDConfig
from compress.distill.msd import MSDConfig
from compress.env import environment
from compress.methods import Context, apply
from compress.models.sources import load_model
from compress.train.loop import TrainConfig, train

DATA = DataConfig(name="digits", image_size=16, channels=1, limit=600)
TEACHER = ("builtin:resnet_tiny", {"width": 1.0})
STUDENT = ("builtin:simple_cnn", {"width": 0.25})


def build(spec, data, seed):
    torch.manual_seed(seed)
    return load_model(spec[0], num_classes=10, in_channels=1, input_shape=data.input_shape, kwargs=spec[1])


def make_teacher(data, epochs):
    teacher = build(TEACHER, data, 0)
    res = train(teacher.module, data, TrainConfig(epochs=epochs, batch_size=32, lr=5e-3), show_progress=False)
    return teacher, res.metrics["accuracy"]


def worker(args) -> None:
    """One DDP process (under torchrun): kd from a saved teacher."""
    from compress.models.checkpoint import load_checkpoint

    torch.set_num_threads(1)
    data = load_data(DATA)
    teacher = load_checkpoint(args.worker)
    cfg = KDConfig(
        train=TrainConfig(epochs=args.epochs, batch_size=32 // int(os.environ["WORLD_SIZE"]), lr=5e-3, device="cpu")
    )
    t0 = time.perf_counter()
    res = apply("distill", build(STUDENT, data, 1), cfg, Context(data=data, teacher=teacher))
    wall = time.perf_counter() - t0
    if os.environ["RANK"] == "0":
        print(
            "RESULT "
            + json.dumps(
                {
                    "accuracy": res.metrics["accuracy"],
                    "wall_s": wall,
                    "samples_per_s": len(data.train) * args.epochs / wall,
                }
            )
        )


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--out", default="results/distill_digits.json")
    p.add_argument("--epochs", type=int, default=4, help="epochs per method")
    p.add_argument("--teacher-epochs", type=int, default=8)
    p.add_argument("--worker", help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.worker:
        return worker(args)
    os.environ.setdefault("COMPRESS_PROGRESS", "0")
    torch.set_num_threads(2)
    data = load_data(DATA)
    t0 = time.perf_counter()
    teacher, teacher_acc = make_teacher(data, args.teacher_epochs)
    e = args.epochs
    tc = lambda n=e: TrainConfig(epochs=n, batch_size=32, lr=5e-3)  # noqa: E731
    rows = []
    scratch = build(STUDENT, data, 1)
    s0 = time.perf_counter()
    acc = train(scratch.module, data, tc(), show_progress=False).metrics["accuracy"]
    rows.append({"method": "scratch", "epochs": e, "accuracy": acc, "seconds": time.perf_counter() - s0})

    def fm(n: int) -> FunMatchConfig:
        return FunMatchConfig(
            train=TrainConfig(epochs=n, batch_size=32, lr=5e-3, optimizer="adam", grad_clip=1.0, warmup_epochs=1.0)
        )

    configs = [
        ("kd", KDConfig(train=tc())),
        ("funmatch", fm(e)),
        ("msd", MSDConfig(train=tc())),
        ("guidance", GuidanceConfig(train=tc())),
        ("feature_mse", FeatureMSEConfig(train=tc())),
    ]
    for name, cfg in configs:
        s0 = time.perf_counter()
        res = apply("distill", build(STUDENT, data, 1), cfg, Context(data=data, teacher=teacher))
        rows.append(
            {"method": name, "epochs": e, "accuracy": res.metrics["accuracy"], "seconds": time.perf_counter() - s0}
        )
    patient = [{"epochs": e, "accuracy": rows[2]["accuracy"]}]
    for n in (2 * e, 4 * e):
        res = apply("distill", build(STUDENT, data, 1), fm(n), Context(data=data, teacher=teacher))
        patient.append({"epochs": n, "accuracy": res.metrics["accuracy"]})

    ddp = []
    with tempfile.TemporaryDirectory() as tmp:
        from compress.models.checkpoint import save_model

        path = save_model(teacher, Path(tmp) / "teacher.pt")
        for n in (1, 2):
            env = {**os.environ, "OMP_NUM_THREADS": "1", "CUDA_VISIBLE_DEVICES": ""}
            cmd = [
                sys.executable,
                "-m",
                "torch.distributed.run",
                "--standalone",
                "--nproc-per-node",
                str(n),
                __file__,
                "--worker",
                str(path),
                "--epochs",
                str(e),
            ]
            proc = subprocess.run(cmd, env=env, capture_output=True, text=True)
            line = [ln for ln in proc.stdout.splitlines() if ln.startswith("RESULT ")]
            if proc.returncode or not line:
                ddp.append({"processes": n, "error": proc.stderr[-500:]})
            else:
                ddp.append({"processes": n, "global_batch": 32, **json.loads(line[0][7:])})
    out = {
        "benchmark": "distill_digits",
        "data": "digits 16x16 grey, 600 train / 359 val",
        "teacher": f"{TEACHER[0]} {TEACHER[1]}, {args.teacher_epochs} epochs, accuracy {teacher_acc:.4f}",
        "student": f"{STUDENT[0]} {STUDENT[1]}",
        "methods": rows,
        "funmatch_schedule": patient,
        "ddp_kd": ddp,
        "total_seconds": time.perf_counter() - t0,
        "environment": environment(),
    }
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(out, indent=2))
    print(json.dumps({k: out[k] for k in ("teacher", "methods", "funmatch_schedule", "ddp_kd")}, indent=1))


if __name__ == "__main__":
    main()
