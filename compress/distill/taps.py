"""Feature taps by module name, automatic layer choice and pairing, projection heads.

A tap is a forward hook on a named submodule that keeps its latest output, so a distillation loss
can compare inner feature maps without changing the network. `resolve_layers` turns a user's spec
("auto", "a,b" or a list of names) into checked names; `auto_layers` picks the last module of each
spatial resolution (the stage outputs); `pair_layers` maps guide layer i to target layer
round(i * (Lt - 1) / (Lg - 1)).

A tap holds the module's output as the network leaves it: an in-place activation right after the
tapped module changes it too, which is why `auto` taps activations and whole blocks, not convs.
"""

from __future__ import annotations

import difflib
import math
from collections.abc import Sequence

import torch
from torch import nn

from compress.errors import RecipeError

_GLOBAL_POOLS = (nn.AdaptiveAvgPool1d, nn.AdaptiveAvgPool2d, nn.AdaptiveMaxPool1d, nn.AdaptiveMaxPool2d)


def _first_tensor(out):
    if isinstance(out, torch.Tensor):
        return out
    if isinstance(out, (tuple, list)) and out and isinstance(out[0], torch.Tensor):
        return out[0]
    return None


class FeatureTaps:
    """Forward hooks that keep the latest output of each named submodule.

    Args:
        module: the network.
        names: submodule names (as in `named_modules()`), already checked by `resolve_layers`.
    """

    def __init__(self, module: nn.Module, names: Sequence[str]) -> None:
        mods = dict(module.named_modules())
        self.names = list(names)
        self.outputs: dict[str, torch.Tensor] = {}
        self._handles = [mods[n].register_forward_hook(self._hook(n)) for n in self.names]

    def _hook(self, name: str):
        def keep(_module, _inputs, output) -> None:
            self.outputs[name] = _first_tensor(output)

        return keep

    def __getitem__(self, name: str) -> torch.Tensor:
        return self.outputs[name]

    def features(self) -> list[torch.Tensor]:
        """The tapped outputs in the order of `names`."""
        return [self.outputs[n] for n in self.names]

    def clear(self) -> None:
        self.outputs.clear()

    def remove(self) -> None:
        for h in self._handles:
            h.remove()
        self._handles = []
        self.outputs.clear()

    def __enter__(self) -> FeatureTaps:
        return self

    def __exit__(self, *exc) -> None:
        self.remove()


def layer_names(module: nn.Module) -> list[str]:
    """Every tappable submodule name (the root excluded)."""
    return [n for n, _ in module.named_modules() if n]


@torch.no_grad()
def trace_shapes(module: nn.Module, input_shape: Sequence[int]) -> tuple[list[tuple[str, tuple]], tuple]:
    """Output shapes of every submodule for a 2-sample zero batch, in the order their forwards end.

    Returns ([(name, shape), ...], shape of the network's output). Runs in eval mode (BN statistics
    untouched) on the module's current device.
    """
    order: dict[str, tuple] = {}
    handles = []
    for name, sub in module.named_modules():
        if not name:
            continue

        def record(_m, _i, out, _name=name) -> None:
            t = _first_tensor(out)
            if t is not None:
                order.pop(_name, None)  # a module called twice counts where it was last called
                order[_name] = tuple(t.shape)

        handles.append(sub.register_forward_hook(record))
    param = next(module.parameters(), None)
    device = param.device if param is not None else torch.device("cpu")
    was_training = module.training
    module.eval()
    try:
        out = _first_tensor(module(torch.zeros(2, *input_shape, device=device)))
    except Exception as e:  # a model that rejects the data's shape: say so, not a torch traceback
        raise RecipeError(
            f"the model does not run on inputs of shape {tuple(input_shape)}: {str(e).splitlines()[0][:200]}"
        ) from None
    finally:
        for h in handles:
            h.remove()
        module.train(was_training)
    return list(order.items()), tuple(out.shape) if out is not None else ()


def auto_layers(module: nn.Module, input_shape: Sequence[int], max_layers: int = 4) -> list[str]:
    """Stage outputs: the last module (in forward order) of each run of equal spatial size.

    Global pooling is skipped, and so is a dense network's output layer (same shape as the
    network's output). The deepest `max_layers` stages are kept.
    """
    shapes, out_shape = trace_shapes(module, input_shape)
    mods = dict(module.named_modules())
    dense = len(out_shape) == 4
    picked: list[str] = []
    last_hw = None
    for name, shape in shapes:
        if len(shape) != 4 or isinstance(mods[name], _GLOBAL_POOLS) or (dense and shape == out_shape):
            continue
        hw = shape[2:]
        if picked and hw == last_hw:
            picked[-1] = name
        else:
            picked.append(name)
        last_hw = hw
    if not picked:
        raise RecipeError(
            "no feature maps to tap automatically (no 4-D outputs); name the layers; candidates: "
            + _list(layer_names(module))
        )
    return picked[-max_layers:]


def resolve_layers(
    module: nn.Module,
    spec: str | Sequence[str],
    input_shape: Sequence[int],
    *,
    role: str = "model",
    max_layers: int = 4,
) -> list[str]:
    """Checked layer names from "auto", a comma-separated string or a list of names.

    Raises:
        RecipeError: a name that is not a submodule, listing close matches and the candidates.
    """
    if isinstance(spec, str):
        if spec.strip() == "auto":
            return auto_layers(module, input_shape, max_layers)
        spec = [s.strip() for s in spec.split(",") if s.strip()]
    names = list(spec)
    if not names:
        raise RecipeError(f"no {role} layers given; use 'auto' or name them")
    candidates = layer_names(module)
    for n in names:
        if n not in candidates:
            close = difflib.get_close_matches(n, candidates, n=3)
            hint = f" (did you mean {', '.join(close)}?)" if close else ""
            raise RecipeError(f"the {role} has no layer '{n}'{hint}; candidates: {_list(candidates)}")
    return names


def pair_layers(guide: Sequence[str], target: Sequence[str]) -> list[tuple[str, str]]:
    """Pair guide layer i with target layer round(i * (Lt - 1) / (Lg - 1)), by depth."""
    lg, lt = len(guide), len(target)
    if lg == 0 or lt == 0:
        raise RecipeError("layer pairing needs at least one layer on each side")
    if lg == 1:
        return [(guide[0], target[-1])]
    return [(g, target[int(math.floor(i * (lt - 1) / (lg - 1) + 0.5))]) for i, g in enumerate(guide)]


def projection(cin: int, cout: int, ndim: int) -> nn.Module:
    """A trainable map from a student's width to a teacher's: 1x1 conv for maps, linear for vectors."""
    if ndim == 4:
        return nn.Conv2d(cin, cout, 1)
    return nn.Linear(cin, cout)


def shape_of(module: nn.Module, input_shape: Sequence[int], names: Sequence[str]) -> dict[str, tuple]:
    """Output shapes of the named layers (batch of 2)."""
    shapes = dict(trace_shapes(module, input_shape)[0])
    missing = [n for n in names if n not in shapes]
    if missing:
        raise RecipeError(f"layer '{missing[0]}' does not run in the forward pass (or returns no tensor)")
    return {n: shapes[n] for n in names}


def _list(names: Sequence[str], limit: int = 60) -> str:
    shown = ", ".join(names[:limit])
    return shown + (f", ... ({len(names) - limit} more)" if len(names) > limit else "")
