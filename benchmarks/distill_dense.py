"""Dense distillation on denoising digits: PCD vs feature MSE vs no distillation (PSNR).

Small on purpose (16x16 grey digits, sigma 0.2, a few epochs) so it finishes in a few minutes on 2
shared CPU cores.

    python benchmarks/distill_dense.py --out results/distill_dense.json
"""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path

import torch

from compress.data import DataConfig, load_data
from compress.distill.feature import FeatureMSEConfig
from compress.distill.pcd import PCDConfig
from compress.env import environment
from compress.methods import Context, apply
from compress.models.sources import load_model
from compress.train.loop import TrainConfig, train

DATA = DataConfig(name="digits", task="denoising", image_size=16, channels=1, limit=500)


def build(data, seed, **kw):
    torch.manual_seed(seed)
    return load_model("builtin:dncnn", in_channels=1, input_shape=data.input_shape, kwargs=kw)


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--out", default="results/distill_dense.json")
    p.add_argument("--epochs", type=int, default=3)
    p.add_argument("--teacher-epochs", type=int, default=5)
    args = p.parse_args()
    os.environ.setdefault("COMPRESS_PROGRESS", "0")
    torch.set_num_threads(2)
    data = load_data(DATA)
    t0 = time.perf_counter()
    teacher = build(data, 0, depth=6)
    tres = train(
        teacher.module, data, TrainConfig(epochs=args.teacher_epochs, batch_size=32, lr=3e-3), show_progress=False
    )
    student_kw = {"depth": 3, "width": 0.5}
    tc = TrainConfig(epochs=args.epochs, batch_size=32, lr=3e-3)
    rows = []
    s0 = time.perf_counter()
    scratch = build(data, 1, **student_kw)
    psnr = train(scratch.module, data, tc, show_progress=False).metrics["psnr"]
    rows.append({"method": "none", "psnr": psnr, "seconds": time.perf_counter() - s0})
    for name, cfg in [("feature_mse", FeatureMSEConfig(train=tc)), ("pcd", PCDConfig(train=tc))]:
        s0 = time.perf_counter()
        res = apply("distill", build(data, 1, **student_kw), cfg, Context(data=data, teacher=teacher))
        rows.append({"method": name, "psnr": res.metrics["psnr"], "seconds": time.perf_counter() - s0})
    out = {
        "benchmark": "distill_dense",
        "data": "digits 16x16 grey, gaussian noise sigma 0.2, 500 train / 359 val",
        "teacher": f"builtin:dncnn depth 6, {args.teacher_epochs} epochs, psnr {tres.metrics['psnr']:.2f}",
        "student": f"builtin:dncnn {student_kw}, {args.epochs} epochs",
        "methods": rows,
        "total_seconds": time.perf_counter() - t0,
        "environment": environment(),
    }
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(out, indent=2))
    print(json.dumps({k: out[k] for k in ("teacher", "methods")}, indent=1))


if __name__ == "__main__":
    main()
