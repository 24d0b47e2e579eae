"""Model sources behind one registry.

A model spec is one of:
  * `torchvision:NAME`  — a torchvision architecture (random weights, or `weights=` a file: nothing downloads);
  * `timm:NAME`         — a timm architecture (the `timm` extra), likewise;
  * `builtin:NAME`      — one of the small architectures in `compress.models.builtin`;
  * `PACKAGE:NAME`      — an architecture of the user's own package, registered through the
    `compress.models` entry-point group (`PACKAGE = "pkg.module:build"`, `build(name, **kwargs)`);
  * a path to a compress checkpoint (`.pt`), a run directory (its `torch` artifact),
    a `torch.export` program (`.pt2`), a TorchScript file (needs trust), or an ONNX file
    (only where an ONNX model will do: bench, check, ONNX-level steps).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from pathlib import Path
from typing import Any

from torch import nn

from compress.errors import MissingDependencyError, ModelError
from compress.models.model import Model
from compress.registry import Registry
from compress.text import short

# name -> builder(arch_name, kwargs) -> nn.Module
ARCHITECTURES: Registry[Callable[[str, dict[str, Any]], nn.Module]] = Registry("model source", ModelError)
# name -> describe(arch_name, module) -> the network's preprocessing (see compress.models.preprocess)
DESCRIBERS: Registry[Callable[[str, nn.Module], dict[str, Any]]] = Registry("model source", ModelError)

DEFAULT_INPUT = {"torchvision": (3, 224, 224), "timm": (3, 224, 224)}
ENTRY_POINT_GROUP = "compress.models"


@ARCHITECTURES.register("torchvision")
def _torchvision(name: str, kwargs: dict[str, Any]) -> nn.Module:
    import torchvision

    available = torchvision.models.list_models(module=torchvision.models)
    if name not in available:
        raise ModelError(f"unknown torchvision model '{name}'; available: {', '.join(available)}")
    try:
        return torchvision.models.get_model(name, weights=None, **kwargs)
    except (TypeError, ValueError, AssertionError) as e:
        raise ModelError(f"torchvision:{name} rejects {short(kwargs)}: {short(str(e), 160)}") from None


@DESCRIBERS.register("torchvision")
def _torchvision_preprocessing(name: str, module: nn.Module) -> dict[str, Any]:
    """From the metadata of the architecture's default weights (read, never downloaded)."""
    import torchvision

    try:
        weights = torchvision.models.get_model_weights(name).DEFAULT
    except (ValueError, KeyError, AttributeError):
        return {}
    t = weights.transforms()
    crop = int(t.crop_size[0])
    resize = int(t.resize_size[0]) if getattr(t, "resize_size", None) else crop
    return {
        "mean": [float(v) for v in t.mean],
        "std": [float(v) for v in t.std],
        "input_size": [3, crop, crop],
        "resize": "shorter",
        "crop_pct": round(crop / resize, 4),
        "interpolation": str(t.interpolation.value),
    }


@ARCHITECTURES.register("timm")
def _timm(name: str, kwargs: dict[str, Any]) -> nn.Module:
    try:
        import timm
    except ImportError:
        raise MissingDependencyError("timm:NAME needs timm; install the extra: pip install 'compress[timm]'") from None
    if not timm.is_model(name):
        import difflib

        close = difflib.get_close_matches(name, timm.list_models(), n=4)
        hint = f"; did you mean {', '.join(close)}?" if close else ""
        raise ModelError(f"unknown timm model '{name[:60]}'{hint}")
    try:
        return timm.create_model(name, pretrained=False, **kwargs)
    except (TypeError, ValueError, AssertionError, RuntimeError, KeyError) as e:
        raise ModelError(f"timm:{name} rejects {short(kwargs)}: {short(str(e), 160)}") from None


@DESCRIBERS.register("timm")
def _timm_preprocessing(name: str, module: nn.Module) -> dict[str, Any]:
    """From the model's `pretrained_cfg`, as timm's own `resolve_data_config` reads it."""
    cfg = getattr(module, "pretrained_cfg", None) or {}
    if not cfg.get("mean"):
        return {}
    size = list(cfg.get("input_size", (3, 224, 224)))
    return {
        "mean": [float(v) for v in cfg["mean"]],
        "std": [float(v) for v in cfg["std"]],
        "input_size": [int(v) for v in size],
        "resize": "shorter" if cfg.get("crop_mode", "center") == "center" else "squash",
        "crop_pct": float(cfg.get("crop_pct", 0.875)),
        "interpolation": str(cfg.get("interpolation", "bilinear")),
    }


@ARCHITECTURES.register("builtin")
def _builtin(name: str, kwargs: dict[str, Any]) -> nn.Module:
    from compress.models.builtin import BUILTIN

    try:
        return BUILTIN.get(name)(**kwargs)
    except (TypeError, ValueError, OverflowError) as e:
        raise ModelError(f"builtin:{name} rejects {short(kwargs)}: {short(str(e), 160)}") from None


def find_source(source: str) -> bool:
    """True if `source` is registered, registering it from the `compress.models` entry points if one
    of the installed packages declares it (that package's own code, never code from a model file)."""
    if source in ARCHITECTURES:
        return True
    from importlib.metadata import entry_points

    found = [ep for ep in entry_points(group=ENTRY_POINT_GROUP) if ep.name == source]
    if not found:
        return False
    entry = found[0]

    def build(name: str, kwargs: dict[str, Any]) -> nn.Module:
        try:
            builder = entry.load()
        except Exception as e:  # the user's package failed to import: say which one
            raise ModelError(f"entry point {source} = {entry.value} cannot be loaded ({short(str(e), 120)})") from None
        try:
            module = builder(name, **kwargs)
        except (TypeError, ValueError, KeyError) as e:
            raise ModelError(f"{source}:{name} rejects {short(kwargs)}: {short(str(e), 160)}") from None
        if not isinstance(module, nn.Module):
            raise ModelError(f"{source}:{name}: {entry.value} returned a {type(module).__name__}, not an nn.Module")
        return module

    ARCHITECTURES.register(source, build)
    return True


def build_architecture(arch: dict[str, Any]) -> nn.Module:
    """Build the base network an `arch` record names (random weights)."""
    source = arch.get("source")
    if not isinstance(source, str) or not find_source(source):
        raise ModelError(
            f"cannot rebuild a model from source '{source}'; only {', '.join(ARCHITECTURES)} "
            "architectures can be rebuilt and saved"
        )
    return ARCHITECTURES.get(source)(arch["name"], dict(arch.get("kwargs", {})))


def is_onnx_spec(spec: str) -> bool:
    path = Path(spec)
    if path.suffix == ".onnx":
        return True
    if path.is_dir():
        from compress.runs import read_manifest

        artifacts = read_manifest(path).get("artifacts", {})
        return "torch" not in artifacts and "onnx" in artifacts
    return False


def resolve_model_path(spec: str, role: str = "torch") -> Path:
    """A run directory's artifact of `role`, or the path itself."""
    path = Path(spec)
    if path.is_dir():
        from compress.runs import artifact_path

        return artifact_path(path, role)
    return path


def load_model(
    spec: str,
    *,
    num_classes: int | None = None,
    in_channels: int | None = None,
    input_shape: tuple[int, ...] | None = None,
    kwargs: dict[str, Any] | None = None,
    trust_code: bool = False,
    seed: int = 0,
    weights: str | Path | None = None,
    weights_map: str = "names",
    preprocessing: dict[str, Any] | None = None,
) -> Model:
    """Resolve a model spec to a `Model`.

    Args:
        spec: see the module docstring.
        num_classes, in_channels: passed to architectures that are built fresh.
        input_shape: one sample's shape (C, H, W) for fresh architectures; files carry their own.
        kwargs: extra constructor arguments for fresh architectures (e.g. `image_size` for ViT).
        trust_code: allow formats that run code from the file (pickled modules, TorchScript).
        seed: initial weights of fresh architectures.
        weights: a state_dict file (`.pth`/`.pt`, read with weights_only, or `.safetensors`) for an
            architecture spec; its classifier decides the number of classes unless `num_classes` is given.
        weights_map: "names" (keys must match) or "order" (same tensors in the same order, other names).
        preprocessing: overrides of the preprocessing the source knows (mean, std, input_size, ...).
    """
    if weights_map not in ("names", "order"):
        raise ModelError(f"--weights-map must be 'names' or 'order', got '{str(weights_map)[:20]}'")
    if weights_map != "names" and weights is None:
        raise ModelError("--weights-map goes with --weights")
    for key, value in (kwargs or {}).items():
        if isinstance(value, float) and not math.isfinite(value):
            raise ModelError(f"{spec[:80]}: model argument {key} must be a finite number, got {value}")
    source, sep, name = spec.partition(":")
    if sep and not Path(spec).exists() and find_source(source):
        kw = dict(kwargs or {})
        if num_classes is not None:
            kw.setdefault("num_classes", num_classes)
        if in_channels is None and input_shape is not None and source == "builtin":
            in_channels = input_shape[0]
        if in_channels is not None and source == "builtin":
            kw.setdefault("in_channels", in_channels)
        if source == "torchvision" and in_channels not in (None, 3):
            raise ModelError(f"{spec}: torchvision architectures take 3 input channels, the data has {in_channels}")
        state = None
        if weights is not None:
            from compress.models.weights import classes_in, read_state_dict

            state = read_state_dict(weights)
            if "num_classes" not in (kwargs or {}) and classes_in(state) is not None:
                kw["num_classes"] = classes_in(state)  # the file's head, not the data's class count
        arch = {"source": source, "name": name, "kwargs": kw}
        import torch

        with torch.random.fork_rng():
            torch.manual_seed(seed)  # a fresh architecture's initial weights depend on the seed only
            module = build_architecture(arch)
        if state is not None:
            from compress.models.weights import load_weights

            load_weights(module, state, where=str(weights), mapping=weights_map)
        from compress.models.preprocess import resolve_preprocessing

        # preprocessing belongs to trained weights: a fresh network has none unless the user gives it
        known = DESCRIBERS.get(source)(name, module) if state is not None and source in DESCRIBERS else {}
        prep = resolve_preprocessing(known, preprocessing)
        default = tuple(prep["input_size"]) if prep.get("input_size") else DEFAULT_INPUT.get(source)
        shape = input_shape or default or (kw.get("in_channels", 3), 32, 32)
        task = "denoising" if name in _DENSE_BUILTINS else "classification"
        return Model(module.eval(), arch, tuple(shape), task, preprocessing=prep)
    if weights is not None:
        raise ModelError(f"--weights goes with an architecture spec (torchvision:NAME, timm:NAME), not with {spec}")
    path = Path(spec)
    if not path.exists():
        if sep and not path.parent.exists() or (sep and "/" not in spec):
            raise ModelError(
                f"unknown model source '{source[:40]}' in '{spec[:80]}'; available: {', '.join(ARCHITECTURES)}, "
                f"a package's '{ENTRY_POINT_GROUP}' entry point, "
                "or a path to a checkpoint, run directory, .pt2, TorchScript or ONNX file"
            )
        raise ModelError(f"model not found: {spec}")
    path = resolve_model_path(spec, "torch")
    from compress.models.formats import diagnose

    kind = diagnose(path)
    if kind == "onnx":
        raise ModelError(f"{spec} is an ONNX model; this command needs a PyTorch model")
    if kind == "export":
        return _load_exported_program(path, trust_code)
    if kind == "torchscript":
        return _load_torchscript(path, trust_code)
    if kind == "safetensors":
        raise ModelError(
            f"{path}: a safetensors file holds weights but no architecture; pass it with --weights "
            "next to an architecture (e.g. --model timm:NAME --weights FILE)"
        )
    from compress.models.checkpoint import load_checkpoint

    return load_checkpoint(path, trust_code=trust_code)


_DENSE_BUILTINS = {"dncnn"}


def _load_torchscript(path: Path, trust_code: bool) -> Model:
    import torch

    if not trust_code:
        raise ModelError(
            f"{path}: TorchScript files carry code that runs when loaded; pass --trust-code only if you "
            "trust its origin"
        )
    try:
        module = torch.jit.load(str(path), map_location="cpu")
    except RuntimeError as e:
        raise ModelError(f"{path}: unreadable TorchScript file ({str(e).splitlines()[0]})") from None
    return Model(module.eval(), {"source": "torchscript", "name": str(path), "kwargs": {}}, ())


def _load_exported_program(path: Path, trust_code: bool) -> Model:
    from compress.models.pt2 import ExportedModule, load_exported_program, read_extra

    program = load_exported_program(path, trust_code=trust_code)
    user_inputs = list(program.graph_signature.user_inputs)
    if len(user_inputs) != 1:
        raise ModelError(
            f"{path}: the program takes {len(user_inputs)} inputs ({', '.join(user_inputs[:4])}); "
            "compress handles single-input networks"
        )
    shape: tuple[int, ...] = ()
    for node in program.graph.nodes:
        if node.op == "placeholder" and node.name in user_inputs and "val" in node.meta:
            shape = tuple(int(s) for s in node.meta["val"].shape[1:])
            break
    meta = read_extra(path, "compress.json")
    module = ExportedModule(program.module()).eval()
    arch = {"source": "torch.export", "name": path.name, "kwargs": {}}
    return Model(
        module,
        arch,
        tuple(meta.get("input_shape", shape)),
        str(meta.get("task", "classification")),
        list(meta.get("history", [])),
        dict(meta.get("preprocessing") or {}),
    )
