"""Typer option declarations reused across subcommands."""

from __future__ import annotations

import functools
import inspect
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import typer

Out = typer.Option(..., "--out", "-o", help="Run directory to create.")
OutOptional = typer.Option(None, "--out", "-o", help="Run directory to create.")
Force = typer.Option(False, "--force", help="Replace an existing output.")
Resume = typer.Option(False, "--resume", help="Continue an interrupted run at --out.")
Data = typer.Option("digits", "--data", "-d", help="Dataset: digits, imagefolder:PATH, cifar10:ROOT, synthetic:CxHxW.")
DataOptional = typer.Option(
    None, "--data", "-d", help="Dataset: digits, imagefolder:PATH, cifar10:ROOT, synthetic:CxHxW."
)
Task = typer.Option(None, "--task", help="classification or denoising (default: classification).")
ImageSize = typer.Option(
    None,
    "--image-size",
    parser=str,  # a side or HxW, parsed by compress.cli.common.data_config
    metavar="SIZE|HxW",
    help="Resize images to this square size, or to HxW (192x256) (default 32).",
)
Channels = typer.Option(None, "--channels", help="1 or 3 input channels (default 3).")
Limit = typer.Option(None, "--limit", help="At most this many samples per split.")
Seed = typer.Option(None, "--seed", help="Random seed.")
TrustCode = typer.Option(
    False, "--trust-code", help="Allow model files that run code when loaded (pickles, TorchScript)."
)
NumClasses = typer.Option(None, "--num-classes", help="Classes for a fresh architecture (default: from the data).")
InputShape = typer.Option(None, "--input-shape", help="C,H,W of one input, for fresh architectures without --data.")

Epochs = typer.Option(None, "--epochs", help="Training epochs.")
Lr = typer.Option(None, "--lr", help="Peak learning rate.")
BatchSize = typer.Option(None, "--batch-size", help="Batch size per process.")
Optimizer = typer.Option(None, "--optimizer", help="sgd, adam or adamw.")
Width = typer.Option(None, "--width", help="Width multiplier for builtin architectures.")
MethodConfig = typer.Option(None, "--config", help="YAML file with the method's config fields.")


@dataclass
class ModelLoading:
    """How a command's model spec is loaded: pretrained weights and preprocessing overrides."""

    weights: Path | None = None
    weights_map: str = "names"
    preprocessing: dict[str, Any] = field(default_factory=dict)

    def kwargs(self) -> dict[str, Any]:
        """The keyword arguments of `compress.pipeline.load_input` these options set."""
        return {"weights": self.weights, "weights_map": self.weights_map, "preprocessing": self.preprocessing}


_LOADING_OPTIONS = (
    (
        "weights",
        Path | None,
        typer.Option(
            None,
            "--weights",
            help="Pretrained weights for an architecture spec: a .pth/.pt/.safetensors state_dict, "
            "or dist:PACKAGE/PATH (a file that an installed package ships).",
        ),
    ),
    (
        "weights_map",
        str,
        typer.Option(
            "names", "--weights-map", help="names (keys must match) or order (same tensors in order, other names)."
        ),
    ),
    (
        "mean",
        str | None,
        typer.Option(None, "--mean", help="Input mean, e.g. 0.485,0.456,0.406 (default: the model's)."),
    ),
    ("std", str | None, typer.Option(None, "--std", help="Input std (default: the model's).")),
    ("crop_pct", float | None, typer.Option(None, "--crop-pct", help="Centre-crop fraction for --resize shorter.")),
    ("resize", str | None, typer.Option(None, "--resize", help="squash, or shorter (shorter side + centre crop).")),
)


def with_model_loading(fn: Callable[..., Any]) -> Callable[..., Any]:
    """Give a command the model-loading options (--weights, --weights-map, --mean, --std, --crop-pct,
    --resize) once, as one `loading: ModelLoading` argument, instead of six declarations per command."""
    sig = inspect.signature(fn)
    extra = [
        inspect.Parameter(name, inspect.Parameter.KEYWORD_ONLY, default=default, annotation=ann)
        for name, ann, default in _LOADING_OPTIONS
    ]
    params = [p for p in sig.parameters.values() if p.name != "loading"]
    params = [p.replace(kind=inspect.Parameter.KEYWORD_ONLY) for p in params] + extra

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        from compress.cli.common import preprocess_overrides

        given = {name: kwargs.pop(name, None) for name, _, _ in _LOADING_OPTIONS}
        loading = ModelLoading(
            weights=given["weights"],
            weights_map=given["weights_map"] or "names",
            preprocessing=preprocess_overrides(given["mean"], given["std"], given["crop_pct"], given["resize"]),
        )
        return fn(*args, loading=loading, **kwargs)

    wrapper.__signature__ = sig.replace(parameters=params)  # type: ignore[attr-defined]
    wrapper.__annotations__ = {**fn.__annotations__, **{name: ann for name, ann, _ in _LOADING_OPTIONS}}
    return wrapper
