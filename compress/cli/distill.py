"""`compress distill`: train a student to match a teacher, into a run directory.

Runs as is under `torchrun --nproc-per-node N -m compress distill ...`: every process trains (DDP,
through the shared loop); only rank 0 creates and writes the run directory.
"""

from __future__ import annotations

import os
from pathlib import Path

import typer

from compress.cli import options as opt
from compress.cli.common import data_config, handle_errors

_STUDENT = "Student: torchvision:NAME, builtin:NAME, checkpoint or run dir."
_METHOD = "kd, funmatch, msd, pcd, guidance or feature_mse."
_LAYERS = "Layers for both nets: auto or comma-separated names."


@handle_errors
def distill(
    teacher: str = typer.Option(..., "--teacher", "-t", help="Teacher: run dir, checkpoint or model spec."),
    student: str = typer.Option(..., "--student", "-s", help=_STUDENT),
    method: str = typer.Option("funmatch", "--method", help=_METHOD),
    out: Path = opt.Out,
    data: str = opt.Data,
    layers: str | None = typer.Option(None, "--layers", help=_LAYERS),
    teacher_layers: str | None = typer.Option(None, "--teacher-layers", help="Teacher layers."),
    student_layers: str | None = typer.Option(None, "--student-layers", help="Student layers."),
    epochs: int | None = typer.Option(None, "--epochs", help="Training epochs."),
    lr: float | None = typer.Option(None, "--lr", help="Peak learning rate."),
    batch_size: int | None = typer.Option(None, "--batch-size", help="Batch size per process."),
    optimizer: str | None = typer.Option(None, "--optimizer", help="sgd, adam or adamw."),
    width: float | None = typer.Option(None, "--width", help="Width multiplier for a builtin student."),
    task: str | None = opt.Task,
    image_size: int | None = opt.ImageSize,
    channels: int | None = opt.Channels,
    limit: int | None = opt.Limit,
    seed: int | None = opt.Seed,
    config: Path | None = typer.Option(None, "--config", help="YAML file with the method's config fields."),
    force: bool = opt.Force,
    resume: bool = opt.Resume,
    trust_code: bool = opt.TrustCode,
) -> None:
    """Distill TEACHER into STUDENT with METHOD and save the student as DIR/model.pt with a manifest."""
    from compress.cli.common import console
    from compress.cli.runs import finish, load_yaml_params
    from compress.config import from_dict, to_dict
    from compress.data import load_data
    from compress.methods import get_method
    from compress.pipeline import load_input, run_technique, write_variant
    from compress.runs import RunDir

    spec = get_method("distill", method)
    params = load_yaml_params(config)
    train_params = dict(params.get("train") or {})
    for key, value in (
        ("epochs", epochs),
        ("lr", lr),
        ("batch_size", batch_size),
        ("optimizer", optimizer),
        ("seed", seed),
    ):
        if value is not None:
            train_params[key] = value
    if train_params:
        params["train"] = train_params
    fields = spec.config.__dataclass_fields__
    for side, value in (("teacher", teacher_layers or layers), ("student", student_layers or layers)):
        if value is None:
            continue
        key = f"{side}_layers" if f"{side}_layers" in fields else f"{side}_layer"
        if key not in fields:
            from compress.errors import RecipeError

            raise RecipeError(f"--layers: distill method '{method}' takes no layers")
        params[key] = value if key.endswith("_layer") or value == "auto" else value.split(",")
    where = str(config) if config else f"distill {method} options"
    method_config = from_dict(spec.config, params, where=where)

    data_cfg = data_config(data, task=task, image_size=image_size, channels=channels, limit=limit, seed=seed)
    bundle = load_data(data_cfg)
    kwargs = {"width": width} if width is not None else None
    student_model = load_input(student, bundle, kwargs=kwargs, trust_code=trust_code)
    teacher_model = load_input(teacher, bundle, trust_code=trust_code)

    rank, world = int(os.environ.get("RANK", "0")), int(os.environ.get("WORLD_SIZE", "1"))
    run = None
    if rank == 0:
        run = RunDir(out, "distill", force=force, resume=resume)
        run.add_input("student", student, student if Path(student).is_file() else None)
        run.add_input("teacher", teacher, teacher if Path(teacher).is_file() else None)
        run.set_config({"method": method, "params": to_dict(method_config), "data": to_dict(data_cfg)})
    workdir = out.with_name(out.name + ".partial") / "work"
    if world > 1:
        _wait_for_rank0(method_config)
    result = run_technique("distill", method_config, student_model, data=bundle, teacher=teacher_model, workdir=workdir)
    if run is None:
        return
    write_variant(run, result, data=bundle, export=False)
    from compress.tasks import get_task

    primary = get_task(bundle.task).primary
    finish(run, console(), summary={primary: result.metrics.get(primary)})


def _wait_for_rank0(method_config) -> None:
    """Join the process group early so no rank touches the run directory before rank 0 made it."""
    import torch
    import torch.distributed as dist

    if not dist.is_initialized():
        device = getattr(getattr(method_config, "train", None), "device", "auto")
        use_cuda = device == "cuda" or (device == "auto" and torch.cuda.is_available())
        dist.init_process_group("nccl" if use_cuda else "gloo")
    dist.barrier()
