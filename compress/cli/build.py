"""`compress build`: a deployment engine from an ONNX model (TensorRT through Polygraphy)."""

from __future__ import annotations

import json
from pathlib import Path

import typer

from compress.cli import options as opt
from compress.cli.common import handle_errors
from compress.errors import CompressError


@handle_errors
def build(
    model: str = typer.Argument(..., help="An .onnx file or a run directory with an onnx artifact."),
    backend: str = typer.Option("tensorrt", "--backend", help="Engine backend (tensorrt)."),
    out: Path | None = opt.OutOptional,
    shapes: str | None = typer.Option(
        None, "--shapes", help="Optimisation profile [NAME=]MIN:OPT:MAX, e.g. 1x3x224x224:8x3x224x224:32x3x224x224."
    ),
    precision: str = typer.Option(
        "auto", "--precision", help="auto (as the ONNX says: fp32, INT8 from its Q/DQ) or fp16 (graph converted)."
    ),
    workspace: str | None = typer.Option(None, "--workspace", help="Workspace memory pool limit, e.g. 4G."),
    timing_cache: Path | None = typer.Option(
        None, "--timing-cache", help="Tactic timing cache: loaded if it exists, saved after the build."
    ),
    sparse_weights: bool = typer.Option(False, "--sparse-weights", help="Let 2:4 sparse tactics compete."),
    opt_level: int | None = typer.Option(None, "--opt-level", help="Builder optimisation level 0-5 (default 3)."),
    cache_dir: Path | None = typer.Option(
        None, "--cache-dir", help="Engine cache (default $COMPRESS_ENGINE_CACHE or ~/.cache/compress/engines)."
    ),
    no_cache: bool = typer.Option(False, "--no-cache", help="Build even when a cached engine matches."),
    plan_only: bool = typer.Option(
        False, "--plan-only", help="Print the Polygraphy loaders and flags the build would use; build nothing."
    ),
    force: bool = opt.Force,
) -> None:
    """Build a strongly typed TensorRT engine (works with TensorRT 10 and 11) into a run directory:
    engine.plan, build.log, layers.json (per-layer precision and tactic) and the manifest. Engines are
    cached by GPU model + TensorRT version + ONNX hash + flags."""
    import tempfile

    from compress.backends.tensorrt import TensorRTBuildConfig, build_engine, plan_build
    from compress.cli.common import check_output_dir, console
    from compress.models.sources import resolve_model_path
    from compress.runs import RunDir

    if backend != "tensorrt":
        raise CompressError(f"unknown build backend '{backend}'; available: tensorrt")
    path = resolve_model_path(model, "onnx")
    if not path.is_file():
        raise CompressError(f"model file not found: {path}")
    cfg = TensorRTBuildConfig(
        precision=precision,
        shapes=shapes,
        workspace=workspace,
        timing_cache=str(timing_cache) if timing_cache else None,
        sparse_weights=sparse_weights,
        opt_level=opt_level,
        cache_dir=str(cache_dir) if cache_dir else None,
        use_cache=not no_cache,
    )
    if plan_only:
        with tempfile.TemporaryDirectory(prefix="compress-plan-") as tmp:
            typer.echo(json.dumps(plan_build(path, cfg, work_dir=tmp).describe(), indent=2))
        return
    if out is None:
        raise CompressError("--out is required (the run directory for the engine), or pass --plan-only")
    check_output_dir(out, (model,))
    cfg.validate()
    from compress.backends.tensorrt import require_polygraphy, require_tensorrt

    require_polygraphy()
    require_tensorrt()  # before a run directory is created
    run = RunDir(out, "build", force=force)
    run.add_input("model", model, path)
    run.set_config({"backend": backend, **cfg.flags(), "timing_cache": cfg.timing_cache})
    report = build_engine(path, cfg, work_dir=run.work)
    run.add_artifact("engine", "engine.plan")
    run.add_artifact("build_log", "build.log")
    run.add_artifact("layers", "layers.json")
    if (run.work / "model.fp16.onnx").is_file():
        run.add_artifact("onnx_fp16", "model.fp16.onnx")
    run.set_steps([{"technique": "build", "method": backend, "params": cfg.flags()}])
    run.update_metrics({"build": report})
    final = run.commit()
    layers = report["layers"]
    console().print(
        f"[green]built[/green] {final / 'engine.plan'} (TensorRT {report['tensorrt']}, {report['gpu']}"
        f"{', from the cache' if report['cache_hit'] else ''}); {layers['layers']} layers "
        + ", ".join(f"{k} {v}" for k, v in layers["by_precision"].items())
        + (f"; {layers['sparse_tactics']} sparse tactics" if sparse_weights else "")
    )
