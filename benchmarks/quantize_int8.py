"""INT8: ours (NNCF, both routes) vs ONNX Runtime quantize_static (QDQ, per-channel) on the same model and
calibration set: accuracy on digits through ORT and ORT CPU latency; plus resnet18 224px latency fp32 vs INT8.

    python benchmarks/quantize_int8.py --out results/quantize_int8.json
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
from pathlib import Path

os.environ.setdefault("COMPRESS_PROGRESS", "0")


def main() -> None:
    import numpy as np
    import onnxruntime as ort
    import torch
    from onnxruntime.quantization import CalibrationDataReader, QuantFormat, QuantType, quantize_static

    from compress.bench import BenchConfig, LatencyConfig, bench
    from compress.data import DataConfig, load_data
    from compress.env import environment
    from compress.methods import Context, get_method
    from compress.models.sources import load_model
    from compress.quantize._common import calibration_batches, ort_metrics
    from compress.quantize.int8 import Int8Config, _fold_batchnorm_onnx
    from compress.train.loop import TrainConfig, train

    ap = argparse.ArgumentParser()
    ap.add_argument("--out", default="results/quantize_int8.json")
    ap.add_argument("--epochs", type=int, default=4)
    args = ap.parse_args()
    tmp = Path(tempfile.mkdtemp())
    lat = BenchConfig(accuracy=False, latency=LatencyConfig(min_iters=50, min_time_s=2.0))
    rows = {}

    def latency(path: Path, data=None) -> float:
        return bench(path, lat, data=data)["latency"]["p50_ms"]

    def ort_static(float_path: Path, out: Path, calib: list) -> None:
        folded = tmp / f"{out.stem}_folded.onnx"
        _fold_batchnorm_onnx(float_path, folded)

        class Reader(CalibrationDataReader):
            def __init__(self):
                self.it = iter([{"input": x.numpy()} for x in calib])

            def get_next(self):
                return next(self.it, None)

        quantize_static(
            str(folded),
            str(out),
            Reader(),
            quant_format=QuantFormat.QDQ,
            per_channel=True,
            activation_type=QuantType.QInt8,
            weight_type=QuantType.QInt8,
        )

    # 1) accuracy + latency on digits, resnet_tiny at 32px
    data = load_data(DataConfig(name="digits", image_size=32, channels=3, calib_size=300))
    torch.manual_seed(0)
    model = load_model("builtin:resnet_tiny", num_classes=10, in_channels=3, input_shape=data.input_shape)
    train(model.module, data, TrainConfig(epochs=args.epochs, batch_size=64, device="cpu"), show_progress=False)
    fn = get_method("quantize", "int8").fn
    calib = calibration_batches(data, 300, 32)
    for route in ("onnx", "torch"):
        r = fn(model, Int8Config(route=route, calib_size=300), Context(data=data, workdir=tmp / route))
        rows[f"ours_{route}"] = {
            "accuracy": r.metrics["accuracy"],
            "size_bytes": r.metrics["size_bytes"],
            "p50_ms": latency(r.onnx, data),
        }
        rows["float"] = {
            "accuracy": r.metrics["float_accuracy"],
            "size_bytes": r.metrics["float_size_bytes"],
            "p50_ms": latency(r.files["float_onnx"], data),
        }
        float_path = r.files["float_onnx"]
    ort_path = tmp / "ort_static.onnx"
    ort_static(float_path, ort_path, calib)
    rows["ort_quantize_static"] = {
        "accuracy": ort_metrics(ort_path, data)["accuracy"],
        "size_bytes": ort_path.stat().st_size,
        "p50_ms": latency(ort_path, data),
    }
    # 2) resnet18 224px latency (random weights; int8 speed does not depend on them)
    syn = load_data(DataConfig(name="synthetic:3x224x224", image_size=224, calib_size=16, limit=32))
    r18 = load_model("torchvision:resnet18", num_classes=10, input_shape=(3, 224, 224))
    r = fn(r18, Int8Config(calib_size=16), Context(data=syn, workdir=tmp / "r18"))
    ort18 = tmp / "r18_ort.onnx"
    ort_static(r.files["float_onnx"], ort18, calibration_batches(syn, 16, 8))
    r18_rows = {}
    for _ in range(2):  # interleaved
        for name, p in (("float", r.files["float_onnx"]), ("ours_onnx", r.onnx), ("ort_quantize_static", ort18)):
            r18_rows.setdefault(name, []).append(latency(p))
    result = {
        "digits_resnet_tiny_32px": rows,
        "resnet18_224px_p50_ms": {k: min(v) for k, v in r18_rows.items()},
        "resnet18_speedup_ours": min(r18_rows["float"]) / min(r18_rows["ours_onnx"]),
        "ort_version": ort.__version__,
        "environment": environment(),
        "np": np.__version__,
    }
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(result, indent=2, default=str))
    print(json.dumps({k: v for k, v in result.items() if k != "environment"}, indent=2, default=str))


if __name__ == "__main__":
    main()
