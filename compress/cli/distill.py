"""`compress distill`: train a student to match a teacher, into a run directory.

Runs as is under `torchrun --nproc-per-node N -m compress distill ...`: every process trains (DDP,
through the shared loop); only rank 0 creates and writes the run directory.
"""

from __future__ import annotations

from pathlib import Path

import typer

from compress.cli import options as opt
from compress.cli.common import data_config, handle_errors

_STUDENT = "Student: torchvision:NAME, builtin:NAME, checkpoint or run dir."
_METHOD = "kd, funmatch, msd, crd, pcd, guidance or feature_mse."
_LAYERS = "Layers for both nets: auto or comma-separated names."


@handle_errors
@opt.with_model_loading
def distill(
    ctx: typer.Context,
    teacher: str = typer.Option(..., "--teacher", "-t", help="Teacher: run dir, checkpoint or model spec."),
    student: str = typer.Option(..., "--student", "-s", help=_STUDENT),
    method: str = typer.Option("funmatch", "--method", help=_METHOD),
    out: Path = opt.Out,
    data: str = opt.Data,
    layers: str | None = typer.Option(None, "--layers", help=_LAYERS),
    teacher_layers: str | None = typer.Option(None, "--teacher-layers", help="Teacher layers."),
    student_layers: str | None = typer.Option(None, "--student-layers", help="Student layers."),
    epochs: int | None = opt.Epochs,
    lr: float | None = opt.Lr,
    batch_size: int | None = opt.BatchSize,
    optimizer: str | None = opt.Optimizer,
    width: float | None = opt.Width,
    task: str | None = opt.Task,
    image_size: str | None = opt.ImageSize,
    channels: int | None = opt.Channels,
    limit: int | None = opt.Limit,
    seed: int | None = opt.Seed,
    config: Path | None = opt.MethodConfig,
    force: bool = opt.Force,
    resume: bool = opt.Resume,
    trust_code: bool = opt.TrustCode,
    loading: opt.ModelLoading = None,
) -> None:
    """Distill TEACHER into STUDENT with METHOD and save the student as DIR/model.pt with a manifest.

    Every field of the chosen method's config is an option (see the method options below, and
    `compress methods distill`); --epochs, --lr, --batch-size, --optimizer and --seed set its training.
    """
    from compress.cli.fields import method_config
    from compress.cli.runs import execute
    from compress.errors import RecipeError
    from compress.methods import get_method

    fields = get_method("distill", method).config.__dataclass_fields__
    layer_params = {}
    for side, value in (("teacher", teacher_layers or layers), ("student", student_layers or layers)):
        if value is None:
            continue
        key = f"{side}_layers" if f"{side}_layers" in fields else f"{side}_layer"
        if key not in fields:
            raise RecipeError(f"--layers: distill method '{method}' takes no layers")
        layer_params[key] = value if key.endswith("_layer") or value == "auto" else value.split(",")
    method_config = method_config(
        ctx, "distill", method, config,
        strict={"epochs": epochs, "lr": lr, "batch_size": batch_size, "optimizer": optimizer}, loose={"seed": seed},
        extra=layer_params,
    )  # fmt: skip

    data_cfg = data_config(data, task=task, image_size=image_size, channels=channels, limit=limit, seed=seed)
    execute(
        "distill",
        method,
        method_config,
        model=student,
        model_role="student",
        out=out,
        data_cfg=data_cfg,
        teacher=teacher,
        force=force,
        resume=resume,
        trust_code=trust_code,
        loading=loading,
        model_kwargs={"width": width} if width is not None else None,
        export=False,
        summary_keys=("accuracy", "psnr"),
    )
