"""`compress prune`: structurally prune a model (channel, continuous, search) into a run directory."""

from __future__ import annotations

from pathlib import Path

import typer

from compress.cli import options as opt
from compress.cli.common import data_config, handle_errors, parse_shape

_MODEL = "Model spec: torchvision:NAME, builtin:NAME, checkpoint or run dir."
_METHOD = (
    "channel (importance ranking), continuous (learned gates), search (pruning-space sampling), "
    "nm (N:M sparsity) or dynamic-nm (N:M level per input)."
)


@handle_errors
@opt.with_model_loading
def prune(
    ctx: typer.Context,
    model: str = typer.Option(..., "--model", "-m", help=_MODEL),
    method: str = typer.Option("channel", "--method", help=_METHOD),
    out: Path = opt.Out,
    data: str | None = opt.DataOptional,
    teacher: str | None = typer.Option(None, "--teacher", "-t", help="Teacher for distillation while fine-tuning."),
    epochs: int | None = opt.Epochs,
    lr: float | None = opt.Lr,
    batch_size: int | None = opt.BatchSize,
    optimizer: str | None = opt.Optimizer,
    input_shape: str | None = opt.InputShape,
    num_classes: int | None = opt.NumClasses,
    task: str | None = opt.Task,
    image_size: str | None = opt.ImageSize,
    channels: int | None = opt.Channels,
    limit: int | None = opt.Limit,
    seed: int | None = opt.Seed,
    config: Path | None = opt.MethodConfig,
    export: bool = typer.Option(True, "--export/--no-export", help="Also export the pruned model to ONNX."),
    force: bool = opt.Force,
    resume: bool = opt.Resume,
    trust_code: bool = opt.TrustCode,
    loading: opt.ModelLoading = None,
) -> None:
    """Prune MODEL with METHOD; saves DIR/model.pt (architecture + state_dict), DIR/model.onnx and the report.

    Every field of the chosen method's config is an option (see the method options below, and
    `compress methods prune`); --epochs, --lr, --batch-size and --optimizer set the method's
    (fine-)tuning schedule.
    """
    from compress.cli.fields import method_config
    from compress.cli.runs import execute

    method_config = method_config(
        ctx, "prune", method, config,
        strict={"epochs": epochs, "lr": lr, "batch_size": batch_size, "optimizer": optimizer}, loose={"seed": seed},
    )  # fmt: skip

    data_cfg = None
    if data is not None:
        data_cfg = data_config(data, task=task, image_size=image_size, channels=channels, limit=limit, seed=seed)
    execute(
        "prune",
        method,
        method_config,
        model=model,
        out=out,
        data_cfg=data_cfg,
        teacher=teacher,
        force=force,
        resume=resume,
        trust_code=trust_code,
        loading=loading,
        num_classes=num_classes,
        input_shape=parse_shape(input_shape),
        export=export,
        summary_keys=("macs_ratio", "params_ratio", "val_accuracy"),
    )
