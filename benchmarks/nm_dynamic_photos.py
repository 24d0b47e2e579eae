"""dynamic-nm (ClassPruning) on denoising patches of the real photos bundled with scikit-image, against
static N:M models of the same weights' budget, and the same on digits classification.

Per seed: a DnCNN denoiser is trained dense; then, with the same fine-tuning budget (epochs), we make
  * dense: plain continued training (the quality reference);
  * dynamic-nm: router + nested levels 1:4 / 2:4 / 4:4 of one weight set (soft routing in training,
    hard routing at inference);
  * static N:M at 1:4, 2:4 and 3:4 (fixed masks through fine-tuning).
FLOPs are what sparse kernels would execute (a masked layer's dense MACs x N/M, plus the router); the
static models' PSNR is interpolated linearly in MACs to the dynamic model's average MACs ("static at
equal FLOPs"). PSNR on the validation tiles, which cover the two held-out photos exactly once.
Scaled to 2 shared CPU cores (load ~18 from other jobs): photos at 96 px on the shorter side, 24 px patches,
sigma 0.1, a half-width DnCNN of depth 5. No GPU.

    python benchmarks/nm_dynamic_photos.py --out results/nm_dynamic_photos.json
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import write_result  # noqa: E402

from compress.data import DataConfig, load_data  # noqa: E402
from compress.methods import Context  # noqa: E402
from compress.models.sources import load_model  # noqa: E402
from compress.prune.dynamic_nm import DynamicNMConfig, layer_macs, run_dynamic_nm  # noqa: E402
from compress.prune.nm import NMConfig, nm_layers, prune_nm  # noqa: E402
from compress.train.loop import TrainConfig, train  # noqa: E402

TASKS = {
    "photos": (
        DataConfig(name="photos:96", task="denoising", image_size=24, channels=3, noise_sigma=0.1),
        "builtin:dncnn",
        {"depth": 5, "width": 0.5},
        "psnr",
    ),
    "digits": (DataConfig(name="digits", image_size=16, channels=1), "builtin:resnet_tiny", {"width": 0.5}, "accuracy"),
}


def static_macs(module, shape, n, m):
    per = layer_macs(module, shape)
    masked, _ = nm_layers(module, m)
    return sum(per.values()) - sum(per[k] for k in masked) * (1 - n / m)


def run_task(name, seeds, teacher_epochs, ft_epochs, levels, shares, batch_size=64, balance=0.5, onehot=0.1):
    cfg, arch, kw, key = TASKS[name]
    data = load_data(cfg)
    ch = cfg.channels
    per_seed = []
    for seed in range(seeds):
        t0 = time.perf_counter()
        base = load_model(arch, in_channels=ch, num_classes=None if key == "psnr" else 10,
                          input_shape=data.input_shape, kwargs=kw, seed=seed)  # fmt: skip
        train(base.module, data, TrainConfig(epochs=teacher_epochs, lr=3e-3, seed=seed, batch_size=batch_size))
        ft = TrainConfig(epochs=ft_epochs, lr=1e-3, seed=seed, batch_size=batch_size)
        dense = base.copy()
        dense_q = train(dense.module, data, ft).metrics[key]
        routed_cfg = DynamicNMConfig(
            levels=levels, shares=shares, train=ft, balance_weight=balance, onehot_weight=onehot
        )
        _, dyn = run_dynamic_nm(base, routed_cfg, Context(data=data))
        static = []
        for n in (1, 2, 3):
            _, s = prune_nm(base, NMConfig(n=n, m=4, finetune=ft), Context(data=data))
            static.append(
                {"pattern": f"{n}:4", "macs": static_macs(base.module, data.input_shape, n, 4), key: s[f"val_{key}"]}
            )
        dense_macs = dyn["dense_macs"]
        xs = [s["macs"] for s in static] + [dense_macs]
        ys = [s[key] for s in static] + [dense_q]
        static_at_avg = float(np.interp(dyn["avg_macs"], xs, ys))
        row = {
            "seed": seed,
            "dense": dense_q,
            "dynamic": dyn[f"val_{key}"],
            "level_quality": dyn["level_quality"],
            "level_macs": dyn["level_macs"],
            "level_share": dyn["level_share"],
            "flops_saved": dyn["flops_saved"],
            "static": static,
            "static_at_equal_flops": static_at_avg,
            "drop_vs_dense": dense_q - dyn[f"val_{key}"],
            "dynamic_minus_static": dyn[f"val_{key}"] - static_at_avg,
            "seconds": round(time.perf_counter() - t0, 1),
        }
        print(name, row, flush=True)
        Path(f"/tmp/nm_dynamic_{name}.partial.json").write_text(json.dumps(per_seed + [row], default=str))
        per_seed.append(row)

    def ms(k):
        v = [r[k] for r in per_seed]
        return {"mean": statistics.mean(v), "sd": statistics.stdev(v) if len(v) > 1 else 0.0}

    return {
        "data": f"{cfg.name} {cfg.task} {cfg.image_size}px, {len(data.train)} train / {len(data.val)} val",
        "model": f"{arch} {kw}, {teacher_epochs} epochs dense; every variant {ft_epochs} fine-tune epochs "
        f"(lr 1e-3, batch {batch_size})",
        "metric": key,
        "levels": levels,
        "target_shares": shares,
        "balance_weight": balance,
        "onehot_weight": onehot,
        "seeds": per_seed,
        "summary": {
            k: ms(k)
            for k in (
                "dense",
                "dynamic",
                "flops_saved",
                "drop_vs_dense",
                "static_at_equal_flops",
                "dynamic_minus_static",
            )
        },  # fmt: skip
    }


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--seeds", type=int, default=3)
    ap.add_argument("--tasks", default="photos,digits")
    ap.add_argument("--teacher-epochs", type=int, default=8)
    ap.add_argument("--finetune-epochs", type=int, default=3)
    ap.add_argument("--levels", default="1:4,2:4,4:4")
    ap.add_argument("--batch-size", type=int, default=64)
    ap.add_argument("--balance-weight", type=float, default=0.5)
    ap.add_argument("--onehot-weight", type=float, default=0.1)
    ap.add_argument("--threads", type=int, default=1, help="torch intra-op threads (the machine is shared)")
    ap.add_argument("--out", default="results/nm_dynamic_photos.json")
    args = ap.parse_args()
    import torch

    torch.set_num_threads(args.threads)
    start = time.perf_counter()
    levels = args.levels.split(",")
    settings = (
        args.seeds,
        args.teacher_epochs,
        args.finetune_epochs,
        levels,
        None,
        args.batch_size,
        args.balance_weight,
        args.onehot_weight,
    )
    results = {t: run_task(t, *settings) for t in args.tasks.split(",")}
    payload = {
        "benchmark": "nm_dynamic_photos",
        "device": "CPU only (no GPU this session): FLOPs are what sparse kernels would run; none ran",
        "deployment": "ONNX graph computes every level and picks each sample's output with Equal/Where "
        "(ORT runs the routed model end to end, at L x the dense work on CPU)",
        "tasks": results,
        "total_seconds": round(time.perf_counter() - start, 1),
    }
    out = write_result(args.out, payload)
    lines = ["# dynamic-nm (ClassPruning) vs static N:M", "", payload["device"] + ".", ""]
    for t, r in results.items():
        s = r["summary"]
        unit = " dB" if r["metric"] == "psnr" else ""
        lines += [
            f"## {t}: {r['data']}",
            f"{r['model']}; levels {','.join(r['levels'])}; balance weight {r['balance_weight']}, "
            f"one-hot weight {r['onehot_weight']}; {len(r['seeds'])} seeds.",
            "",
            "| figure | mean ± sd |",
            "|---|---|",
            f"| dense {r['metric']} | {s['dense']['mean']:.4f} ± {s['dense']['sd']:.4f}{unit} |",
            f"| dynamic-nm {r['metric']} | {s['dynamic']['mean']:.4f} ± {s['dynamic']['sd']:.4f}{unit} |",
            f"| FLOPs saved (dynamic) | {s['flops_saved']['mean']:.1%} ± {s['flops_saved']['sd']:.1%} |",
            f"| drop vs dense | {s['drop_vs_dense']['mean']:+.4f} ± {s['drop_vs_dense']['sd']:.4f}{unit} |",
            f"| static N:M at equal FLOPs | {s['static_at_equal_flops']['mean']:.4f} ± "
            f"{s['static_at_equal_flops']['sd']:.4f}{unit} |",
            f"| dynamic minus static | {s['dynamic_minus_static']['mean']:+.4f} ± "
            f"{s['dynamic_minus_static']['sd']:.4f}{unit} |",
            "",
            "| seed | level shares | level " + r["metric"] + " (forced) | static 1:4 / 2:4 / 3:4 |",
            "|---|---|---|---|",
        ]
        metric = r["metric"]
        for row in r["seeds"]:
            lines.append(
                f"| {row['seed']} | {', '.join(f'{v:.2f}' for v in row['level_share'])} | "
                f"{', '.join(f'{v:.3f}' for v in row['level_quality'])} | "
                f"{' / '.join(f'{st[metric]:.3f}' for st in row['static'])} |"
            )
        lines.append("")
    out.with_suffix(".md").write_text("\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
