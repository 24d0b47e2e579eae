"""`compress train`: train or fine-tune a model on a dataset into a run directory."""

from __future__ import annotations

from pathlib import Path

import typer

from compress.cli import options as opt
from compress.cli.common import data_config, handle_errors


@handle_errors
@opt.with_model_loading
def train(
    ctx: typer.Context,
    model: str = typer.Option(
        ..., "--model", "-m", help="Model spec: torchvision:NAME, builtin:NAME, checkpoint or run dir."
    ),
    out: Path = opt.Out,
    data: str = opt.Data,
    epochs: int | None = opt.Epochs,
    lr: float | None = opt.Lr,
    batch_size: int | None = opt.BatchSize,
    optimizer: str | None = opt.Optimizer,
    width: float | None = opt.Width,
    num_classes: int | None = opt.NumClasses,
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
    """Train a model (or fine-tune a checkpoint) and save it as DIR/model.pt with a manifest.

    Every field of the training loop's config is an option (see the method options below).
    """
    from compress.cli.fields import apply_fields, given_fields
    from compress.cli.runs import execute, load_yaml_params, set_given
    from compress.config import from_dict
    from compress.train.loop import TrainConfig

    params = load_yaml_params(config)
    apply_fields("train", "supervised", TrainConfig, params, given_fields(ctx))
    set_given(params, epochs=epochs, lr=lr, batch_size=batch_size, optimizer=optimizer, seed=seed)
    train_config = from_dict(TrainConfig, params, where=str(config) if config else "train options")
    data_cfg = data_config(data, task=task, image_size=image_size, channels=channels, limit=limit, seed=seed)
    execute(
        "train",
        "supervised",
        train_config,
        model=model,
        out=out,
        data_cfg=data_cfg,
        force=force,
        resume=resume,
        trust_code=trust_code,
        loading=loading,
        num_classes=num_classes,
        model_kwargs={"width": width} if width is not None else None,
        export=False,  # `compress export` makes the ONNX file (with its parity check) on demand
        summary_keys=("accuracy", "psnr"),
    )
