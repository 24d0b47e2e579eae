"""2:4 sparsity vs dense on digits after equal fine-tuning, with and without channel permutation.

For each seed: a ResNet-tiny teacher is trained (seeded weights and data order), then three copies get
the same fine-tuning budget: dense (plain continued training), 2:4 (one-shot magnitude masks along the
input channels, fixed mask) and 2:4 with the channel permutation search before masking. Accuracy on the
validation split: mean ± sample std over seeds and the paired difference to dense. No GPU: the sparse
models run dense kernels (the figure is accuracy, not speed).

    python benchmarks/nm_digits.py --out results/nm_digits.json
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import write_result  # noqa: E402

from compress.data import DataConfig, load_data  # noqa: E402
from compress.methods import Context  # noqa: E402
from compress.models.sources import load_model  # noqa: E402
from compress.prune.nm import NMConfig, prune_nm  # noqa: E402
from compress.train.loop import TrainConfig, train  # noqa: E402

DATA = DataConfig(name="digits", image_size=16, channels=1)
ARCH = {"width": 0.5}


def mean_sd(values):
    return {
        "mean": statistics.mean(values),
        "sd": statistics.stdev(values) if len(values) > 1 else 0.0,
        "values": values,
    }


def _fmt(stat, spec: str) -> str:
    return spec.format(stat["mean"]) if stat else ""


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--seeds", type=int, default=3)
    ap.add_argument("--teacher-epochs", type=int, default=6)
    ap.add_argument("--finetune-epochs", type=int, default=2)
    ap.add_argument("--threads", type=int, default=1, help="torch intra-op threads (the machine is shared)")
    ap.add_argument("--out", default="results/nm_digits.json")
    args = ap.parse_args()
    import torch

    torch.set_num_threads(args.threads)
    start = time.perf_counter()
    data = load_data(DATA)
    rows = {"teacher": [], "dense": [], "nm": [], "nm_perm": []}
    oneshot = {"nm": [], "nm_perm": []}
    kept = {"nm": [], "nm_perm": []}
    for seed in range(args.seeds):
        teacher = load_model("builtin:resnet_tiny", in_channels=1, num_classes=10, input_shape=data.input_shape,
                             kwargs=ARCH, seed=seed)  # fmt: skip
        acc = train(teacher.module, data, TrainConfig(epochs=args.teacher_epochs, lr=4e-3, seed=seed)).metrics
        rows["teacher"].append(acc["accuracy"])
        ft = TrainConfig(epochs=args.finetune_epochs, lr=1e-3, seed=seed)
        dense = teacher.copy()
        rows["dense"].append(train(dense.module, data, ft).metrics["accuracy"])
        for key, permute in (("nm", False), ("nm_perm", True)):
            _, m = prune_nm(teacher, NMConfig(n=2, m=4, permute=permute, finetune=ft), Context(data=data))
            rows[key].append(m["val_accuracy"])
            oneshot[key].append(m["oneshot_accuracy"])
            kept[key].append(m["kept_magnitude"])
            assert m["pattern_holds"]
        print(seed, {k: v[-1] for k, v in rows.items()}, flush=True)
        Path(args.out).with_suffix(".partial.json").write_text(json.dumps({"rows": rows, "oneshot": oneshot}))
    summary = {k: mean_sd(v) for k, v in rows.items()}
    paired = {k: mean_sd([a - b for a, b in zip(rows[k], rows["dense"], strict=True)]) for k in ("nm", "nm_perm")}
    payload = {
        "benchmark": "nm_digits",
        "device": "CPU only (no GPU this session): accuracy only, no sparse kernels ran",
        "data": f"digits {DATA.image_size}x{DATA.image_size} grey, {len(data.train)} train / {len(data.val)} val",
        "model": f"builtin:resnet_tiny {ARCH}, teacher {args.teacher_epochs} epochs (lr 4e-3)",
        "finetune": f"{args.finetune_epochs} epochs, lr 1e-3, AdamW cosine, for dense and sparse alike",
        "seeds": args.seeds,
        "accuracy": summary,
        "oneshot_accuracy": {k: mean_sd(v) for k, v in oneshot.items()},
        "kept_magnitude": {k: mean_sd(v) for k, v in kept.items()},
        "minus_dense": paired,
        "total_seconds": round(time.perf_counter() - start, 1),
    }
    out = write_result(args.out, payload)
    lines = [
        "# 2:4 vs dense on digits (equal fine-tune)",
        "",
        f"{payload['data']}; {payload['model']}; fine-tune {payload['finetune']}; {args.seeds} seeds; CPU only.",
        "",
        "| variant | val accuracy (mean ± sd) | one-shot (before fine-tune) | kept |w| share | minus dense |",
        "|---|---|---|---|---|",
    ]
    for key, label in (
        ("teacher", "teacher"),
        ("dense", "dense + fine-tune"),
        ("nm", "2:4"),
        ("nm_perm", "2:4 + permutation"),
    ):
        s = summary[key]
        o = _fmt(payload["oneshot_accuracy"].get(key), "{:.4f}")
        k = _fmt(payload["kept_magnitude"].get(key), "{:.4f}")
        d = paired.get(key)
        d = f"{d['mean']:+.4f} ± {d['sd']:.4f}" if d else ""
        lines.append(f"| {label} | {s['mean']:.4f} ± {s['sd']:.4f} | {o} | {k} | {d} |")
    out.with_suffix(".md").write_text("\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
