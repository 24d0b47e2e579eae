"""`compress quantize`: INT8 (NNCF PTQ / QAT), codebook (JLCM, k-means) or bit-wise quantization into a run dir."""

from __future__ import annotations

from pathlib import Path

import typer

from compress.cli import options as opt
from compress.cli.common import data_config, handle_errors


@handle_errors
@opt.with_model_loading
def quantize(
    ctx: typer.Context,
    model: str = typer.Option(
        ..., "--model", "-m", help="Model spec: checkpoint, run dir, builtin:NAME, torchvision:NAME."
    ),
    out: Path = opt.Out,
    method: str = typer.Option("int8", "--method", help="int8, codebook, kmeans or bitwise."),
    data: str = opt.Data,
    calib_size: int | None = typer.Option(None, "--calib-size", help="Calibration samples (int8, codebook)."),
    epochs: int | None = opt.Epochs,
    lr: float | None = opt.Lr,
    batch_size: int | None = opt.BatchSize,
    task: str | None = opt.Task,
    image_size: int | None = opt.ImageSize,
    channels: int | None = opt.Channels,
    limit: int | None = opt.Limit,
    seed: int | None = opt.Seed,
    config: Path | None = opt.MethodConfig,
    force: bool = opt.Force,
    resume: bool = opt.Resume,
    trust_code: bool = opt.TrustCode,
    loading: opt.ModelLoading = None,
) -> None:
    """Quantize a model; writes DIR/model.onnx (Q/DQ or codebook graph), the checkpoint and the figures.

    Every field of the chosen method's config is an option (see the method options below, and
    `compress methods quantize`).
    """
    from compress.cli.fields import method_config
    from compress.cli.runs import execute

    method_config = method_config(
        ctx, "quantize", method, config,
        strict={"epochs": epochs, "lr": lr, "batch_size": batch_size},
        loose={"calib_size": calib_size, "seed": seed},
        defaults={"require_speedup": False},  # the CLI reports a slow INT8 model; recipes and the library fail on it
    )  # fmt: skip
    data_cfg = data_config(
        data, task=task, image_size=image_size, channels=channels, limit=limit, calib_size=calib_size, seed=seed
    )
    execute(
        "quantize",
        method,
        method_config,
        model=model,
        out=out,
        data_cfg=data_cfg,
        force=force,
        resume=resume,
        trust_code=trust_code,
        loading=loading,
        export=False,
        summary_keys=(
            "accuracy",
            "psnr",
            "bits_per_weight",
            "size_bytes",
            "accuracy_drop",
            "sparsity",
            "qdq_valid",
            "float_layers",
            "int8_summary",
        ),
    )
