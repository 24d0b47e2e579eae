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
    model: str = typer.Option(..., "--model", "-m", help=_MODEL),
    method: str = typer.Option("channel", "--method", help=_METHOD),
    out: Path = opt.Out,
    data: str | None = opt.DataOptional,
    ratio: float | None = typer.Option(None, "--ratio", help="channel: share of each group's channels to remove."),
    target_macs: float | None = typer.Option(None, "--target-macs", help="Keep this fraction of the dense MACs."),
    target_params: float | None = typer.Option(
        None, "--target-params", help="channel: keep this fraction of the parameters."
    ),
    importance: str | None = typer.Option(None, "--importance", help="l1, l2, bn_scale or taylor (needs --data)."),
    allocation: str | None = typer.Option(None, "--allocation", help="channel: uniform or global."),
    round_to: int | None = typer.Option(None, "--round-to", help="Round kept channel counts up to a multiple of this."),
    ignore: list[str] | None = typer.Option(
        None, "--ignore", help="Module-name glob pattern to leave whole (repeatable)."
    ),
    iterative_steps: int | None = typer.Option(None, "--iterative-steps", help="channel: prune -> fine-tune steps."),
    finetune_epochs: int | None = typer.Option(None, "--finetune-epochs", help="Fine-tuning epochs after pruning."),
    samples: int | None = typer.Option(None, "--samples", help="search: width configurations to try."),
    sample_epochs: int | None = typer.Option(None, "--sample-epochs", help="search: fine-tuning epochs per sample."),
    epochs: int | None = typer.Option(None, "--epochs", help="continuous: epochs of joint gate + weight training."),
    lr: float | None = typer.Option(None, "--lr", help="Peak learning rate of the (fine-)tuning."),
    batch_size: int | None = typer.Option(None, "--batch-size", help="Batch size per process."),
    distill: str | None = typer.Option(
        None, "--distill", help="Fine-tune by distillation from the unpruned model: kd, funmatch, msd, crd, ..."
    ),
    reconstruct: bool | None = typer.Option(
        None, "--reconstruct/--no-reconstruct", help="channel: re-fit layers to the unpruned outputs (needs --data)."
    ),
    teacher: str | None = typer.Option(None, "--teacher", "-t", help="Teacher for distillation while fine-tuning."),
    n: int | None = typer.Option(None, "--n", help="nm: keep N nonzeros in every group of M input-channel weights."),
    m: int | None = typer.Option(None, "--m", help="nm: the group size M (2:4 is what sparse tensor cores run)."),
    permute: bool | None = typer.Option(None, "--permute/--no-permute", help="nm: channel permutation search."),
    levels: str | None = typer.Option(None, "--levels", help="dynamic-nm: nested N:M levels, e.g. 1:4,2:4,4:4."),
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
    """Prune MODEL with METHOD; saves DIR/model.pt (architecture + state_dict), DIR/model.onnx and the report."""
    from compress.cli.runs import execute, load_yaml_params
    from compress.config import from_dict
    from compress.errors import RecipeError
    from compress.methods import get_method

    spec = get_method("prune", method)
    fields = spec.config.__dataclass_fields__
    params = load_yaml_params(config)
    for key, value, flag in (
        ("ratio", ratio, "--ratio"),
        ("target_macs", target_macs, "--target-macs"),
        ("target_params", target_params, "--target-params"),
        ("importance", importance, "--importance"),
        ("allocation", allocation, "--allocation"),
        ("round_to", round_to, "--round-to"),
        ("ignore", list(ignore) if ignore else None, "--ignore"),
        ("iterative_steps", iterative_steps, "--iterative-steps"),
        ("samples", samples, "--samples"),
        ("sample_epochs", sample_epochs, "--sample-epochs"),
        ("distill", distill, "--distill"),
        ("reconstruct", reconstruct, "--reconstruct"),
        ("n", n, "--n"),
        ("m", m, "--m"),
        ("permute", permute, "--permute"),
        ("levels", levels.split(",") if levels else None, "--levels"),
    ):
        if value is None:
            continue
        if key not in fields:
            raise RecipeError(f"{flag} does not apply to prune method '{method}'")
        if key == "distill" and fields[key].type in (bool, "bool"):
            if value != "kd":
                raise RecipeError(f"--distill: prune method '{method}' fine-tunes with kd only, not '{value}'")
            value = True
        params[key] = value
    if finetune_epochs is not None:
        if "finetune_epochs" in fields:
            params["finetune_epochs"] = finetune_epochs
        elif "final_epochs" in fields:
            params["final_epochs"] = finetune_epochs
        elif "finetune" not in fields:
            raise RecipeError(f"--finetune-epochs does not apply to prune method '{method}' (use --epochs)")
    train_key = "train" if method == "continuous" or "finetune" not in fields else "finetune"
    train_params = dict(params.get(train_key) or {})
    for key, value in (("lr", lr), ("batch_size", batch_size), ("seed", seed)):
        if value is not None:
            train_params[key] = value
    if epochs is not None:
        if train_key != "train":
            raise RecipeError(f"--epochs does not apply to prune method '{method}' (use --finetune-epochs)")
        train_params["epochs"] = epochs
    if train_params:
        params[train_key] = train_params
    method_config = from_dict(spec.config, params, where=str(config) if config else f"prune {method} options")

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
