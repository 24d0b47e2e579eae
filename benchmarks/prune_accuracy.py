"""Accuracy at equal MACs on digits after the same short fine-tune budget:
channel (L2, uniform) vs continuous sparsification vs pruning-space search vs Torch-Pruning magnitude.

A builtin resnet_tiny is trained dense, then each method prunes it to `--target-macs` of the dense
MACs and trains for `--epochs` epochs through the shared loop (continuous: joint gate + weight
training for the same epochs; search: the same epochs for the best of `--samples` configurations,
after one epoch per sample, so search spends samples more epochs in total: reported).

    pip install torch-pruning   # for the Torch-Pruning row only
    python benchmarks/prune_accuracy.py --out results/prune_accuracy.json
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import time
from pathlib import Path

import torch

from compress.config import from_dict


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", default="results/prune_accuracy.json")
    ap.add_argument("--target-macs", type=float, default=0.35)
    ap.add_argument("--epochs", type=int, default=3)
    ap.add_argument("--dense-epochs", type=int, default=6)
    ap.add_argument("--samples", type=int, default=4)
    ap.add_argument("--image-size", type=int, default=16)
    args = ap.parse_args()
    os.environ.setdefault("COMPRESS_PROGRESS", "0")
    torch.set_num_threads(2)
    from compress.analysis import count_macs, count_params
    from compress.data import DataConfig, load_data
    from compress.env import environment
    from compress.methods import Context, get_method
    from compress.models.sources import load_model
    from compress.train.evaluate import evaluate
    from compress.train.loop import TrainConfig, train

    data = load_data(DataConfig(name="digits", image_size=args.image_size, channels=3))
    shape = tuple(data.input_shape)
    dense = load_model("builtin:resnet_tiny", num_classes=10, in_channels=3, input_shape=shape)
    ft = {"epochs": args.epochs, "lr": 3e-3, "batch_size": 64}
    train(dense.module, data, TrainConfig(epochs=args.dense_epochs, lr=3e-3), show_progress=False)
    dense_acc = evaluate(dense.module, data.val, data.task)["accuracy"]
    macs0, params0 = count_macs(dense.module, shape), count_params(dense.module)
    rows = [{"method": "dense", "accuracy": dense_acc, "macs_ratio": 1.0, "params_ratio": 1.0, "epochs": 0}]

    def record(name: str, module, t0: float, epochs: int, **extra) -> None:
        acc = evaluate(module, data.val, data.task)["accuracy"]
        row = {
            "method": name,
            "accuracy": round(acc, 4),
            "macs_ratio": round(count_macs(module, shape) / macs0, 3),
            "params_ratio": round(count_params(module) / params0, 3),
            "epochs": epochs,
            "seconds": round(time.perf_counter() - t0, 1),
            **extra,
        }
        rows.append(row)
        print(json.dumps(row), flush=True)

    runs = [
        (
            "channel",
            {"target_macs": args.target_macs, "importance": "l2", "finetune_epochs": args.epochs, "finetune": ft},
            args.epochs,
        ),
        (
            "channel_taylor_global",
            {
                "target_macs": args.target_macs,
                "importance": "taylor",
                "allocation": "global",
                "finetune_epochs": args.epochs,
                "finetune": ft,
            },
            args.epochs,
        ),
        ("continuous", {"target_macs": args.target_macs, "train": ft}, args.epochs),
        (
            "search",
            {
                "target_macs": args.target_macs,
                "samples": args.samples,
                "sample_epochs": 1,
                "final_epochs": args.epochs - 1,
                "finetune": ft,
            },
            args.samples + args.epochs - 1,
        ),
    ]
    for label, params, epochs in runs:
        name = label.split("_")[0]
        method = get_method("prune", name)
        t0 = time.perf_counter()
        res = method.fn(dense, from_dict(method.config, params), Context(data=data))
        record(label, res.model.module, t0, epochs)

    try:  # Torch-Pruning's magnitude pruner, ratio bisected to the same MACs, then the same fine-tune
        import torch_pruning as tp

        t0 = time.perf_counter()
        lo, hi, best = 0.0, 0.95, None
        for _ in range(10):
            mid = (lo + hi) / 2
            m = copy.deepcopy(dense.module)
            pruner = tp.pruner.MagnitudePruner(
                m,
                torch.randn(1, *shape),
                importance=tp.importance.MagnitudeImportance(p=2),
                pruning_ratio=mid,
                ignored_layers=[m.fc],
            )
            pruner.step()
            if count_macs(m, shape) / macs0 <= args.target_macs:
                hi, best = mid, m
            else:
                lo = mid
        train(best, data, TrainConfig(**ft), show_progress=False)
        record("torch_pruning_magnitude", best, t0, args.epochs, pruning_ratio=round(hi, 3))
    except ImportError:
        rows.append({"method": "torch_pruning_magnitude", "error": "torch-pruning not installed"})

    result = {
        "benchmark": "prune_accuracy",
        "data": f"digits {args.image_size}px (1438 train / 359 val)",
        "model": "builtin:resnet_tiny",
        "target_macs": args.target_macs,
        "finetune_epochs": args.epochs,
        "rows": rows,
        "environment": environment(),
    }
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(result, indent=1, default=str))


if __name__ == "__main__":
    main()
