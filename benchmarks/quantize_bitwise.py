"""Bit-wise training: accuracy vs trained bits (all vs 3 MSBs) and emergent sparsity, vs float,
on a simple_cnn trained on digits inside the benchmark; accuracy measured through ONNX Runtime.

    python benchmarks/quantize_bitwise.py --out results/quantize_bitwise.json
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
from pathlib import Path

os.environ.setdefault("COMPRESS_PROGRESS", "0")


def main() -> None:
    import torch

    from compress.data import DataConfig, load_data
    from compress.env import environment
    from compress.methods import Context, get_method
    from compress.models.sources import load_model
    from compress.quantize.bitwise import BitwiseConfig
    from compress.train.evaluate import evaluate
    from compress.train.loop import TrainConfig, train

    ap = argparse.ArgumentParser()
    ap.add_argument("--out", default="results/quantize_bitwise.json")
    ap.add_argument("--epochs", type=int, default=3)
    args = ap.parse_args()
    tmp = Path(tempfile.mkdtemp())
    data = load_data(DataConfig(name="digits", image_size=16, channels=1))
    torch.manual_seed(0)
    model = load_model(
        "builtin:simple_cnn", num_classes=10, in_channels=1, input_shape=data.input_shape, kwargs={"width": 0.5}
    )
    train(model.module, data, TrainConfig(epochs=4, batch_size=64, device="cpu"), show_progress=False)
    rows = [{"variant": "float", "accuracy": evaluate(model.module, data.val, data.task)["accuracy"]}]
    for init in ("model", "scratch"):
        for tb in ("all", "msb:3"):
            r = get_method("quantize", "bitwise").fn(
                model,
                BitwiseConfig(bits=6, train_bits=tb, init=init, epochs=args.epochs),
                Context(data=data, workdir=tmp / f"{init}{tb}"),
            )
            rows.append(
                {
                    "variant": f"bitwise6 init={init} train_bits={tb}",
                    "accuracy": r.metrics["accuracy"],
                    "sparsity": r.metrics["sparsity"],
                    "initial_sparsity": r.metrics["initial_sparsity"],
                    "onnx_bytes": r.metrics["size_bytes"],
                    "onnx_max_abs_diff": r.metrics["onnx_max_abs_diff"],
                }
            )
            print(rows[-1], flush=True)
    result = {"rows": rows, "epochs": args.epochs, "environment": environment()}
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(result, indent=2, default=str))
    print(json.dumps(rows, indent=1))


if __name__ == "__main__":
    main()
