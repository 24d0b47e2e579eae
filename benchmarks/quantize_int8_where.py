"""Where INT8 time goes on ONNX Runtime CPU: float vs compress INT8, per kind of kernel, at 1 and 2 threads.

For the networks where compress's INT8 is not faster than float in `quantize_int8.md`
(mobilenet_v3_large, efficientnet_b0, regnet_y_400mf) and resnet18 as the contrast, the same
random-init networks with BatchNorm re-estimated on photos as that benchmark, quantized all-INT8
(speed check and latency plan off, so the file is the one the plan starts from), two ways:
- `integer gates`: compress's default rules (HardSwish / SiLU written as QLinearAdd or QLinearSigmoid
  plus QLinearMul, `rewrite.integer_activations`);
- `float gates`: the same rules without that rewrite (the activation runs in float between
  DequantizeLinear and QuantizeLinear).
First, one element-wise op alone on a [1, 240, 28, 28] tensor (a mobilenet_v3_large expansion
map) at 1 and 2 threads: the integer ops the gates become (QLinearMul, QLinearAdd, QLinearSigmoid)
and the float Mul. Then, for float and each INT8 file: ORT's profiler time per kernel kind (`runtime_report`, median of
`--runs` calls, summed by op type into convs / gates and other element-wise ops / layout and Q/DQ
conversions / the rest) at 1 and at 2 intra-op threads, and the wall-clock speedup over float,
interleaved in one process (median of per-round ratios, paired bootstrap 95% CI), at both thread
counts, and top-1 agreement with float on 128 held-out photo crops.

    python benchmarks/quantize_int8_where.py --out results/quantize_int8_where.json
"""

from __future__ import annotations

import argparse
import contextlib
import os
import sys
import tempfile
from pathlib import Path

os.environ.setdefault("COMPRESS_PROGRESS", "0")
sys.path.insert(0, str(Path(__file__).resolve().parent))

import quantize_int8 as qb  # noqa: E402  (the networks, photo crops, interleaved timing, agreement)

NETS = "resnet18,mobilenet_v3_large,efficientnet_b0,regnet_y_400mf"
KINDS = {
    "convs": ("Conv", "FusedConv", "QLinearConv", "Gemm", "QGemm", "MatMul", "MatMulInteger", "ConvInteger"),
    "gates and element-wise": (
        "Mul", "Add", "QLinearMul", "QLinearAdd", "QLinearSigmoid", "Sigmoid", "QuickGelu", "HardSigmoid",
        "HardSwish", "Relu", "Clip",
    ),
    "layout and Q/DQ": ("Transpose", "ReorderInput", "ReorderOutput", "QuantizeLinear", "DequantizeLinear"),
}  # fmt: skip


@contextlib.contextmanager
def rewrites_without(name: str):
    """ONNX Runtime's INT8 rules with one rewrite left out, for the duration of the block."""
    from compress.backends import onnxruntime as ortb

    saved = ortb.INT8_RULES["rewrites"]
    ortb.INT8_RULES["rewrites"] = tuple(r for r in saved if r != name)
    try:
        yield
    finally:
        ortb.INT8_RULES["rewrites"] = saved


def kernel_kinds(path: Path, threads: int, runs: int) -> dict[str, float]:
    """Microseconds per kind of kernel (KINDS, and `other`) from ORT's profiler; `total` their sum."""
    from compress.backends.onnxruntime import runtime_report

    rep = runtime_report(path, input_shape=(1, 3, 224, 224), threads=threads, runs=runs)
    total = rep["kernel_time_us"]
    out = dict.fromkeys([*KINDS, "other"], 0.0)
    for op, share in rep["time_share"].items():
        kind = next((k for k, ops in KINDS.items() if op in ops), "other")
        out[kind] += share * total
    out["total"] = total
    out["int8_ops"] = rep["summary"].removeprefix("int8 ops ")
    return out


def elementwise_ops(rounds: int = 15, calls: int = 40) -> dict[str, dict[int, float]]:
    """Microseconds per call (median over interleaved rounds) of one element-wise op at 1 and 2 threads."""
    import time

    import numpy as np
    import onnxruntime as ort
    from onnx import TensorProto, helper, numpy_helper

    shape = [1, 240, 28, 28]
    consts = {"s": (0.05, np.float32), "z": (128, np.uint8), "g": (1 / 255, np.float32), "z0": (0, np.uint8)}
    inits = [numpy_helper.from_array(np.asarray(v, dtype=t), k) for k, (v, t) in consts.items()]
    ms = "com.microsoft"
    binary = ["x", "s", "z", "w", "g", "z0", "s", "z"]
    ops = {
        "QLinearMul (uint8)": (helper.make_node("QLinearMul", binary, ["y"], domain=ms), TensorProto.UINT8),
        "QLinearAdd (uint8)": (helper.make_node("QLinearAdd", binary, ["y"], domain=ms), TensorProto.UINT8),
        "QLinearSigmoid (uint8)": (
            helper.make_node("QLinearSigmoid", ["x", "s", "z", "g", "z0"], ["y"], domain=ms),
            TensorProto.UINT8,
        ),
        "Mul (float)": (helper.make_node("Mul", ["x", "w"], ["y"]), TensorProto.FLOAT),
    }
    rng = np.random.default_rng(0)
    sessions = {}
    for name, (node, dtype) in ops.items():
        ins = [helper.make_tensor_value_info(n, dtype, shape) for n in ("x", "w") if n in node.input]
        graph = helper.make_graph([node], "op", ins, [helper.make_tensor_value_info("y", dtype, shape)], inits)
        opsets = [helper.make_opsetid("", 17), helper.make_opsetid(ms, 1)]
        blob = helper.make_model(graph, opset_imports=opsets).SerializeToString()
        feed_type = np.uint8 if dtype == TensorProto.UINT8 else np.float32
        feed = {i.name: (rng.integers(0, 255, shape) if feed_type == np.uint8 else rng.random(shape)).astype(feed_type)
                for i in ins}  # fmt: skip
        for threads in (1, 2):
            so = ort.SessionOptions()
            so.intra_op_num_threads, so.log_severity_level = threads, 3
            sess = ort.InferenceSession(blob, so, providers=["CPUExecutionProvider"])
            sessions[(name, threads)] = (sess, feed)
    times: dict = {k: [] for k in sessions}
    for r in range(rounds):
        for k in list(sessions) if r % 2 == 0 else list(sessions)[::-1]:
            sess, feed = sessions[k]
            sess.run(None, feed)
            t0 = time.perf_counter()
            for _ in range(calls):
                sess.run(None, feed)
            times[k].append((time.perf_counter() - t0) / calls * 1e6)
    out: dict[str, dict[int, float]] = {}
    for (name, threads), v in times.items():
        out.setdefault(name, {})[threads] = float(np.median(v))
    return out


def measure(name: str, args, work: Path) -> dict:
    import torch

    from compress.methods import Context, get_method
    from compress.quantize.int8 import Int8Config, _export_float

    work.mkdir(parents=True, exist_ok=True)
    val = qb.photo_crops(args.eval, seed=2)
    model = qb.build(name)
    qb.recalibrate_bn(model.module, qb.photo_crops(64, seed=3))
    with torch.no_grad():
        labels = torch.cat([model.module(c).argmax(1) for c in val.split(16)])
    files = {"float": work / "float.onnx"}
    _export_float(model, files["float"])
    calib = qb.photo_crops(args.calib, seed=1)
    config = Int8Config(calib_size=args.calib, batch_size=8, speed_check=False, mixed_by_latency=False)
    row: dict = {"network": name, "agreement": {}}
    for variant in ("integer gates", "float gates"):
        block = rewrites_without("integer_activations") if variant == "float gates" else contextlib.nullcontext()
        with block:
            res = get_method("quantize", "int8").fn(
                model, config, Context(data=qb.bundle(calib, val, labels), workdir=work / variant.replace(" ", "_"))
            )
        files[variant] = res.onnx
        row["agreement"][variant] = qb.agreement(res.onnx, val, labels)
    for threads in (1, 2):
        row[f"kernels_{threads}t"] = {k: kernel_kinds(p, threads, args.runs) for k, p in files.items()}
        speed = qb.time_interleaved(files, args.rounds, args.iters, threads)
        row[f"speed_{threads}t"] = {k: v for k, v in speed.items() if k != "float"}
        row[f"float_ms_{threads}t"] = speed["float"]["ms"]
        print(f"{name} {threads} thread(s): " + ", ".join(f"{k} {v['speedup']:.2f}x" for k, v in speed.items()))
    return row


def markdown(rows: list[dict], ops: dict[str, dict[int, float]], command: str) -> str:
    lines = [
        "# Where INT8 time goes on ONNX Runtime CPU (224 px, batch 1; all-INT8, no latency plan)",
        "",
        f"`{command}`",
        "",
        "One element-wise op alone, [1, 240, 28, 28], microseconds per call:",
        "",
        "| op | 1 thread | 2 threads |",
        "|---|---:|---:|",
        *(f"| {name} | {t[1]:.0f} | {t[2]:.0f} |" for name, t in ops.items()),
        "",
        "| network | threads | file | speedup over float (95% CI) | convs us | gates, element-wise us "
        "| layout, Q/DQ us | other us | kernel total us | int8 ops | agree |",
        "|---|---:|---|---|---:|---:|---:|---:|---:|---|---:|",
    ]
    for r in rows:
        for threads in (1, 2):
            for k, kk in r[f"kernels_{threads}t"].items():
                s = r[f"speed_{threads}t"].get(k)
                sp = f"{s['speedup']:.2f}x ({s['ci'][0]:.2f}-{s['ci'][1]:.2f})" if s else "1.00x"
                agree = f"{r['agreement'][k]:.1%}" if k in r["agreement"] else "—"
                us = [kk[kind] for kind in (*KINDS, "other", "total")]
                cells = [r["network"], str(threads), k, sp, *(f"{u:.0f}" for u in us), kk["int8_ops"], agree]
                lines.append("| " + " | ".join(cells) + " |")
    lines += [
        "",
        "Kernel times: ORT's profiler, per node the median over the profiled calls, summed by op type "
        "(convs: Conv, FusedConv, QLinearConv, Gemm, QGemm; gates and element-wise: Mul, Add, QLinearMul, "
        "QLinearAdd, QLinearSigmoid, QuickGelu, HardSigmoid, Relu...; layout and Q/DQ: Transpose, "
        "ReorderInput/Output, QuantizeLinear, DequantizeLinear). Speedup: wall clock, interleaved rounds in one "
        "process. agree: top-1 agreement with float on held-out photo crops (one calibration seed).",
    ]
    return "\n".join(lines) + "\n"


def main() -> None:
    from _common import write_result

    ap = argparse.ArgumentParser()
    ap.add_argument("--out", default="results/quantize_int8_where.json")
    ap.add_argument("--nets", default=NETS)
    ap.add_argument("--rounds", type=int, default=12)
    ap.add_argument("--iters", type=int, default=10)
    ap.add_argument("--runs", type=int, default=20, help="profiled calls per file")
    ap.add_argument("--calib", type=int, default=32)
    ap.add_argument("--eval", type=int, default=128)
    args = ap.parse_args()
    command = "python benchmarks/quantize_int8_where.py " + " ".join(sys.argv[1:])
    work = Path(tempfile.mkdtemp(prefix="q8where-"))
    rows = []
    out = Path(args.out)
    ops = elementwise_ops()
    print(ops, flush=True)
    for name in args.nets.split(","):
        rows.append(measure(name, args, work / name))
        write_result(
            out, {"benchmark": "quantize_int8_where", "command": command, "elementwise_ops": ops, "rows": rows}
        )
    out.with_suffix(".md").write_text(markdown(rows, ops, command))


if __name__ == "__main__":
    main()
