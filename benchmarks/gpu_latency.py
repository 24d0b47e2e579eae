"""GPU latency of the quickstart architectures and a ResNet-50: eager vs CUDA graphs, fp32 vs fp16,
plus 2:4 semi-structured sparse Linear layers vs dense (the N:M speedup to expect on Hopper).

Timed with CUDA events after warm-up, random inputs. Writes JSON with the machine and versions.

    python benchmarks/gpu_latency.py --out results/gpu_latency.json
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).parent))
from _common import write_result  # noqa: E402


def time_cuda(fn, iters: int = 100, warmup: int = 20) -> dict:
    import torch

    for _ in range(warmup):
        fn()
    torch.cuda.synchronize()
    times = []
    for _ in range(iters):
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        fn()
        end.record()
        end.synchronize()
        times.append(start.elapsed_time(end))
    t = np.asarray(times)
    return {
        "p50_ms": float(np.median(t)),
        "p90_ms": float(np.percentile(t, 90)),
        "mean_ms": float(t.mean()),
        "cov": float(t.std() / t.mean()),
        "n": len(t),
    }


def graphed(module, x):
    """Capture one forward pass in a CUDA graph; replaying it removes launch overhead."""
    import torch

    static_x = x.clone()
    s = torch.cuda.Stream()
    s.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(s), torch.inference_mode():
        for _ in range(3):
            module(static_x)
    torch.cuda.current_stream().wait_stream(s)
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph), torch.inference_mode():
        static_y = module(static_x)
    _ = static_y
    return graph.replay


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", default="results/gpu_latency.json")
    args = ap.parse_args()

    import torch

    from compress.models import load_model

    assert torch.cuda.is_available(), "needs a CUDA device"
    torch.backends.cudnn.benchmark = True
    cases = [
        ("torchvision:resnet18", None, (3, 32, 32)),
        ("builtin:simple_cnn", None, (3, 32, 32)),
        ("builtin:resnet_tiny", {"width": 0.5}, (3, 32, 32)),
        ("torchvision:resnet50", None, (3, 224, 224)),
    ]
    rows = []
    for spec, kwargs, shape in cases:
        model = load_model(spec, num_classes=10, input_shape=shape, kwargs=kwargs)
        for batch in (1, 32):
            for dtype in (torch.float32, torch.float16):
                m = model.copy().module.cuda().eval().to(dtype)
                x = torch.rand(batch, *shape, device="cuda", dtype=dtype)
                with torch.inference_mode():
                    eager = time_cuda(lambda m=m, x=x: m(x))
                graph = time_cuda(graphed(m, x))
                rows.append(
                    {
                        "model": spec,
                        "kwargs": kwargs,
                        "input": list(shape),
                        "batch": batch,
                        "dtype": str(dtype).split(".")[-1],
                        "eager": eager,
                        "cuda_graph": graph,
                        "graph_speedup": eager["p50_ms"] / graph["p50_ms"],
                    }
                )
                print(rows[-1])
    sparse_rows = []
    try:
        from torch.sparse import to_sparse_semi_structured

        for n, k in ((1024, 1024), (4096, 4096), (8192, 8192)):
            for batch in (32, 1024):
                w = torch.randn(n, k, device="cuda", dtype=torch.float16)
                mask = torch.tensor([1, 1, 0, 0], device="cuda", dtype=torch.bool).tile(n, k // 4)
                w = w * mask
                x = torch.randn(batch, k, device="cuda", dtype=torch.float16)
                dense = time_cuda(lambda x=x, w=w: torch.nn.functional.linear(x, w))
                ws = to_sparse_semi_structured(w)
                sparse = time_cuda(lambda x=x, ws=ws: torch.nn.functional.linear(x, ws))
                err = float((torch.nn.functional.linear(x, ws) - torch.nn.functional.linear(x, w)).abs().max())
                sparse_rows.append(
                    {
                        "out": n,
                        "in": k,
                        "batch": batch,
                        "dense_ms": dense["p50_ms"],
                        "sparse_2of4_ms": sparse["p50_ms"],
                        "speedup": dense["p50_ms"] / sparse["p50_ms"],
                        "max_abs_err": err,
                    }
                )
                print(sparse_rows[-1])
    except Exception as e:  # report why the sparse kernels are unavailable instead of failing the run
        sparse_rows.append({"error": f"{type(e).__name__}: {str(e)[:300]}"})
    write_result(
        args.out,
        {
            "benchmark": "gpu_latency",
            "gpu": torch.cuda.get_device_name(0),
            "torch": torch.__version__,
            "models": rows,
            "semi_structured_linear": sparse_rows,
        },
    )


if __name__ == "__main__":
    main()
