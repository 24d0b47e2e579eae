"""Model sources behind one registry.

A model spec is one of:
  * `torchvision:NAME`  — a torchvision architecture, randomly initialised (nothing is downloaded);
  * `builtin:NAME`      — one of the small architectures in `compress.models.builtin`;
  * a path to a compress checkpoint (`.pt`), a run directory (its `torch` artifact),
    a `torch.export` program (`.pt2`), a TorchScript file (needs trust), or an ONNX file
    (only where an ONNX model will do: bench, check, ONNX-level steps).
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from torch import nn

from compress.errors import ModelError
from compress.models.model import Model
from compress.registry import Registry

# name -> builder(arch_name, kwargs) -> nn.Module
ARCHITECTURES: Registry[Callable[[str, dict[str, Any]], nn.Module]] = Registry("model source", ModelError)

DEFAULT_INPUT = {"torchvision": (3, 224, 224)}


@ARCHITECTURES.register("torchvision")
def _torchvision(name: str, kwargs: dict[str, Any]) -> nn.Module:
    import torchvision

    available = torchvision.models.list_models(module=torchvision.models)
    if name not in available:
        raise ModelError(f"unknown torchvision model '{name}'; available: {', '.join(available)}")
    try:
        return torchvision.models.get_model(name, weights=None, **kwargs)
    except (TypeError, ValueError, AssertionError) as e:
        raise ModelError(f"torchvision:{name} rejects {kwargs}: {e}") from None


@ARCHITECTURES.register("builtin")
def _builtin(name: str, kwargs: dict[str, Any]) -> nn.Module:
    from compress.models.builtin import BUILTIN

    try:
        return BUILTIN.get(name)(**kwargs)
    except TypeError as e:
        raise ModelError(f"builtin:{name} rejects {kwargs}: {e}") from None


def build_architecture(arch: dict[str, Any]) -> nn.Module:
    """Build the base network an `arch` record names (random weights)."""
    source = arch.get("source")
    if source not in ARCHITECTURES:
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
) -> Model:
    """Resolve a model spec to a `Model`.

    Args:
        spec: see the module docstring.
        num_classes, in_channels: passed to architectures that are built fresh.
        input_shape: one sample's shape (C, H, W) for fresh architectures; files carry their own.
        kwargs: extra constructor arguments for fresh architectures (e.g. `image_size` for ViT).
        trust_code: allow formats that run code from the file (pickled modules, TorchScript).
        seed: initial weights of fresh architectures.
    """
    source, sep, name = spec.partition(":")
    if sep and source in ARCHITECTURES and not Path(spec).exists():
        kw = dict(kwargs or {})
        if num_classes is not None:
            kw.setdefault("num_classes", num_classes)
        if in_channels is None and input_shape is not None and source == "builtin":
            in_channels = input_shape[0]
        if in_channels is not None and source == "builtin":
            kw.setdefault("in_channels", in_channels)
        if source == "torchvision" and in_channels not in (None, 3):
            raise ModelError(f"{spec}: torchvision architectures take 3 input channels, the data has {in_channels}")
        arch = {"source": source, "name": name, "kwargs": kw}
        import torch

        with torch.random.fork_rng():
            torch.manual_seed(seed)  # a fresh architecture's initial weights depend on the seed only
            module = build_architecture(arch)
        shape = input_shape or DEFAULT_INPUT.get(source) or (kw.get("in_channels", 3), 32, 32)
        task = "denoising" if name in _DENSE_BUILTINS else "classification"
        return Model(module.eval(), arch, tuple(shape), task)
    path = Path(spec)
    if not path.exists():
        if sep and not path.parent.exists() or (sep and "/" not in spec):
            raise ModelError(
                f"unknown model source '{source}' in '{spec}'; available: {', '.join(ARCHITECTURES)}, "
                "or a path to a checkpoint, run directory, .pt2, TorchScript or ONNX file"
            )
        raise ModelError(f"model not found: {spec}")
    path = resolve_model_path(spec, "torch")
    if path.suffix == ".onnx":
        raise ModelError(f"{spec} is an ONNX model; this command needs a PyTorch model")
    if path.suffix == ".pt2":
        return _load_exported_program(path)
    if _is_torchscript(path):
        return _load_torchscript(path, trust_code)
    from compress.models.checkpoint import load_checkpoint

    return load_checkpoint(path, trust_code=trust_code)


_DENSE_BUILTINS = {"dncnn"}


def _is_torchscript(path: Path) -> bool:
    import zipfile

    if not zipfile.is_zipfile(path):
        return False
    with zipfile.ZipFile(path) as z:
        return any(n.endswith("/constants.pkl") or n.endswith("code/__torch__.py") for n in z.namelist()[:200])


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


def _load_exported_program(path: Path) -> Model:
    import logging

    import torch

    logger = logging.getLogger("torch")
    level = logger.level
    logger.setLevel(logging.CRITICAL)  # torch logs its own traceback for a bad archive
    try:
        program = torch.export.load(str(path))
    except Exception as e:  # torch.export.load raises many types for a bad file
        raise ModelError(f"{path}: unreadable torch.export file ({(str(e).splitlines() or [''])[0][:200]})") from None
    finally:
        logger.setLevel(level)
    shape: tuple[int, ...] = ()
    placeholders = [n for n in program.graph.nodes if n.op == "placeholder"]
    user_inputs = program.graph_signature.user_inputs
    for node in placeholders:
        if node.name in user_inputs and "val" in node.meta:
            shape = tuple(int(s) for s in node.meta["val"].shape[1:])
            break
    return Model(program.module(), {"source": "torch.export", "name": str(path), "kwargs": {}}, shape)
