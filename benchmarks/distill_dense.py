"""Dense distillation on real photos: denoising scikit-image's bundled colour photos (the `photos`
source), a DnCNN teacher and a half-width student trained plainly, with feature MSE and with PCD.

Every student is run for each seed (initial weights, data order, random draws); the teacher and the
data are fixed. PSNR is measured on the validation tiles (which cover the two held-out photos exactly
once) and on the two held-out photos whole (the networks are fully convolutional); mean ± sample std
over seeds, and the paired difference to plain training.

Scaled to 2 shared CPU cores: photos at 128 px on the shorter side, 32 px patches, Gaussian noise
sigma 0.1 (about 25/255).

    python benchmarks/distill_dense.py --out results/distill_dense.json
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import write_result  # noqa: E402

from compress.data import DataConfig, load_data  # noqa: E402
from compress.data.photos import held_out_photos  # noqa: E402
from compress.distill.feature import FeatureMSEConfig  # noqa: E402
from compress.distill.pcd import PCDConfig  # noqa: E402
from compress.methods import Context, apply  # noqa: E402
from compress.models.sources import load_model  # noqa: E402
from compress.train.loop import TrainConfig, train  # noqa: E402

SIDE = "128"
DATA = DataConfig(name=f"photos:{SIDE}", task="denoising", image_size=32, channels=3, noise_sigma=0.1)
TEACHER = {"depth": 6, "width": 1.0}
STUDENT = {"depth": 6, "width": 0.5}
LR = 3e-3


def build(data, seed, kw):
    return load_model("builtin:dncnn", in_channels=3, input_shape=data.input_shape, kwargs=kw, seed=seed)


@torch.no_grad()
def whole_photo_psnr(module, photos, sigma: float) -> float:
    """Mean PSNR over whole held-out photos with fixed noise (seed 0)."""
    module.eval()
    g = torch.Generator().manual_seed(0)
    vals = []
    for clean in photos:
        noisy = clean + sigma * torch.randn(clean.shape, generator=g)
        mse = float(((module(noisy[None])[0].clamp(0, 1) - clean) ** 2).mean())
        vals.append(10 * torch.log10(torch.tensor(1.0 / max(mse, 1e-10))).item())
    return statistics.mean(vals)


def method_config(name: str, tc: TrainConfig):
    if name == "feature_mse":
        return FeatureMSEConfig(train=tc)
    if name == "pcd":
        return PCDConfig(train=tc)
    if name.startswith("pcd_w"):
        return PCDConfig(distill_weight=float(name[5:]), train=tc)
    raise ValueError(name)


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--out", default="results/distill_dense.json")
    p.add_argument("--epochs", type=int, default=8)
    p.add_argument("--teacher-epochs", type=int, default=15)
    p.add_argument("--seeds", type=int, default=3)
    p.add_argument("--methods", default="plain,feature_mse,pcd", help="also pcd_wX: PCD with distill_weight X")
    p.add_argument("--threads", type=int, default=2)
    args = p.parse_args()
    os.environ.setdefault("COMPRESS_PROGRESS", "0")
    torch.set_num_threads(args.threads)
    data = load_data(DATA)
    photos = held_out_photos(DATA, SIDE)
    t0 = time.perf_counter()
    teacher = build(data, 0, TEACHER)
    tres = train(
        teacher.module, data, TrainConfig(epochs=args.teacher_epochs, batch_size=32, lr=LR), show_progress=False
    )
    teacher_psnr = {"tiles": tres.metrics["psnr"], "whole": whole_photo_psnr(teacher.module, photos, DATA.noise_sigma)}
    print("teacher", teacher_psnr, f"{time.perf_counter() - t0:.0f} s", flush=True)
    rows = []
    for method in args.methods.split(","):
        for seed in range(args.seeds):
            tc = TrainConfig(epochs=args.epochs, batch_size=32, lr=LR, seed=seed)
            student = build(data, seed, STUDENT)
            s0 = time.perf_counter()
            if method == "plain":
                module = student.module
                psnr = train(module, data, tc, show_progress=False).metrics["psnr"]
            else:
                res = apply("distill", student, method_config(method, tc), Context(data=data, teacher=teacher))
                module, psnr = res.model.module, res.metrics["psnr"]
            whole = whole_photo_psnr(module, photos, DATA.noise_sigma)
            rows.append({"method": method, "seed": seed, "psnr": psnr, "psnr_whole": whole})
            rows[-1]["seconds"] = round(time.perf_counter() - s0, 1)
            print(rows[-1], flush=True)
    summary = []
    for method in dict.fromkeys(r["method"] for r in rows):
        entry = {"method": method}
        for key in ("psnr", "psnr_whole"):
            vals = {r["seed"]: r[key] for r in rows if r["method"] == method}
            base = {r["seed"]: r[key] for r in rows if r["method"] == "plain"}
            diffs = [vals[s] - base[s] for s in vals if s in base]
            entry[key] = {
                "mean": statistics.mean(vals.values()),
                "std": statistics.stdev(vals.values()) if len(vals) > 1 else 0.0,
                "vs_plain_mean": statistics.mean(diffs) if diffs else None,
                "vs_plain_std": statistics.stdev(diffs) if len(diffs) > 1 else None,
            }
        summary.append(entry)
    title = (
        f"photo denoising (photos:{SIDE}, 32 px patches, sigma {DATA.noise_sigma}): {len(data.train)} train patches, "
        f"{len(data.val)} val tiles = 2 held-out photos; teacher dncnn {TEACHER} {args.teacher_epochs} ep "
        f"(tiles {teacher_psnr['tiles']:.2f} dB, whole {teacher_psnr['whole']:.2f} dB); student dncnn {STUDENT} "
        f"{args.epochs} ep; {args.seeds} seeds"
    )
    lines = [
        f"### {title}",
        "",
        "| method | PSNR tiles dB (mean ± std) | vs plain | PSNR whole photos dB | vs plain |",
        "|---|---:|---:|---:|---:|",
    ]
    for e in summary:
        cells = []
        for key in ("psnr", "psnr_whole"):
            v = e[key]
            vs = "—" if e["method"] == "plain" else f"{v['vs_plain_mean']:+.2f} ± {v['vs_plain_std'] or 0:.2f}"
            cells += [f"{v['mean']:.2f} ± {v['std']:.2f}", vs]
        lines.append(f"| {e['method']} | " + " | ".join(cells) + " |")
    md = "\n".join(lines) + "\n"
    Path(args.out).with_suffix(".md").write_text(md)
    write_result(
        args.out,
        {
            "benchmark": "distill_dense",
            "title": title,
            "teacher_psnr": teacher_psnr,
            "summary": summary,
            "runs": rows,
            "total_seconds": round(time.perf_counter() - t0, 1),
        },
    )
    print(md)


if __name__ == "__main__":
    main()
