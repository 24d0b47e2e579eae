"""`compress bench`: latency and accuracy of a deployed model through a runtime backend."""

from __future__ import annotations

from pathlib import Path

import typer

from compress.cli import options as opt
from compress.cli.common import data_config, handle_errors
from compress.errors import CompressError


@handle_errors
def bench(
    model: str = typer.Argument(..., help="An .onnx file or a run directory with an onnx artifact."),
    data: str | None = opt.DataOptional,
    backend: str = typer.Option(
        "onnxruntime", "--backend", help="Runtime backend: onnxruntime, torch, torch-cuda, tensorrt."
    ),
    device: str = typer.Option("cpu", "--device", help="cpu or cuda."),
    compile_: bool = typer.Option(False, "--compile", help="torch-cuda: run through torch.compile."),
    cuda_graph: bool = typer.Option(False, "--cuda-graph", help="torch-cuda/tensorrt: time a CUDA graph's replay."),
    provider: str = typer.Option("", "--provider", help="onnxruntime on cuda: cuda or tensorrt (checked)."),
    precision: str = typer.Option("fp32", "--precision", help="torch-cuda: fp32 or fp16."),
    sparse: str = typer.Option(
        "off", "--sparse", help="torch-cuda: 2:4 sparse Linear layers: off, all, or auto (only where timed faster)."
    ),
    batch_size: int = typer.Option(1, "--batch-size", "-b", help="Batch size for the latency measurement."),
    threads: int = typer.Option(0, "--threads", help="Intra-op threads (0: physical cores)."),
    min_iters: int = typer.Option(50, "--min-iters", help="Measure at least this many runs..."),
    min_time: float = typer.Option(1.0, "--min-time", help="...and at least this many seconds."),
    warmup: float = typer.Option(0.2, "--warmup", help="Warm-up seconds (and at least 10 runs)."),
    task: str | None = opt.Task,
    image_size: str | None = opt.ImageSize,
    channels: int | None = opt.Channels,
    limit: int | None = opt.Limit,
    json_out: Path | None = typer.Option(None, "--json", help="Write every figure to this JSON file."),
    force: bool = typer.Option(False, "--force", help="Replace an existing --json file."),
    reference: str | None = typer.Option(
        None, "--reference", help="Also measure fidelity to this model (.onnx, run directory or PyTorch spec)."
    ),
    weights: Path | None = typer.Option(None, "--weights", help="Weights for a --reference architecture spec."),
    trust_code: bool = opt.TrustCode,
) -> None:
    """Measure latency (n, mean, std, CoV, percentiles, throughput) and, with --data, accuracy through
    the deployed model; with --reference, its fidelity to that model on the same inputs (top-1/top-5
    agreement and KL, or PSNR for dense tasks), the metric for data without labels (images:PATH).
    Given a run directory, the figures are also recorded in its manifest."""
    from compress.backends import artifact_role
    from compress.bench import BenchConfig
    from compress.bench import bench as run_bench
    from compress.cli.common import console
    from compress.data import load_data
    from compress.env import environment
    from compress.io import atomic_write_json, sha256_file
    from compress.models.sources import resolve_model_path
    from compress.report.render import latency_table

    role = artifact_role(backend)
    if backend in ("torch-cuda", "tensorrt"):
        device = "cuda"
    path = resolve_model_path(model, role)
    if not path.is_file():
        raise CompressError(f"model file not found: {path}")
    from compress.cli.common import check_output_file

    check_output_file(json_out, force=force, inputs=(path,))
    bundle = None
    if data is not None:
        bundle = load_data(data_config(data, task=task, image_size=image_size, channels=channels, limit=limit))
        from compress.data import prepare_for_model
        from compress.models.preprocess import preprocessing_of_file

        bundle = prepare_for_model(bundle, preprocessing_of_file(path))  # as the deployed file expects
    if weights is not None and reference is None:
        raise CompressError("--weights goes with --reference (the PyTorch model to compare against)")
    ref = None
    if reference is not None:
        from compress.bench.fidelity import load_reference

        if bundle is None:
            raise CompressError("--reference needs --data: both models run on its validation split")
        ref = load_reference(
            reference, bundle, backend=backend, device=device, threads=threads, weights=weights, trust_code=trust_code
        )
    from compress.config import from_dict

    cfg = from_dict(  # numbers checked as in every command: finite, in range
        BenchConfig,
        {
            "backend": backend,
            "device": device,
            "threads": threads,
            "batch_size": batch_size,
            "compile": compile_,
            "cuda_graph": cuda_graph,
            "provider": provider,
            "precision": precision,
            "sparse": sparse,
            "latency": {"min_iters": min_iters, "min_time_s": min_time, "warmup_s": warmup},
        },
        where="bench options",
    )
    if bundle is not None and not bundle.labelled and ref is None:
        typer.echo("note: the data has no labels, so no accuracy; --reference MODEL measures fidelity", err=True)
    result = run_bench(path, cfg, data=bundle, reference=ref)
    result.update(
        {
            "model": str(path),
            "sha256": sha256_file(path),
            "bytes": path.stat().st_size,
            "data": data,
            "environment": environment(),
        }
    )
    if role == "onnx":
        from compress.analysis import onnx_summary

        result["params"] = onnx_summary(path)["params"]
    console().print(latency_table(result, f"{path.name} · batch {batch_size}"))
    if Path(model).is_dir() and backend == "onnxruntime":
        record_in_run(Path(model), result)
    if json_out is not None:
        atomic_write_json(json_out, result)
        typer.echo(f"wrote {json_out}", err=True)


def record_in_run(run_dir: Path, result: dict) -> None:
    """Keep the measurement in the run's manifest so `compress report` shows it."""
    from compress.io import atomic_write_json
    from compress.runs import read_manifest

    manifest = read_manifest(run_dir)
    metrics = manifest.setdefault("metrics", {})
    metrics["latency"] = result["latency"]
    metrics["runtime"] = result["runtime"]
    metrics["size_bytes"] = result["bytes"]
    if result.get("data") and metrics.get("bench_data") not in (None, result["data"]):
        for k in [k for k in metrics if k.startswith("deployed_") or k == "fidelity"]:
            del metrics[k]  # figures from other data would sit beside these as if comparable
    for k, v in (result.get("metrics") or {}).items():
        metrics[f"deployed_{k}"] = v
    if result.get("fidelity"):
        metrics["fidelity"] = result["fidelity"]
    if result.get("data"):
        metrics["bench_data"] = result["data"]
    atomic_write_json(run_dir / "manifest.json", manifest)
    typer.echo(f"recorded in {run_dir / 'manifest.json'}", err=True)
