"""Codebook quantization: accuracy vs bits (2, 3, 4) for JLCM vs per-layer k-means vs uniform INT4
per-channel, with size on disk, on a resnet_tiny trained on digits inside the benchmark.

    python benchmarks/quantize_codebook.py --out results/quantize_codebook.json
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
    from compress.quantize._common import quantizable_layers
    from compress.quantize.codebook import CodebookConfig, KMeansConfig
    from compress.train.evaluate import evaluate
    from compress.train.loop import TrainConfig, train

    ap = argparse.ArgumentParser()
    ap.add_argument("--out", default="results/quantize_codebook.json")
    ap.add_argument("--steps", type=int, default=100)
    args = ap.parse_args()
    tmp = Path(tempfile.mkdtemp())
    data = load_data(DataConfig(name="digits", image_size=16, channels=1, calib_size=256))
    torch.manual_seed(0)
    model = load_model("builtin:resnet_tiny", num_classes=10, in_channels=1, input_shape=data.input_shape)
    train(model.module, data, TrainConfig(epochs=4, batch_size=64, device="cpu"), show_progress=False)
    rows = [{"method": "float", "bits": 32, "accuracy": evaluate(model.module, data.val, data.task)["accuracy"]}]
    for bits in (2, 3, 4):
        for name, cfg in (
            ("kmeans", KMeansConfig(bits=bits)),
            ("jlcm", CodebookConfig(bits=bits, groups=4, steps=args.steps)),
        ):
            method = "kmeans" if name == "kmeans" else "codebook"
            r = get_method("quantize", method).fn(model, cfg, Context(data=data, workdir=tmp / f"{name}{bits}"))
            rows.append(
                {
                    "method": name,
                    "bits": bits,
                    "accuracy": r.metrics["accuracy"],
                    "bits_per_weight": r.metrics["bits_per_weight"],
                    "checkpoint_bytes": r.metrics["size_bytes"],
                    "onnx_bytes": r.metrics["onnx_bytes"],
                }
            )
            print(rows[-1], flush=True)
    # uniform INT4, symmetric per output channel (fake-quantized weights; size = 4 bits + fp32 scale per channel)
    q = model.copy()
    n, extra = 0, 0
    with torch.no_grad():
        for _, m in quantizable_layers(q.module):
            w = m.weight
            s = w.reshape(w.shape[0], -1).abs().amax(1).clamp_min(1e-12) / 7
            shape = [-1] + [1] * (w.ndim - 1)
            m.weight.copy_((w / s.reshape(shape)).round().clamp(-8, 7) * s.reshape(shape))
            n += w.numel()
            extra += 32 * w.shape[0]
    rows.append(
        {
            "method": "uniform_int4_per_channel",
            "bits": 4,
            "accuracy": evaluate(q.module, data.val, data.task)["accuracy"],
            "bits_per_weight": 4 + extra / n,
        }
    )
    result = {"rows": rows, "environment": environment()}
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(result, indent=2, default=str))
    print(json.dumps(rows, indent=1))


if __name__ == "__main__":
    main()
