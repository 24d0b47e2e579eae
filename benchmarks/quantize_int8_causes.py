"""Why INT8 agrees less with float than the anchors: each suspect changed alone, over several crop seeds.

Same networks, BatchNorm re-estimation and photo crops as `benchmarks/quantize_int8.py`. Per seed one
calibration set (32 crops) and one evaluation set (64 crops); each variant is an NNCF run (batching of
the calibration items, preset, fast bias correction, range estimator, per-tensor activations) followed
by a subset of the ONNX Runtime rewrites (`compress.backends.onnxruntime.INT8_RULES`), with the ranges
of the Q/DQ that compress adds observed either as the code does now (NNCF's mean of per-image extremes)
or as before (extremes over the whole set). Figures against the float model: top-1 agreement and the
relative logit error |q - f| / |f| (KL is useless on random-init nets: their softmax is nearly flat).

    python benchmarks/quantize_int8_causes.py --nets mobilenet_v3_large,efficientnet_b0 --seeds 0,1,2 \\
        --out results/quantize_int8_causes.json
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

# name: (batch of a calibration item, NNCF preset, fast bias correction, activation range estimator,
#        rewrites left out, ranges of the added Q/DQ); None for the ORT-rules column: all of INT8_RULES
VARIANTS = {
    "before": (8, "performance", True, None, (), "global"),
    "single_images": (1, "performance", True, None, (), "global"),
    "single_images_mean_ranges": (1, "performance", True, None, (), "mean"),
    "now": (1, "mixed", True, None, (), "mean"),
    "now_no_fast_bias_correction": (1, "mixed", False, None, (), "mean"),
    "now_minmax_estimator": (1, "mixed", True, "MINMAX", (), "mean"),
    "now_no_quantize_outputs": (1, "mixed", True, None, ("quantize_outputs",), "mean"),
    "now_no_integer_activations": (1, "mixed", True, None, ("integer_activations",), "mean"),
    "now_no_absorb_activations": (1, "mixed", True, None, ("absorb_activations",), "mean"),
}


def figures(q, f) -> dict[str, float]:
    import numpy as np

    return {
        "agree": float((q.argmax(1) == f.argmax(1)).mean()),
        "rel": float(np.mean(np.linalg.norm(q - f, axis=1) / np.linalg.norm(f, axis=1))),
    }


def logits(path: Path, images):
    import numpy as np

    from compress.backends import get_backend

    sess = get_backend("onnxruntime").load(path)
    return np.concatenate([sess.run(x.numpy()) for x in images.split(16)])


def quantize_variant(folded: Path, out: Path, calib, variant) -> None:
    import onnx
    from nncf.quantization.advanced_parameters import AdvancedQuantizationParameters, QuantizationParameters
    from nncf.quantization.range_estimator import RangeEstimatorParametersSet

    from compress.backends.onnxruntime import INT8_RULES
    from compress.quantize import rewrite
    from compress.quantize.nncf_adapter import _quiet, nncf_module

    batch, preset, fbc, estimator, left_out, ranges = variant
    nncf = nncf_module()
    model = onnx.load(str(folded))
    name = model.graph.input[0].name
    advanced = {"activations_quantization_params": QuantizationParameters(per_channel=False)}
    if estimator:
        advanced["activations_range_estimator_params"] = getattr(RangeEstimatorParametersSet, estimator)
    with _quiet():
        q = nncf.quantize(
            model,
            nncf.Dataset(list(calib.split(batch)), lambda x: {name: x.numpy()}),
            preset=getattr(nncf.QuantizationPreset, preset.upper()),
            subset_size=len(calib),
            fast_bias_correction=fbc,
            advanced_parameters=AdvancedQuantizationParameters(**advanced),
        )
    onnx.save(q, str(out))
    rules = tuple(r for r in INT8_RULES["rewrites"] if r not in left_out)
    mean_ranges = rewrite.tensor_ranges
    if ranges == "global":
        rewrite.tensor_ranges = _global_with(mean_ranges)
    try:
        rewrite.apply_rewrites(out, rules, [x.numpy() for x in calib.split(8)])
    finally:
        rewrite.tensor_ranges = mean_ranges


def _global_with(per_image_fn):
    """The estimator before the fix: min and max over the whole calibration set (kept here to compare)."""

    def fn(path, names, batches):
        per_image = [per_image_fn(path, names, [x[i : i + 1]]) for x in batches for i in range(len(x))]
        return {n: (min(r[n][0] for r in per_image), max(r[n][1] for r in per_image)) for n in names}

    return fn


def run_net(name: str, seeds: list[int], variants: list[str], tmp: Path) -> list[dict]:
    import quantize_int8 as bench

    from compress.quantize.bnfold import fold_batchnorm_onnx
    from compress.quantize.int8 import _export_float

    model = bench.build(name)
    bench.recalibrate_bn(model.module, bench.photo_crops(64, seed=3))
    work = tmp / name.replace(":", "_")
    work.mkdir(parents=True, exist_ok=True)
    float_path, folded = work / "float.onnx", work / "folded.onnx"
    _export_float(model, float_path)
    fold_batchnorm_onnx(float_path, folded)
    rows = []
    for seed in seeds:
        calib, val = bench.photo_crops(32, seed=100 + seed), bench.photo_crops(64, seed=200 + seed)
        ref = logits(float_path, val)
        row = {"network": name, "seed": seed}
        for v in variants:
            out = work / f"{v}.onnx"
            quantize_variant(folded, out, calib, VARIANTS[v])
            row[v] = figures(logits(out, val), ref)
        bench.nncf_defaults(folded, work / "nncf.onnx", calib)
        row["nncf_defaults"] = figures(logits(work / "nncf.onnx", val), ref)
        bench.ort_static(folded, work / "ort.onnx", calib)
        row["ort_static"] = figures(logits(work / "ort.onnx", val), ref)
        print(json.dumps(row), flush=True)
        rows.append(row)
    shutil.rmtree(work, ignore_errors=True)
    return rows


def main() -> None:
    import tempfile

    from _common import write_result

    ap = argparse.ArgumentParser()
    ap.add_argument("--nets", default="mobilenet_v3_large,efficientnet_b0")
    ap.add_argument("--seeds", default="0,1,2")
    ap.add_argument("--variants", default=",".join(VARIANTS))
    ap.add_argument("--out", default="results/quantize_int8_causes.json")
    args = ap.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="q8causes-"))
    seeds = [int(s) for s in args.seeds.split(",")]
    rows = [r for n in args.nets.split(",") for r in run_net(n, seeds, args.variants.split(","), tmp)]
    write_result(
        Path(args.out), {"command": "python benchmarks/quantize_int8_causes.py " + " ".join(sys.argv[1:]), "rows": rows}
    )


if __name__ == "__main__":
    main()
