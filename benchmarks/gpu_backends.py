"""A torchvision network dense vs channel-pruned vs INT8 fake-quant vs 2:4 sparse, through the GPU backends.

Every variant goes through compress's own backends and latency harness (the backend's timer): torch-cuda
eager, torch.compile and CUDA graphs, fp32 and fp16 (the 2:4 variant also with semi-structured Linear
layers), and TensorRT engines built by `compress.backends.tensorrt` where TensorRT is installed (INT8
from compress's `int8 --target tensorrt` Q/DQ graph, which needs NNCF; the 2:4 one with sparse weights).
Timed with CUDA events after warm-up;
GPU compute and the host's end-to-end latency both recorded, with the device's name, driver and
clocks. Ratios are within this one process, variant by variant on the same card.

    python benchmarks/gpu_backends.py --out results/gpu_backends.json
    python benchmarks/gpu_backends.py --smoke --out /tmp/smoke.json   # CPU: builds the variants only

Random weights (nothing is downloaded); latency does not depend on them.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
import traceback
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from _common import write_result  # noqa: E402


def variants(arch: str, shape: tuple[int, int, int], work: Path, *, onnx: bool = True) -> dict[str, dict]:
    """name -> {"pt": checkpoint, "onnx": file or None, "note": ...}; each variant built independently.
    ONNX files (for TensorRT) only with `onnx`."""

    from compress.export.onnx import ExportConfig, export_onnx
    from compress.models import load_model, save_model

    dense = load_model(arch, num_classes=1000, input_shape=shape)
    out: dict[str, dict] = {}

    def keep(name, model, note, onnx_cfg=None):
        try:
            pt = save_model(model, work / f"{name}.pt")
        except Exception:  # a traced fake-quant GraphModule has no checkpoint form: benchmarked in memory
            pt = None
        onnx_path = work / f"{name}.onnx"
        if not onnx:
            out[name] = {"pt": pt, "model": model if pt is None else None, "onnx": None, "note": note}
            return
        try:
            export_onnx(model, onnx_path, onnx_cfg or ExportConfig())
        except Exception as e:  # the torch figures stand without an ONNX file
            onnx_path, note = None, f"{note}; ONNX export failed: {type(e).__name__}: {str(e)[:200]}"
        out[name] = {"pt": pt, "model": model if pt is None else None, "onnx": onnx_path, "note": note}

    keep("dense", dense, "random weights")
    try:
        from compress.api import prune
        from compress.prune.channel import ChannelConfig

        pruned = prune(dense.copy(), ChannelConfig(ratio=0.5, verify=False)).model
        keep("pruned", pruned, "channel pruning, 50% of coupled channels (l2)")
    except Exception as e:
        out["pruned"] = {"error": f"{type(e).__name__}: {str(e)[:300]}"}
    try:
        from compress.api import prune
        from compress.prune.nm import NMConfig

        sparse = prune(dense.copy(), NMConfig(n=2, m=4)).model
        keep("sparse_2of4", sparse, "2:4 on every eligible Conv/Linear (input-channel groups)")
    except Exception as e:
        out["sparse_2of4"] = {"error": f"{type(e).__name__}: {str(e)[:300]}"}
    try:
        fq = fake_quant(dense.copy(), shape)
        keep(
            "int8_fake_quant",
            fq,
            "torch.ao QAT fake-quant modules (what simulated INT8 costs on the GPU; not a TensorRT INT8 graph)",
            ExportConfig(exporter="torchscript", opset=17),  # fake-quant modules fail under dynamo
        )
    except Exception as e:
        out["int8_fake_quant"] = {"error": f"{type(e).__name__}: {str(e)[:300]}"}
    if onnx:  # for TensorRT: compress's own INT8 with TensorRT's Q/DQ rules (needs NNCF)
        try:
            from compress.api import quantize
            from compress.data import DataConfig, load_data
            from compress.quantize.int8 import Int8Config

            c, h, w = shape
            data = load_data(DataConfig(name=f"synthetic:{c}x{h}x{w}", limit=64, calib_size=32))
            res = quantize(
                dense.copy(), Int8Config(target="tensorrt", calib_size=32, speed_check=False), data=data, workdir=work
            )
            if res.onnx is None or not Path(res.onnx).is_file():
                raise RuntimeError("the int8 method wrote no ONNX file")
            q = Path(res.onnx)
            out["int8_qdq"] = {"pt": None, "model": None, "onnx": q, "note": "compress int8 --target tensorrt (NNCF)"}
        except Exception as e:
            out["int8_qdq"] = {"error": f"{type(e).__name__}: {str(e)[:300]}"}
        if out.get("int8_fake_quant", {}).get("onnx"):
            out["int8_fake_quant"]["onnx"] = None  # torch's fake-quant export is not TensorRT's Q/DQ (uint8 weights)
    return out


def fake_quant(model, shape):
    """torch's own fake quantization (prepare_qat_fx), calibrated on random batches, observers then frozen."""
    import torch
    from torch.ao.quantization import FakeQuantize, MovingAverageMinMaxObserver, QConfig, QConfigMapping
    from torch.ao.quantization import default_per_channel_weight_fake_quant as weight_fq
    from torch.ao.quantization.quantize_fx import prepare_qat_fx

    act = FakeQuantize.with_args(
        observer=MovingAverageMinMaxObserver,
        quant_min=-128,
        quant_max=127,
        dtype=torch.qint8,
        qscheme=torch.per_tensor_symmetric,
    )
    module = model.module.train()
    example = torch.rand(2, *shape)
    prepared = prepare_qat_fx(
        module, QConfigMapping().set_global(QConfig(activation=act, weight=weight_fq)), (example,)
    )
    with torch.no_grad():
        for _ in range(4):
            prepared(torch.rand(8, *shape))
    prepared.apply(torch.ao.quantization.disable_observer)
    model.module = prepared.eval()
    return model


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", default="results/gpu_backends.json")
    ap.add_argument("--arch", default="torchvision:resnet50")
    ap.add_argument("--size", type=int, default=224)
    ap.add_argument("--batches", default="1,32")
    ap.add_argument("--min-time", type=float, default=0.5)
    ap.add_argument("--smoke", action="store_true", help="CPU: build the variants at 32 px, time nothing")
    args = ap.parse_args()

    import torch

    from compress.backends.cuda import device_info
    from compress.backends.tensorrt import have_tensorrt
    from compress.bench import LatencyConfig

    shape = (3, 32, 32) if args.smoke else (3, args.size, args.size)
    if not args.smoke and not torch.cuda.is_available():
        sys.exit("needs a CUDA device (or --smoke)")
    batches = [int(b) for b in args.batches.split(",")]
    lat = LatencyConfig(warmup_iters=10, warmup_s=0.2, min_iters=30, min_time_s=args.min_time)
    rows, t0 = [], time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="compress-gpu-") as tmp:
        work = Path(tmp)
        built = variants(args.arch, shape, work, onnx=args.smoke or have_tensorrt())
        print({k: v.get("note", v.get("error")) for k, v in built.items()}, flush=True)
        plan = torch_plan(built, batches)  # every row's BackendOptions, built here on any machine
        if args.smoke:
            write_result(
                args.out,
                {
                    "benchmark": "gpu_backends",
                    "smoke": True,
                    "variants": _plain(built),
                    "torch_cuda_plan": [
                        {**{k: v for k, v in r.items() if k != "options"}, "options": vars(r["options"])} for r in plan
                    ],
                },
            )
            return
        for r in plan:
            rows.append(_bench_torch(lat, built[r["variant"]], r["variant"], r["batch"], r["mode"], r["options"]))

        def save(trt_rows):
            write_result(
                args.out,
                {
                    "benchmark": "gpu_backends",
                    "arch": args.arch,
                    "input": list(shape),
                    "device": device_info(),
                    "variants": _plain(built),
                    "torch_cuda": rows,
                    "tensorrt": trt_rows,
                    "seconds": round(time.perf_counter() - t0, 1),
                },
            )

        if have_tensorrt():
            save([{"pending": "the TensorRT engines were still building when this was written"}])  # kept if killed
            save(_tensorrt(built, batches, shape, work, lat))
        else:
            save([{"skipped": "TensorRT is not installed on this machine"}])
    failed = [r for r in rows if "error" in r]
    if failed or not rows:  # a figure that could not be taken fails the run (gpu_check.sh reports the rc)
        sys.exit(f"{len(failed)} of {len(rows)} torch-cuda rows failed; their errors are in {args.out}")


MODES = (
    ("eager fp32", {}, "fp32"),
    ("cuda graph fp32", {"cuda_graph": True}, "fp32"),
    ("compile fp32", {"compile": True}, "fp32"),
    ("cuda graph fp16", {"cuda_graph": True}, "fp16"),
)


def torch_plan(built: dict[str, dict], batches: list[int]) -> list[dict]:
    """The torch-cuda rows to time: variant, batch, mode and the backend options of each."""
    from compress.backends.base import BackendOptions

    plan = []
    for name, v in built.items():
        if "error" in v or (v.get("pt") is None and v.get("model") is None):
            continue
        for batch in batches:
            for label, opts, precision in MODES:
                if name == "int8_fake_quant" and precision == "fp16":
                    continue  # fake-quant ops run in fp32
                if opts.get("compile") and (name != "dense" or batch != max(batches)):
                    continue  # each compile takes tens of seconds: dense at the largest batch only
                sparse = ("off", "all") if name == "sparse_2of4" and precision == "fp16" else ("off",)
                for mode in sparse:  # the 2:4 variant also with semi-structured sparse Linear layers
                    plan.append(
                        {
                            "variant": name,
                            "batch": batch,
                            "mode": label + (" + 2:4 Linear" if mode == "all" else ""),
                            "options": BackendOptions(device="cuda", precision=precision, sparse=mode, **opts),
                        }
                    )
    return plan


def _bench_torch(lat, v, name, batch, label, options):
    """One torch-cuda figure through compress's backend and harness."""
    from compress.backends import get_backend
    from compress.backends.torch_cuda import TorchCudaSession
    from compress.bench.latency import measure, summarize

    row = {"variant": name, "batch": batch, "mode": label, "precision": options.precision}
    try:
        import numpy as np

        if v["pt"] is not None:
            sess = get_backend("torch-cuda").load(v["pt"], options)
        else:
            sess = TorchCudaSession(None, options, model=v["model"].copy())
        x = np.random.default_rng(0).random([batch, *sess.input_shape[1:]], dtype=np.float32)
        timer = sess.timer()
        times = measure(sess.runner(x), lat, timer=timer)
        row.update(
            gpu=summarize(times, batch),
            host=summarize(timer.series()["host"], batch),
            semi_structured_layers=len(sess.sparse_layers),
        )
    except Exception as e:
        row["error"] = f"{type(e).__name__}: {str(e)[:300]}"
        traceback.print_exc()
    print(row.get("mode"), name, batch, row.get("gpu", {}).get("p50_ms"), row.get("error", ""), flush=True)
    return row


def _tensorrt(built, batches, shape, work, lat):
    import numpy as np

    from compress.backends import get_backend
    from compress.backends.base import BackendOptions
    from compress.backends.tensorrt import TensorRTBuildConfig, build_engine
    from compress.bench.latency import measure, summarize

    c, h, w = shape
    hi = max(batches)
    rows = []
    for name, v in built.items():
        if not v.get("onnx"):
            continue
        for precision in ("auto", "fp16"):
            row = {"variant": name, "precision": precision}
            try:
                cfg = TensorRTBuildConfig(
                    precision=precision,
                    shapes=f"1x{c}x{h}x{w}:{hi}x{c}x{h}x{w}:{hi}x{c}x{h}x{w}",
                    sparse_weights=name == "sparse_2of4",
                    timing_cache=str(work / "timing.cache"),
                )
                d = work / f"trt-{name}-{precision}"
                d.mkdir()
                t0 = time.perf_counter()
                report = build_engine(v["onnx"], cfg, work_dir=d)
                row.update(build_s=round(time.perf_counter() - t0, 1), layers=report["layers"])
                sess = get_backend("tensorrt").load(d / "engine.plan", BackendOptions(device="cuda", cuda_graph=True))
                for batch in batches:
                    x = np.random.default_rng(0).random((batch, c, h, w), dtype=np.float32)
                    timer = sess.timer()
                    times = measure(sess.runner(x), lat, timer=timer)
                    row[f"batch{batch}"] = {
                        "gpu": summarize(times, batch),
                        "host": summarize(timer.series()["host"], batch),
                    }
            except Exception as e:
                row["error"] = f"{type(e).__name__}: {str(e)[:300]}"
            print("tensorrt", row, flush=True)
            rows.append(row)
    return rows


def _plain(built):
    return {k: {kk: str(vv) for kk, vv in v.items() if kk != "model"} for k, v in built.items()}


if __name__ == "__main__":
    main()
