"""Helpers shared by the subcommands that create run directories."""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

from compress.errors import RecipeError


def load_yaml_params(path: Path | None) -> dict[str, Any]:
    """A YAML mapping of config fields (for --config), validated later by from_dict."""
    if path is None:
        return {}
    from compress.yamlfile import read_yaml

    data = read_yaml(path, "config file") or {}
    if not isinstance(data, dict):
        raise RecipeError(f"{path}: expected a mapping of settings")
    return data


def set_given(params: dict[str, Any], **values: Any) -> dict[str, Any]:
    """Put the options the user gave (not None) into `params`, over what a --config file said."""
    params.update({k: v for k, v in values.items() if v is not None})
    return params


def finish(run, console, summary: dict[str, Any] | None = None) -> Path:
    """Drop the run's scratch folder, commit it and print where it went."""
    shutil.rmtree(run.work / "work", ignore_errors=True)
    path = run.commit()
    parts = [
        f"{k} {v:.4f}" if isinstance(v, float) else f"{k} {v}" for k, v in (summary or {}).items() if v is not None
    ]
    console.print(f"[green]done[/green] {path}" + (f"  ({', '.join(parts)})" if parts else ""))
    return path


def execute(
    technique: str,
    method: str,
    method_config: Any,
    *,
    model: str,
    out: Path,
    data_cfg: Any = None,
    teacher: str | None = None,
    force: bool = False,
    resume: bool = False,
    trust_code: bool = False,
    num_classes: int | None = None,
    input_shape: tuple[int, ...] | None = None,
    model_kwargs: dict[str, Any] | None = None,
    export: bool = True,
    summary_keys: tuple[str, ...] = (),
    model_role: str = "model",
    loading: Any = None,
) -> Path | None:
    """What `train`, `prune`, `quantize` and `distill` share: load inputs, run the technique into a run
    directory, save (and export) the result, commit, print a one-line summary.

    Under `torchrun` every process trains (DDP through the shared loop) but only rank 0 creates and
    writes the run directory; the others wait for it before they start, and return None.
    """
    import os

    from compress.cli.common import console
    from compress.config import to_dict
    from compress.pipeline import load_input, run_technique, write_variant
    from compress.runs import RunDir

    bundle = None
    if data_cfg is not None:
        from compress.data import load_data

        bundle = load_data(data_cfg)
    from compress.cli.options import ModelLoading

    loading = loading or ModelLoading()
    weights = loading.weights
    net = load_input(
        model, bundle, kwargs=model_kwargs, trust_code=trust_code, num_classes=num_classes, input_shape=input_shape,
        **loading.kwargs(),
    )  # fmt: skip
    teacher_model = load_input(teacher, bundle, trust_code=trust_code) if teacher else None
    if teacher_model is not None and not net.preprocessing:
        net.preprocessing = dict(teacher_model.preprocessing)  # the student learns on the teacher's inputs
    if bundle is not None:
        from compress.data import prepare_for_model

        bundle = prepare_for_model(bundle, net.preprocessing)
    from compress.cli.common import check_output_dir

    check_output_dir(out, (model, teacher))
    rank, world = int(os.environ.get("RANK", "0")), int(os.environ.get("WORLD_SIZE", "1"))
    run = None
    if rank == 0:
        run = RunDir(out, technique, force=force, resume=resume)
        run.add_input(model_role, model, model if Path(model).is_file() else None)
        if weights is not None:
            from compress.models.weights import resolve_weights

            run.add_input("weights", str(weights), resolve_weights(weights))
        if teacher:
            run.add_input("teacher", teacher, teacher if Path(teacher).is_file() else None)
        run.set_config(
            {
                "method": method,
                "params": to_dict(method_config),
                "data": to_dict(bundle.config) if bundle is not None else None,
                "preprocessing": net.preprocessing,
            }
        )
    if world > 1:
        _join_process_group(method_config)
    workdir = out.with_name(out.name + ".partial") / "work"
    # a failure from here on is handled by the CLI's one handler, which removes the staged run
    result = run_technique(technique, method_config, net, data=bundle, teacher=teacher_model, workdir=workdir)
    if run is None:
        return None
    write_variant(run, result, data=bundle, export=export)
    summary = {k: result.metrics.get(k) for k in summary_keys if k in result.metrics}
    return finish(run, console(), summary=summary)


def _join_process_group(method_config: Any) -> None:
    """Join the process group early, so no rank touches the run directory before rank 0 made it."""
    import torch.distributed as dist

    from compress.train.loop import resolve_device

    if not dist.is_initialized():
        train = method_config if hasattr(method_config, "device") else getattr(method_config, "train", None)
        device = resolve_device(getattr(train, "device", "auto"))
        dist.init_process_group("nccl" if device.type == "cuda" else "gloo")
    dist.barrier()
