"""What ONNX Runtime's integer kernels cost in accuracy on this CPU: the same INT8 file run fused vs unfused.

For each network, compress's INT8 file with full-range weights (`overflow_fix: disable`) and with
half-range weights (`enable`), and ORT `quantize_static` with its defaults, each evaluated twice on
the same held-out photo crops: fused (ORT_ENABLE_ALL: QLinearConv and the like, the deployed form) and
unfused (ORT_DISABLE_ALL: DequantizeLinear + float kernels, the arithmetic the Q/DQ graph describes).
On an x86 CPU without VNNI the u8 x s8 kernels add two products into an int16 (VPMADDUBSW) and can
saturate; the gap between the two columns is what that costs. Top-1 agreement with the float model.

    python benchmarks/quantize_int8_kernels.py --out results/quantize_int8_kernels.json
"""

from __future__ import annotations

import argparse
import json
import sys
from datetime import datetime, timezone
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))

import quantize_int8 as qb  # noqa: E402  (the benchmark's networks, photo crops and anchors)


def agreement(path: Path, val, labels, fused: bool) -> float:
    import numpy as np
    import onnxruntime as ort

    so = ort.SessionOptions()
    so.graph_optimization_level = (
        ort.GraphOptimizationLevel.ORT_ENABLE_ALL if fused else ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    )
    so.intra_op_num_threads = 2
    sess = ort.InferenceSession(str(path), so, providers=["CPUExecutionProvider"])
    name = sess.get_inputs()[0].name
    pred = np.concatenate([sess.run(None, {name: val[k : k + 1].numpy()})[0].argmax(1) for k in range(len(val))])
    return float((pred == labels).mean())


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", default="results/quantize_int8_kernels.json")
    ap.add_argument("--nets", default="resnet18,convnext_tiny,regnet_y_400mf")
    ap.add_argument("--work", default=None, help="keep the files here (default: a temporary folder)")
    args = ap.parse_args()
    import tempfile

    import torch

    from compress.env import environment
    from compress.quantize.bnfold import fold_batchnorm_onnx
    from compress.quantize.int8 import Int8Config, _export_float
    from compress.quantize.nncf_adapter import quantize_onnx

    work = Path(args.work or tempfile.mkdtemp())
    rows = []
    for net in args.nets.split(","):
        d = work / net.replace(":", "_")
        d.mkdir(parents=True, exist_ok=True)
        val = qb.photo_crops(128, seed=2)
        model = qb.build(net)
        if not net.startswith("pretrained:"):
            qb.recalibrate_bn(model.module, qb.photo_crops(64, seed=3))
        with torch.no_grad():
            labels = torch.cat([model.module(c).argmax(1) for c in val.split(16)]).numpy()
        fp = d / "float.onnx"
        _export_float(model, fp)
        crops = qb.photo_crops(32, seed=1)
        calib = [crops[i : i + 8] for i in range(0, 32, 8)]
        files = {}
        for fix in ("disable", "enable"):
            files[f"compress overflow_fix {fix}"] = d / f"compress_{fix}.onnx"
            quantize_onnx(
                fp, files[f"compress overflow_fix {fix}"], calib, Int8Config(calib_size=32, overflow_fix=fix), []
            )
        folded = d / "folded.onnx"
        fold_batchnorm_onnx(fp, folded)
        files["ORT quantize_static"] = d / "ort.onnx"
        qb.ort_static(folded, files["ORT quantize_static"], crops)
        row = {"network": net}
        for k, p in files.items():
            row[k] = {"fused": agreement(p, val, labels, True), "unfused": agreement(p, val, labels, False)}
        print(json.dumps(row), flush=True)
        rows.append(row)
    result = {
        "benchmark": "quantize_int8_kernels",
        "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "command": f"python benchmarks/quantize_int8_kernels.py --out {args.out}",
        "environment": environment(),
        "rows": rows,
    }
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=1))
    lines = [
        "# INT8 integer kernels vs the arithmetic of the same file (top-1 agreement with float, 128 photo crops)",
        "",
        f"`{result['command']}`; CPU ISA {result['environment']['machine'].get('isa')}",
        "",
        "| network | file | fused (deployed) | unfused (DQ + float) |",
        "|---|---|---:|---:|",
    ]
    for r in rows:
        for k, v in r.items():
            if k != "network":
                lines.append(f"| {r['network']} | {k} | {v['fused']:.1%} | {v['unfused']:.1%} |")
    out.with_suffix(".md").write_text("\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
