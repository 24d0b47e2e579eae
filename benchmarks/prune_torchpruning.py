"""Channel pruning side by side with Torch-Pruning on torchvision and timm models at 50% channels.

For each model: the share of channels compress can remove, MACs and parameters kept, ONNX Runtime
CPU latency ratio pruned / dense (batch 1), time to prune, and whether each tool handled the model
(pruned, ran, kept the output shape, exported with ORT parity). Also times dependency analysis +
pruning of resnet50 at 224x224 (no verification, no MAC counting).

    pip install torch-pruning   # for this benchmark only
    python benchmarks/prune_torchpruning.py --out results/prune_torchpruning.json --size 128
    python benchmarks/prune_torchpruning.py --zoo timm --out results/prune_timm.json --iters 5

timm models are built with pretrained=False at their default input size (nothing downloads).
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
import torchvision

MODELS = [
    "resnet18",
    "resnet50",
    "mobilenet_v2",
    "mobilenet_v3_large",
    "efficientnet_b0",
    "regnet_y_400mf",
    "densenet121",
    "convnext_tiny",
    "shufflenet_v2_x1_0",
    "squeezenet1_1",
    "vgg11_bn",
    "vit_b_16",
    "swin_t",
]

TIMM_MODELS = [
    "efficientnet_lite0",
    "efficientnet_b0",
    "mobilenetv3_large_100",
    "regnety_016",
    "ghostnet_100",
    "densenet121",
    "repvgg_a0",
    "cspresnet50",
    "resnet50",
    "convnext_tiny",
    "vit_small_patch16_224",
    "deit_tiny_patch16_224",
    "swin_tiny_patch4_window7_224",
    "mobilevit_s",
    "edgenext_small",
    "efficientformer_l1",
    "fastvit_t8",
    "poolformer_s12",
    "res2net50_14w_8s",
    "dla34",
]

# vgg's classifier pools to 7x7, which the TorchScript ONNX exporter only handles from an input of 224
MIN_SIZE = {"vgg11_bn": 224}


def build(name: str, size: int, zoo: str = "torchvision") -> torch.nn.Module:
    if zoo == "timm":
        import timm

        return timm.create_model(name, pretrained=False, num_classes=1000).eval()
    kwargs = {"image_size": size} if name.startswith("vit") else {}
    return torchvision.models.get_model(name, weights=None, num_classes=1000, **kwargs).eval()


def timm_size(name: str) -> int:
    import timm

    return int(timm.create_model(name, pretrained=False).pretrained_cfg.get("input_size", (3, 224, 224))[-1])


def figures(module: torch.nn.Module, shape) -> tuple[int, int]:
    """MACs and parameters; nn.MultiheadAttention's fused CPU kernel is invisible to FlopCounterMode,
    so attention is counted on the equivalent PrunableAttention (same function, explicit matmuls)."""
    from compress.analysis import count_macs, count_params
    from compress.prune.attention import convert_attention

    if any(isinstance(m, torch.nn.MultiheadAttention) for m in module.modules()):
        module = copy.deepcopy(module)
        convert_attention(module)
    return int(count_macs(module, shape)), int(count_params(module))


def ort_session(module: torch.nn.Module, shape, tmp: Path, tag: str):
    """Export with the TorchScript exporter, check parity in ORT; returns (session, feed, onnx bytes)."""
    import onnxruntime as ort

    path = tmp / f"{tag}.onnx"
    x = torch.rand(1, *shape)
    torch.onnx.export(module.eval(), (x,), str(path), dynamo=False, opset_version=17, input_names=["input"])
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = 2
    opts.inter_op_num_threads = 1
    opts.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    sess = ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])
    feed = {"input": x.numpy()}
    with torch.no_grad():
        ref = module(x).numpy()
    out = sess.run(None, feed)[0]
    if np.abs(out - ref).max() > 1e-3 * (np.abs(ref).max() + 1e-6) + 1e-4:
        raise RuntimeError("ORT output differs from torch")
    return sess, feed, path.stat().st_size


def interleaved_latency(sessions: dict, iters: int) -> dict[str, float]:
    """Median latency of each session, measured in alternating rounds so machine noise hits all alike."""
    for sess, feed in sessions.values():
        for _ in range(3):
            sess.run(None, feed)
    times: dict[str, list[float]] = {k: [] for k in sessions}
    for _ in range(iters):
        for key, (sess, feed) in sessions.items():
            t = time.perf_counter()
            sess.run(None, feed)
            times[key].append(time.perf_counter() - t)
    return {k: float(np.median(v)) for k, v in times.items()}


def ours(module: torch.nn.Module, shape, info: dict) -> torch.nn.Module:
    from compress.models.model import Model
    from compress.prune.channel import ChannelConfig, prune_channels

    model = Model(module, {"source": "torchvision", "name": "x", "kwargs": {}}, tuple(shape))
    pruned, metrics = prune_channels(model, ChannelConfig(ratio=0.5, round_to=8, importance="l2", verify=True))
    report = metrics["report"]
    info["prunable_share"] = round(report["channels_prunable"] / max(report["channels_total"], 1), 3)
    info["verified"] = metrics["verified"]
    whole = sorted(
        {r.split(": ", 1)[-1] for g in report["groups"] for r in g["reasons"]} - {"reaches the model output"}
    )
    if whole:
        info["kept_whole_because"] = whole[:4]
    return pruned.module


def torch_pruning(module: torch.nn.Module, shape, info: dict) -> torch.nn.Module:
    import torch_pruning as tp

    module = copy.deepcopy(module)
    example = torch.randn(1, *shape)
    heads = {m: m.num_heads for m in module.modules() if isinstance(m, torch.nn.MultiheadAttention)}
    # timm attention (Torch-Pruning's timm example): qkv linear + num_heads, updated after the step
    timm_attn = [m for m in module.modules() if isinstance(getattr(m, "qkv", None), torch.nn.Linear)]
    timm_attn = [m for m in timm_attn if isinstance(getattr(m, "num_heads", None), int)]
    heads.update({m.qkv: m.num_heads for m in timm_attn})
    last = [m for m in module.modules() if isinstance(m, torch.nn.Linear)][-1:]
    pruner = tp.pruner.MagnitudePruner(
        module,
        example,
        importance=tp.importance.MagnitudeImportance(p=2),
        pruning_ratio=0.5,
        round_to=8,
        ignored_layers=last,
        num_heads=heads,
    )
    pruner.step()
    for m in timm_attn:
        m.num_heads = pruner.num_heads.get(m.qkv, m.num_heads)
        if hasattr(m, "head_dim"):
            m.head_dim = m.qkv.out_features // (3 * m.num_heads)
        if hasattr(m, "attn_dim"):
            m.attn_dim = m.num_heads * m.head_dim
    with torch.no_grad():
        y = module(example)
    if y.shape != (1, 1000):
        raise RuntimeError(f"output shape {tuple(y.shape)}")
    return module


def resnet50_timing() -> dict:
    from compress.prune.graph import analyze
    from compress.prune.select import importance, keep_uniform

    m = torchvision.models.resnet50(weights=None).eval()
    t = time.perf_counter()
    graph = analyze(m, (3, 224, 224))
    t_analysis = time.perf_counter() - t
    keep = keep_uniform(graph, importance(graph, "l2"), 0.5, 8)
    graph.apply(keep)
    total = time.perf_counter() - t
    return {"analysis_s": round(t_analysis, 3), "analysis_and_pruning_s": round(total, 3)}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", default="results/prune_torchpruning.json")
    ap.add_argument("--size", type=int, default=128, help="input resolution (224 is slow on 2 shared cores)")
    ap.add_argument("--iters", type=int, default=20)
    ap.add_argument("--zoo", choices=["torchvision", "timm"], default="torchvision")
    ap.add_argument("--models", default=None, help="comma-separated (default: the zoo's list)")
    ap.add_argument("--timing", action=argparse.BooleanOptionalAction, default=True, help="resnet50 timing")
    args = ap.parse_args()
    models = args.models.split(",") if args.models else (TIMM_MODELS if args.zoo == "timm" else MODELS)
    os.environ.setdefault("COMPRESS_PROGRESS", "0")
    torch.set_num_threads(2)
    from compress.env import environment

    shape = (3, args.size, args.size)
    rows = []
    tmp = Path(tempfile.mkdtemp())
    for name in models:
        size = timm_size(name) if args.zoo == "timm" else max(args.size, MIN_SIZE.get(name, 0))
        shape = (3, size, size)
        dense = build(name, size, args.zoo)
        macs0, params0 = figures(dense, shape)
        try:
            sess0, feed0, size0 = ort_session(dense, shape, tmp, f"{name}_dense")
        except Exception as e:  # noqa: BLE001 - the dense model itself does not export at this size
            rows.append({"model": name, "input": list(shape), "error": f"dense export: {str(e).splitlines()[0][:160]}"})
            continue
        sessions = {"dense": (sess0, feed0)}
        row = {
            "model": name,
            "input": list(shape),
            "dense_macs": macs0,
            "dense_params": params0,
            "dense_onnx_bytes": size0,
        }
        for tool, fn in (("compress", ours), ("torch_pruning", torch_pruning)):
            info: dict = {}
            try:
                t = time.perf_counter()
                pruned = fn(copy.deepcopy(dense), shape, info)
                elapsed = time.perf_counter() - t
                macs, params = figures(pruned, shape)
                sess, feed, size = ort_session(pruned, shape, tmp, f"{name}_{tool}")
                sessions[tool] = (sess, feed)
                row[tool] = {
                    **info,
                    "handled": True,
                    "macs_ratio": round(macs / macs0, 3),
                    "params_ratio": round(params / params0, 3),
                    "onnx_ratio": round(size / size0, 3),
                    "prune_s": round(elapsed, 2),
                }
            except Exception as e:  # a tool failing on a model is a result, not a crash of the benchmark
                msg = str(e).splitlines()[0][:160] if str(e) else ""
                row[tool] = {**info, "handled": False, "error": f"{type(e).__name__}: {msg}"}
        lat = interleaved_latency(sessions, args.iters)
        row["dense_ms"] = round(lat["dense"] * 1e3, 2)
        for tool in ("compress", "torch_pruning"):
            if tool in lat:
                row[tool]["latency_ratio"] = round(lat[tool] / lat["dense"], 3)
        rows.append(row)
        print(json.dumps(row), flush=True)
    result = {
        "benchmark": "prune_torchpruning",
        "zoo": args.zoo,
        "command": "python " + " ".join(sys.argv),
        "input": "timm default input size per model" if args.zoo == "timm" else [3, args.size, args.size],
        "batch": 1,
        "ratio": 0.5,
        "round_to": 8,
        "importance": "l2 magnitude (both tools)",
        "latency": f"ONNX Runtime CPU, 2 threads, median of {args.iters} interleaved rounds",
        "note": "shared 2-core machine: latency ratios are noisy (+-10%)",
        "prune_s": "compress: trace + analysis + importance + removal + verification against the masked "
        "dense model + two MAC counts; Torch-Pruning: DepGraph + step (no verification)",
        "rows": rows,
        "environment": environment(),
    }
    if args.timing:
        result["resnet50_224"] = resnet50_timing()
    try:
        import importlib.metadata as md

        result["torch_pruning_version"] = md.version("torch-pruning")
    except Exception:  # noqa: BLE001
        pass
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(result, indent=1, default=str))
    Path(args.out).with_suffix(".md").write_text(markdown(result))
    print(markdown(result))


def markdown(result: dict) -> str:
    """The table of a result file (figures as in the JSON; '-' where a tool failed)."""

    def cell(r: dict, key: str) -> str:
        v = r.get(key)
        return "-" if v is None else f"{v:.2f}" if isinstance(v, float) else str(v)

    lines = [
        f"Pruning at ratio 0.5, round-to 8 ({result['zoo']}, input {result['input']}); `{result['command']}`",
        "",
        "| model | px | prunable | MACs c / TP | ORT latency c / TP | prune s c / TP | compress check | TP error |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for row in result["rows"]:
        c, t = row.get("compress", {}), row.get("torch_pruning", {})
        if "error" in row and not c:
            lines.append(f"| {row['model']} | {row['input'][-1]} | dense: {row['error'][:60]} | | | | | |")
            continue
        err = t.get("error", "")[:70].replace("|", "/")
        check = c.get("verified", "-") if c.get("handled") else "failed: " + c.get("error", "")[:60].replace("|", "/")
        lines.append(
            f"| {row['model']} | {row['input'][-1]} | {cell(c, 'prunable_share')} | {cell(c, 'macs_ratio')} / "
            f"{cell(t, 'macs_ratio')} | {cell(c, 'latency_ratio')} / {cell(t, 'latency_ratio')} | "
            f"{cell(c, 'prune_s')} / {cell(t, 'prune_s')} | {check} | {err} |"
        )
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    sys.exit(main())
