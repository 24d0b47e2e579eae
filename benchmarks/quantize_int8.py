"""INT8 on ONNX Runtime CPU: compress vs NNCF defaults vs ORT quantize_static, over the usual ImageNet networks.

For each network (random init, pretrained=False; nothing downloads) at 224 px, batch 1:
- BatchNorm statistics are re-estimated on the calibration photos first, so activations have the
  ranges of a trained network rather than of a random one (same float model for all three).
- the float model is exported once; compress (`quantize --method int8`), NNCF called directly with
  its defaults, and ORT `quantize_static` (QDQ, per-channel, int8/int8) quantize that same model on
  the same calibration images;
- float and the three INT8 files are timed interleaved in one process (rounds in alternating order,
  each round one median per model); speedup = median of per-round float / INT8 ratios, with a paired
  bootstrap 95% interval (`compress.check.stats`);
- integer-kernel share: from ORT's optimised graph (`compress.backends.onnxruntime.runtime_report`);
- top-1 agreement with the float model on held-out photo crops, through ORT.

Calibration and evaluation images are crops (random position and scale, flips) of the two real
photos bundled with scikit-learn (`sklearn.datasets.load_sample_images`); scikit-image is not
installed here.

    python benchmarks/quantize_int8.py --out results/quantize_int8.json
    python benchmarks/quantize_int8.py --nets mobilenet_v2,resnet18 --rounds 6 --out /tmp/q.json
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

NETS = (
    "resnet18",
    "resnet50",
    "mobilenet_v2",
    "mobilenet_v3_large",
    "efficientnet_b0",
    "convnext_tiny",
    "regnet_y_400mf",
    "timm:efficientnet_lite0",  # BatchNormAct2d (BN + ReLU6 in one timm module)
)
MEAN, STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)


def photo_crops(n: int, seed: int, size: int = 224):
    """n normalised crops of the two bundled photos: random scale (160-427 px), position and flip."""
    import numpy as np
    import torch
    from sklearn.datasets import load_sample_images

    rng = np.random.default_rng(seed)
    images = [torch.from_numpy(im).permute(2, 0, 1).float() / 255.0 for im in load_sample_images().images]
    mean, std = torch.tensor(MEAN).view(3, 1, 1), torch.tensor(STD).view(3, 1, 1)
    out = []
    for _ in range(n):
        im = images[int(rng.integers(len(images)))]
        side = int(rng.integers(160, 428))
        y, x = int(rng.integers(0, im.shape[1] - side + 1)), int(rng.integers(0, im.shape[2] - side + 1))
        crop = im[:, y : y + side, x : x + side]
        if rng.random() < 0.5:
            crop = crop.flip(2)
        crop = torch.nn.functional.interpolate(crop[None], size=(size, size), mode="bilinear", align_corners=False)
        out.append(((crop[0] - mean) / std).contiguous())
    return torch.stack(out)


def build(name: str):
    import torch

    from compress.models.model import Model
    from compress.models.sources import load_model

    if name.startswith("timm:"):
        import timm

        module = timm.create_model(name[5:], pretrained=False, num_classes=1000)
        return Model(module, {"source": "timm", "name": name[5:], "kwargs": {}}, (3, 224, 224))
    torch.manual_seed(0)
    return load_model(f"torchvision:{name}", num_classes=1000, input_shape=(3, 224, 224))


def recalibrate_bn(module, images) -> None:
    """Re-estimate every BatchNorm's running statistics on `images` (cumulative average), then eval."""
    import torch

    bns = [m for m in module.modules() if isinstance(m, torch.nn.modules.batchnorm._BatchNorm)]
    for m in bns:
        m.reset_running_stats()
        m.momentum = None
    module.train()
    with torch.no_grad():
        for chunk in images.split(16):
            module(chunk)
    module.eval()


def bundle(calib, val, labels):
    import torch
    from torch.utils.data import TensorDataset

    from compress.data import DataBundle, DataConfig

    calib_ds = TensorDataset(calib, torch.zeros(len(calib), dtype=torch.long))
    val_ds = TensorDataset(val, labels)
    return DataBundle(calib_ds, val_ds, calib_ds, (3, 224, 224), 1000, "classification", DataConfig(name="photos"))


def nncf_defaults(folded: Path, out: Path, calib) -> None:
    import nncf
    import onnx

    from compress.quantize.nncf_adapter import _quiet

    model = onnx.load(str(folded))
    name = model.graph.input[0].name
    with _quiet():
        q = nncf.quantize(
            model, nncf.Dataset(list(calib.split(1)), lambda x: {name: x.numpy()}), subset_size=len(calib)
        )
    onnx.save(q, str(out))


def ort_static(folded: Path, out: Path, calib) -> None:
    import onnx
    from onnxruntime.quantization import CalibrationDataReader, QuantFormat, QuantType, quantize_static

    name = onnx.load(str(folded)).graph.input[0].name

    class Reader(CalibrationDataReader):
        def __init__(self):
            self.it = iter([{name: x.numpy()} for x in calib.split(1)])

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


def time_interleaved(paths: dict[str, Path], rounds: int, iters: int, threads: int) -> dict[str, dict]:
    """Speedup of every file over paths['float']: median of per-round ratios and a paired bootstrap CI."""
    import numpy as np

    from compress.backends import get_backend
    from compress.backends.base import BackendOptions
    from compress.check.stats import bootstrap_ratio_ci

    backend = get_backend("onnxruntime")
    sessions = {k: backend.load(p, BackendOptions(threads=threads)) for k, p in paths.items()}
    x = np.random.default_rng(0).standard_normal((1, 3, 224, 224)).astype(np.float32)
    runners = {k: s.runner(x) for k, s in sessions.items()}
    for run in runners.values():
        for _ in range(3):
            run()
    names = list(runners)
    med: dict[str, list[float]] = {k: [] for k in names}
    for r in range(rounds):
        for k in names if r % 2 == 0 else names[::-1]:
            run = runners[k]
            run()
            ts = []
            for _ in range(iters):
                t0 = time.perf_counter()
                run()
                ts.append(time.perf_counter() - t0)
            med[k].append(float(np.median(ts)))
    base = np.asarray(med["float"])
    out = {}
    for k in names:
        c = np.asarray(med[k])
        lo, hi = bootstrap_ratio_ci(c, base, paired=True, seed=0)  # ratio float / k = speedup
        out[k] = {
            "ms": float(np.median(c) * 1e3),
            "speedup": float(np.exp(np.median(np.log(base / c)))),
            "ci": [lo, hi],
        }
    return out


def agreement(path: Path, images, labels) -> float:
    from compress.backends import get_backend

    sess = get_backend("onnxruntime").load(path)
    hits = 0
    for x, y in zip(images.split(16), labels.split(16), strict=True):
        hits += int((sess.run(x.numpy()).argmax(1) == y.numpy()).sum())
    return hits / len(labels)


def run_net(name: str, args, tmp: Path) -> dict:
    import torch

    from compress.backends.onnxruntime import runtime_report
    from compress.methods import Context, get_method
    from compress.quantize.bnfold import fold_batchnorm_onnx
    from compress.quantize.int8 import Int8Config, _export_float

    t_start = time.perf_counter()
    work = tmp / name.replace(":", "_")
    work.mkdir(parents=True, exist_ok=True)
    calib, val = photo_crops(args.calib, seed=1), photo_crops(args.eval, seed=2)
    model = build(name)
    recalibrate_bn(model.module, photo_crops(64, seed=3))
    with torch.no_grad():
        labels = torch.cat([model.module(c).argmax(1) for c in val.split(16)])
    files: dict[str, Path] = {"float": work / "float.onnx"}
    _export_float(model, files["float"])
    folded = work / "folded.onnx"
    fold_batchnorm_onnx(files["float"], folded)
    seconds = {}
    t = time.perf_counter()
    res = get_method("quantize", "int8").fn(
        model,
        # the defaults a user gets (speed check, mixed-by-latency when all-INT8 is not faster), reported not raised
        Int8Config(calib_size=args.calib, batch_size=8, threads=args.threads, require_speedup=False),
        Context(data=bundle(calib, val, labels), workdir=work / "compress"),
    )
    files["compress"] = res.onnx
    seconds["compress"] = time.perf_counter() - t
    t = time.perf_counter()
    files["nncf"] = work / "nncf.onnx"
    nncf_defaults(folded, files["nncf"], calib)
    seconds["nncf"] = time.perf_counter() - t
    t = time.perf_counter()
    files["ort"] = work / "ort.onnx"
    ort_static(folded, files["ort"], calib)
    seconds["ort"] = time.perf_counter() - t
    speed = time_interleaved(files, args.rounds, args.iters, args.threads)
    row = {"network": name, "float_ms": speed["float"]["ms"], "quantize_seconds": seconds}
    for k in ("compress", "nncf", "ort"):
        rep = runtime_report(files[k], input_shape=(1, 3, 224, 224), threads=args.threads, runs=3)
        row[k] = {
            **speed[k],
            "int8_ops": rep["summary"].removeprefix("int8 ops "),
            "integer_share": rep["integer_compute_ops"] / max(rep["compute_ops"], 1),
            "time_share_integer": rep["time_share_integer"],
            "float_compute_nodes": rep["float_compute_nodes"][:5],
            "top1_agreement": agreement(files[k], val, labels),
        }
    row["compress"]["qdq_placement"] = res.metrics.get("qdq_placement")
    row["compress"]["latency_float_layers"] = res.metrics.get("latency_float_layers")
    row["compress"]["own_speed_check"] = res.metrics.get("int8_summary")
    row["seconds"] = time.perf_counter() - t_start
    return row


def markdown(rows: list[dict], meta: dict) -> str:
    head = (
        "| network | float ms | compress speedup (95% CI) | int8 ops | agree | NNCF defaults speedup | int8 ops "
        "| agree | ORT quantize_static speedup | int8 ops | agree |\n|---|---|---|---|---|---|---|---|---|---|---|\n"
    )
    lines = []
    for r in rows:
        cells = [r["network"], f"{r['float_ms']:.1f}"]
        for k in ("compress", "nncf", "ort"):
            s = r[k]
            cells += [
                f"{s['speedup']:.2f}x ({s['ci'][0]:.2f}-{s['ci'][1]:.2f})",
                s["int8_ops"],
                f"{s['top1_agreement']:.1%}",
            ]
        lines.append("| " + " | ".join(cells) + " |")
    return (
        f"# INT8 on ONNX Runtime CPU ({meta['threads']} threads, 224 px, batch 1)\n\n"
        f"`{meta['command']}`\n\n{head}" + "\n".join(lines) + "\n\n"
        f"Speedup over float: median of {meta['rounds']} interleaved per-round ratios ({meta['iters']} calls per "
        "model per round), paired bootstrap 95% CI. int8 ops: Conv/MatMul/Gemm run as integer kernels in ORT's "
        f"optimised graph. agree: top-1 agreement with the float model on {meta['eval']} held-out photo crops "
        f"(calibration: {meta['calib']} other crops). Random-init networks with BatchNorm re-estimated on photos.\n"
    )


def main() -> None:
    from _common import write_result

    ap = argparse.ArgumentParser()
    ap.add_argument("--out", default="results/quantize_int8.json")
    ap.add_argument("--nets", default=",".join(NETS))
    ap.add_argument("--rounds", type=int, default=8)
    ap.add_argument("--iters", type=int, default=8)
    ap.add_argument("--calib", type=int, default=32)
    ap.add_argument("--eval", type=int, default=64)
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args()
    import onnxruntime as ort

    tmp = Path(tempfile.mkdtemp(prefix="q8bench-"))
    rows = []
    for name in args.nets.split(","):
        row = run_net(name, args, tmp)
        print(
            f"{name}: compress {row['compress']['speedup']:.2f}x {row['compress']['int8_ops']} | "
            f"nncf {row['nncf']['speedup']:.2f}x {row['nncf']['int8_ops']} | "
            f"ort {row['ort']['speedup']:.2f}x {row['ort']['int8_ops']} ({row['seconds']:.0f} s)",
            flush=True,
        )
        rows.append(row)
    meta = {
        "command": "python benchmarks/quantize_int8.py " + " ".join(sys.argv[1:]),
        "rounds": args.rounds,
        "iters": args.iters,
        "calib": args.calib,
        "eval": args.eval,
        "threads": args.threads,
        "onnxruntime": ort.__version__,
    }
    out = Path(args.out)
    write_result(out, {**meta, "rows": rows})
    out.with_suffix(".md").write_text(markdown(rows, meta))


if __name__ == "__main__":
    main()
