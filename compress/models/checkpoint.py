"""The project's checkpoint format: base architecture + layer changes + state_dict.

A file holds plain data only, so it loads with `torch.load(weights_only=True)` and never runs code:

    {"format": "compress.checkpoint", "version": 1,
     "arch": {"source": "torchvision", "name": "resnet18", "kwargs": {"num_classes": 10}},
     "surgery": [{"path": "layer1.0.conv1", "layer": "nn.Conv2d", "config": {...}},
                 {"path": "fc", "attr": "in_features", "value": 32},
                 {"path": "layer4", "delete": true}],
     "input_shape": [3, 32, 32], "task": "classification", "history": [...],
     "state_dict": {...}}

`surgery` is not tracked by the techniques: `save_model` finds it by rebuilding the base architecture
and comparing it, module by module, with the network being saved. So a pruned or quantized model
reloads without the code path that produced it, as long as its layers are registered
(`compress.layers`, a leaf package: loading imports no technique). A layer record names the layer
by its registry key ("nn.Conv2d", "compress.CodebookConv2d"), which does not change when a class moves.
"""

from __future__ import annotations

import io
import pickle
from pathlib import Path
from typing import Any

import torch
from torch import nn

from compress.errors import ModelError
from compress.io import atomic_write_bytes
from compress.layers import build_layer, describe_layer
from compress.models.model import Model

FORMAT = "compress.checkpoint"
VERSION = 1
_PRIMITIVE = (int, float, bool, str, type(None))


def save_model(model: Model, path: str | Path) -> Path:
    """Write `model` to `path` atomically; returns the path.

    A network no registry can rebuild (from a `.pt2` or a trusted pickle) is written as a
    `torch.export` archive with the same metadata instead; `load_model` reads either.
    """
    from compress.models.sources import ARCHITECTURES, build_architecture

    if model.arch.get("source") not in ARCHITECTURES:
        from compress.models.pt2 import save_exported_program

        return save_exported_program(model, Path(path))
    base = build_architecture(model.arch)
    surgery = diff_architecture(base, model.module)
    payload = {
        "format": FORMAT,
        "version": VERSION,
        "arch": model.arch,
        "surgery": surgery,
        "input_shape": list(model.input_shape),
        "task": model.task,
        "history": model.history,
        "preprocessing": model.preprocessing,
        "state_dict": {k: v.detach().cpu().clone() for k, v in model.module.state_dict().items()},
    }
    buf = io.BytesIO()
    torch.save(payload, buf)
    return atomic_write_bytes(Path(path), buf.getvalue())


def load_checkpoint(path: str | Path, *, trust_code: bool = False) -> Model:
    """Load a checkpoint written by `save_model`.

    Args:
        path: the file.
        trust_code: also accept a pickled `nn.Module` (runs code from the file).
    """
    path = Path(path)
    if not path.is_file():
        raise ModelError(f"checkpoint not found: {path}")
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as e:
        if "weights_only" not in str(e) and "Weights only" not in str(e):
            raise ModelError(f"{path}: not a readable checkpoint ({_first_line(e)})") from None
        if not trust_code:
            raise ModelError(
                f"{path}: holds pickled Python objects, not a compress checkpoint; loading it would run "
                "code from the file. Pass --trust-code only if you trust its origin"
            ) from None
        return _load_pickled_module(path)
    except Exception as e:  # the legacy unpickler raises KeyError, IndexError... on arbitrary bytes
        raise ModelError(f"{path}: corrupted or not a PyTorch file ({_first_line(e)})") from None
    if not isinstance(payload, dict) or payload.get("format") != FORMAT:
        raise ModelError(
            f"{path}: a PyTorch file but not a compress checkpoint (a bare state_dict has no architecture; "
            "save models with compress)"
        )
    if payload.get("version") != VERSION:
        raise ModelError(f"{path}: checkpoint version {payload.get('version')} is not supported")
    return model_from_payload(payload, where=str(path))


def model_from_payload(payload: dict[str, Any], *, where: str) -> Model:
    from compress.models.sources import build_architecture

    try:
        module = build_architecture(payload["arch"])
        apply_surgery(module, payload["surgery"])
        _fit_tensor_shapes(module, payload["state_dict"])
        missing, unexpected = module.load_state_dict(payload["state_dict"], strict=False)
    except KeyError as e:
        raise ModelError(f"{where}: checkpoint lacks field {e}") from None
    except (TypeError, ValueError, AttributeError) as e:
        raise ModelError(f"{where}: unreadable checkpoint contents ({_first_line(e)})") from None
    except RuntimeError as e:
        raise ModelError(f"{where}: weights do not fit the architecture ({_first_line(e)})") from None
    if missing or unexpected:
        raise ModelError(
            f"{where}: weights do not fit the architecture (missing {missing[:3]}, unexpected {unexpected[:3]})"
        )
    module.eval()
    _check_forward(module, payload.get("input_shape"), where)
    return Model(
        module,
        payload["arch"],
        tuple(payload["input_shape"]),
        payload.get("task", "classification"),
        list(payload.get("history", [])),
        dict(payload.get("preprocessing") or {}),
    )


def _check_forward(module: nn.Module, input_shape: Any, where: str) -> None:
    """One forward pass on a zero input: weights of the wrong shape fail here, not inside a later command."""
    if not isinstance(input_shape, (list, tuple)) or not all(isinstance(v, int) and v > 0 for v in input_shape):
        raise ModelError(f"{where}: the checkpoint's input_shape is not a list of positive sizes")
    try:
        with torch.no_grad():
            module(torch.zeros(1, *input_shape))
    except (RuntimeError, ValueError, IndexError, TypeError) as e:
        raise ModelError(
            f"{where}: weights do not fit the architecture; a forward pass fails ({_first_line(e)})"
        ) from None


def _fit_tensor_shapes(module: nn.Module, state_dict: dict[str, Any]) -> None:
    """Resize parameters and buffers that pruning shrank inside unregistered modules (e.g. ConvNeXt's
    layer_scale); their values come from the state_dict right after."""
    for name, tensor in [*module.named_parameters(), *module.named_buffers()]:
        saved = state_dict.get(name)
        if not isinstance(saved, torch.Tensor) or saved.shape == tensor.shape:
            continue
        owner_path, _, attr = name.rpartition(".")
        owner = _get(module, owner_path)
        if owner is None:
            continue
        fresh = torch.empty(saved.shape, dtype=saved.dtype)
        if attr in owner._parameters:
            owner._parameters[attr] = nn.Parameter(fresh, requires_grad=tensor.requires_grad)
        elif attr in owner._buffers:
            owner._buffers[attr] = fresh


def _load_pickled_module(path: Path) -> Model:
    obj = torch.load(path, map_location="cpu", weights_only=False)
    if not isinstance(obj, nn.Module):
        raise ModelError(f"{path}: the pickle holds a {type(obj).__name__}, not an nn.Module")
    return Model(obj.eval(), {"source": "pickle", "name": str(path), "kwargs": {}}, ())


def diff_architecture(base: nn.Module, current: nn.Module) -> list[dict[str, Any]]:
    """The layer changes that turn `base` into `current` (and applies them to `base`)."""
    records: list[dict[str, Any]] = []
    if type(base) is not type(current):
        raise ModelError(
            f"cannot save: the root module changed type ({type(base).__name__} -> {type(current).__name__})"
        )
    current_paths = set()
    for path, mod in current.named_modules():
        current_paths.add(path)
        target = _get(base, path)
        desc = describe_layer(mod)
        changed = target is None or type(target) is not type(mod)
        if not changed and desc is not None:
            changed = describe_layer(target) != desc
        if changed:
            if desc is None or path == "":
                raise ModelError(
                    f"cannot save: module '{path}' ({type(mod).__name__}) differs from the base architecture "
                    "and is not a registered layer (see compress.layers.register_layer)"
                )
            target = build_layer(*desc)
            _set(base, path, target)
            records.append({"path": path, "layer": desc[0], "config": desc[1]})
        for key, value in _primitive_attrs(mod).items():
            if _primitive_attrs(target).get(key, object()) != value:
                setattr(target, key, value)
                records.append({"path": path, "attr": key, "value": value})
    for path, _ in list(base.named_modules()):
        if path and path not in current_paths and _get(base, path) is not None:
            _delete(base, path)
            records.append({"path": path, "delete": True})
    return records


def apply_surgery(module: nn.Module, records: list[dict[str, Any]]) -> None:
    for rec in records:
        path = rec["path"]
        if rec.get("delete"):
            _delete(module, path)
        elif "layer" in rec:
            _set(module, path, build_layer(rec["layer"], rec["config"]))
        elif "attr" in rec:
            target = _get(module, path)
            if target is None:
                raise ModelError(f"checkpoint names a missing module '{path}'")
            setattr(target, rec["attr"], rec["value"])
        else:
            raise ModelError(f"unreadable surgery record {rec}")


def _primitive_attrs(mod: nn.Module) -> dict[str, Any]:
    out = {}
    for k, v in vars(mod).items():
        if k.startswith("_") or k == "training":
            continue
        if isinstance(v, _PRIMITIVE) or (isinstance(v, (tuple, list)) and all(isinstance(x, _PRIMITIVE) for x in v)):
            out[k] = list(v) if isinstance(v, tuple) else v
    return out


def _get(root: nn.Module, path: str) -> nn.Module | None:
    if path == "":
        return root
    mod = root
    for part in path.split("."):
        mod = mod._modules.get(part) if isinstance(mod, nn.Module) else None
        if mod is None:
            return None
    return mod


def _set(root: nn.Module, path: str, new: nn.Module) -> None:
    parent_path, _, name = path.rpartition(".")
    parent = _get(root, parent_path)
    if parent is None:
        raise ModelError(f"cannot place a layer at '{path}': its parent does not exist")
    if name in parent.__dict__:
        del parent.__dict__[name]  # e.g. `self.downsample = None` is a plain attribute
    parent._modules[name] = new


def _delete(root: nn.Module, path: str) -> None:
    parent_path, _, name = path.rpartition(".")
    parent = _get(root, parent_path)
    if parent is not None:
        parent._modules.pop(name, None)


def _first_line(e: BaseException) -> str:
    text = str(e).strip().splitlines()
    return text[0][:200] if text else type(e).__name__
