"""Does the latency harness add overhead? Compare its p50 with a bare ONNX Runtime timing loop.

Both loops time the same session on the same input in the same process, alternated in several rounds
so that machine noise hits both alike. Goal: harness p50 within 5% of the bare loop's.

    python benchmarks/harness_overhead.py --out results/harness_overhead.json
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).parent))
from _common import write_result  # noqa: E402


def bare_loop(sess, feed, name, n):
    times = []
    for _ in range(n):
        t0 = time.perf_counter()
        sess.run([name], feed)
        times.append(time.perf_counter() - t0)
    return np.asarray(times)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", default="results/harness_overhead.json")
    ap.add_argument("--model", default="torchvision:resnet18")
    ap.add_argument("--image-size", type=int, default=224)
    ap.add_argument("--rounds", type=int, default=10)
    ap.add_argument("--iters", type=int, default=30)
    args = ap.parse_args()

    from compress.backends import get_backend
    from compress.bench.latency import LatencyConfig, measure
    from compress.export import export_onnx
    from compress.models import load_model

    model = load_model(args.model, num_classes=10, input_shape=(3, args.image_size, args.image_size))
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "m.onnx"
        export_onnx(model, path)
        session = get_backend("onnxruntime").load(path)
        x = np.random.default_rng(0).random((1, 3, args.image_size, args.image_size), dtype=np.float32)
        run = session.runner(x)
        feed = {session.input_name: x}
        bare_loop(session.sess, feed, session.output_name, 20)
        harness, bare = [], []
        cfg = LatencyConfig(warmup_iters=2, warmup_s=0.0, min_iters=args.iters, min_time_s=0.0, max_iters=args.iters)
        for _ in range(args.rounds):
            harness.append(measure(run, cfg))
            bare.append(bare_loop(session.sess, feed, session.output_name, args.iters))
    h, b = np.concatenate(harness) * 1e3, np.concatenate(bare) * 1e3
    ratio = float(np.median(h) / np.median(b))
    write_result(
        args.out,
        {
            "benchmark": "harness_overhead",
            "model": f"{args.model} {args.image_size}px batch 1, ONNX Runtime CPU",
            "harness_p50_ms": float(np.median(h)),
            "bare_p50_ms": float(np.median(b)),
            "ratio": ratio,
            "within_5pct": abs(ratio - 1) <= 0.05,
            "samples_each": int(len(h)),
        },
    )


if __name__ == "__main__":
    main()
