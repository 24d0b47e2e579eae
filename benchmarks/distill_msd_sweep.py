"""MSD's temperature and KD term on the digits grids of `distill_digits.py`, every variant over the same seeds.

On the cnn grid (simple_cnn width 0.25, 8.6k parameters, 12 epochs) MSD with its defaults (temperature
0.1, no KD term) trails the student trained alone while CRD+KD leads it; on the mnv3 grid MSD is the
best method. This sweep measures which setting causes the cnn miss and whether a change that fixes
it holds on mnv3.

    python benchmarks/distill_msd_sweep.py --grid cnn --epochs 12 --seeds 5 --out results/distill_msd_sweep_cnn.json
    python benchmarks/distill_msd_sweep.py --grid mnv3 --epochs 12 --seeds 3 --variants msd,msd_t0.5_kd \
        --out results/distill_msd_sweep_mnv3.json
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
import distill_digits as dd  # noqa: E402
from _common import write_result  # noqa: E402

from compress.data import load_data  # noqa: E402
from compress.distill.msd import MSDConfig  # noqa: E402
from compress.methods import Context, apply  # noqa: E402
from compress.models.sources import load_model  # noqa: E402
from compress.train.loop import TrainConfig, train  # noqa: E402

VARIANTS = {
    "msd": {},  # the defaults: temperature 0.1, no KD term
    "msd_kd": {"kd_weight": 1.0},
    "msd_kd_w0.1": {"kd_weight": 1.0, "distill_weight": 0.1},
    "msd_kd_w0.3": {"kd_weight": 1.0, "distill_weight": 0.3},
    "msd_kd_no_feature_term": {"kd_weight": 1.0, "feature_weight": 0.0},
    "msd_t0.3_kd": {"kd_weight": 1.0, "temperature": 0.3},
    "msd_t0.5": {"temperature": 0.5},
    "msd_t0.5_kd": {"kd_weight": 1.0, "temperature": 0.5},
    "msd_t1.0_kd": {"kd_weight": 1.0, "temperature": 1.0},
}


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--grid", choices=sorted(dd.GRIDS), default="cnn")
    p.add_argument("--epochs", type=int, default=12)
    p.add_argument("--seeds", type=int, default=5)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--variants", default="scratch," + ",".join(VARIANTS))
    p.add_argument("--out", default="results/distill_msd_sweep_cnn.json")
    args = p.parse_args()
    os.environ.setdefault("COMPRESS_PROGRESS", "0")
    torch.set_num_threads(args.threads)
    grid = dd.GRIDS[args.grid]
    data = load_data(grid["data"])
    tspec = grid["teacher"][0]
    teacher, tcfg = dd.grid_teacher(grid, data)
    teacher_acc = train(teacher.module, data, tcfg, show_progress=False).metrics["accuracy"]
    sspec, skw = grid["student"]
    rows = []
    t0 = time.perf_counter()
    for name in args.variants.split(","):
        for seed in range(args.seeds):
            student = load_model(sspec, num_classes=10, input_shape=data.input_shape, kwargs=skw, seed=seed)
            tc = TrainConfig(epochs=args.epochs, batch_size=32, lr=dd.LR, seed=seed)
            if name == "scratch":
                acc = train(student.module, data, tc, show_progress=False).metrics["accuracy"]
            else:
                cfg = MSDConfig(**VARIANTS[name], train=tc)
                acc = apply("distill", student, cfg, Context(data=data, teacher=teacher)).metrics["accuracy"]
            rows.append({"epochs": args.epochs, "method": name, "seed": seed, "accuracy": acc})
            print(rows[-1], flush=True)
    summary = dd.summarise(rows)
    d = grid["data"]
    title = (
        f"MSD settings, digits {d.image_size}x{d.image_size}x{d.channels}; teacher {tspec} {teacher_acc:.2%}; "
        f"student {sspec} {skw}; {args.epochs} epochs, {args.seeds} seeds"
    )
    md = dd.markdown(summary, title)
    Path(args.out).with_suffix(".md").write_text(md)
    write_result(
        args.out,
        {
            "benchmark": "distill_msd_sweep",
            "grid": args.grid,
            "title": title,
            "variants": {k: VARIANTS[k] for k in args.variants.split(",") if k in VARIANTS},
            "teacher_accuracy": teacher_acc,
            "summary": summary,
            "runs": rows,
            "total_seconds": round(time.perf_counter() - t0, 1),
        },
    )
    print(md)


if __name__ == "__main__":
    main()
