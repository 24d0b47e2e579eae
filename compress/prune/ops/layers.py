"""Conv, linear and normalisation layers: module forms and their functional calls.

`F.conv2d(x, self.weight, self.bias, ...)`, `F.linear`, `F.batch_norm`, `F.group_norm` and
`F.layer_norm` (timm's `BatchNormAct2d`, `Linear`, `LayerNorm2d`, `Conv2dSame`, ...) go through the
same code as `nn.Conv2d` & co.: every parameter they are given is coupled to the channel axis it
scales. Layers are resized by slicing those parameters; the exact torch types are rebuilt, any
subclass is resized in place (its size attributes are updated too).
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from compress.prune.labels import L, P, Size, Unsupported, channel_labels, tensor_arg, value_of
from compress.prune.ops.registry import register_function, register_module, register_resize

_CONVS = (nn.Conv1d, nn.Conv2d, nn.Conv3d)
_BNS = (nn.BatchNorm1d, nn.BatchNorm2d, nn.BatchNorm3d)


def _arg(args: list, kwargs: dict, i: int, name: str, default: Any = None) -> Any:
    if name in kwargs:
        return kwargs[name]
    return args[i] if len(args) > i else default


def _ref(p: Any, what: str) -> tuple[str, str] | None:
    """(module, attr) of a parameter handed to a layer; computed tensors are not sliceable."""
    if p is None:
        return None
    if isinstance(p, P):
        return p.owner, p.attr
    raise Unsupported(f"{what} is computed in the graph, not a parameter")


# ---------------------------------------------------------------------------------------------- conv
def conv(g, node, x: L, weight: tuple[str, str], bias: tuple[str, str] | None, wshape, groups: int) -> L:
    """A convolution of `x` by `weight` (out, in/groups, *kernel): producer rows, consumer columns."""
    owner = weight[0]
    out_shape = g.meta_shape(node)
    cout, gin = int(wshape[0]), int(wshape[1])
    in_atoms = g.index_atoms(x, 1, f"{owner}: mixed input channels")
    g.only_along(x, 1, f"{owner}: input labels vary spatially")
    out_atoms = g.producer(owner, cout, weight[1])
    out_slot = g.slot(owner, weight[1], 0, out_atoms, "out")
    if bias is not None:
        g.slot(bias[0], bias[1], 0, out_atoms, "out")
    positions = int(np.prod(out_shape[2:]))
    factor = int(np.prod(wshape[2:])) * positions
    if groups == 1:
        in_slot = g.slot(owner, weight[1], 1, in_atoms, "in")
        g.add_layer(owner, out_slot, in_slot, 0, factor, positions)
    else:
        blocks = np.concatenate([in_atoms.reshape(groups, gin), out_atoms.reshape(groups, cout // groups)], axis=1)
        g.tie_rows(blocks, f"{owner}: grouped conv fed by fixed channels")
        g.add_layer(owner, out_slot, None, gin, factor, positions)
    return channel_labels(out_shape, 1, out_atoms, x.batched)


@register_module(*_CONVS)
def conv_module(g, node, m: nn.Module, args: list, kwargs: dict) -> L:
    x = tensor_arg(node, args[0])
    bias = (node.target, "bias") if m.bias is not None else None
    return conv(g, node, x, (node.target, "weight"), bias, m.weight.shape, m.groups)


@register_function(F.conv1d, F.conv2d, F.conv3d, torch.conv1d, torch.conv2d, torch.conv3d, params=True)
def conv_function(g, node, args: list, kwargs: dict) -> L:
    x, w = g.labels(args[0]), _arg(args, kwargs, 1, "weight")
    if not isinstance(x, L) or not isinstance(w, P):
        raise Unsupported(f"{node.name}: conv with a weight computed in the graph")
    b = _ref(_arg(args, kwargs, 2, "bias"), "conv bias")
    groups = int(_arg(args, kwargs, 6, "groups", 1))
    return conv(g, node, x, (w.owner, w.attr), b, w.shape, groups)


@register_function(names=("conv2d_same",), params=True)
def conv_same_function(g, node, args: list, kwargs: dict) -> L:
    """timm's `conv2d_same` (pads, then F.conv2d) with the same argument order."""
    return conv_function(g, node, args, kwargs)


# -------------------------------------------------------------------------------------------- linear
def linear(g, node, x: L, weight: tuple[str, str], bias: tuple[str, str] | None, wshape) -> L:
    owner = weight[0]
    out_shape = g.meta_shape(node)
    in_atoms = g.index_atoms(x, -1, f"{owner}: mixed input features")
    g.only_along(x, -1, f"{owner}: input labels vary along token axes")
    out_atoms = g.producer(owner, int(wshape[0]), weight[1])
    out_slot = g.slot(owner, weight[1], 0, out_atoms, "out")
    if bias is not None:
        g.slot(bias[0], bias[1], 0, out_atoms, "out")
    in_slot = g.slot(owner, weight[1], 1, in_atoms, "in")
    tokens = int(np.prod(out_shape[:-1])) // max(out_shape[0], 1) if x.batched else int(np.prod(out_shape[:-1])) // 2
    g.add_layer(owner, out_slot, in_slot, 0, max(tokens, 1), max(tokens, 1))
    return channel_labels(out_shape, -1, out_atoms, x.batched)


@register_module(nn.Linear)
def linear_module(g, node, m: nn.Linear, args: list, kwargs: dict) -> L:
    x = tensor_arg(node, args[0])
    bias = (node.target, "bias") if m.bias is not None else None
    return linear(g, node, x, (node.target, "weight"), bias, m.weight.shape)


@register_function(F.linear, params=True)
def linear_function(g, node, args: list, kwargs: dict) -> L:
    x, w = g.labels(args[0]), _arg(args, kwargs, 1, "weight")
    if not isinstance(x, L) or not isinstance(w, P):
        raise Unsupported(f"{node.name}: linear with a weight computed in the graph")
    return linear(g, node, x, (w.owner, w.attr), _ref(_arg(args, kwargs, 2, "bias"), "linear bias"), w.shape)


# ------------------------------------------------------------------------------------------- norms
def _norm_params(g, node, atoms: np.ndarray, params: list[tuple[Any, str]]) -> None:
    """Couple each parameter (P: slice it; L: a computed per-channel tensor, unify) to `atoms`."""
    for p, role in params:
        if p is None:
            continue
        if isinstance(p, P):
            if p.shape != (atoms.size,):
                raise Unsupported(f"{node.name}: norm parameter {p.owner}.{p.attr} of unexpected shape")
            g.slot(p.owner, p.attr, 0, atoms, role if p.is_param or role == "stat" else "stat")
        elif isinstance(p, L):
            pa = (
                np.broadcast_to(p.arr, p.shape).reshape(-1) if p.arr.size > 1 else np.full(atoms.size, p.arr.ravel()[0])
            )
            if pa.shape != atoms.shape:
                raise Unsupported(f"{node.name}: norm parameter of unexpected shape")
            for a, b in zip(pa, atoms, strict=False):
                if a >= 0 and b >= 0:
                    g.atoms.union(int(a), int(b))
                elif a >= 0 or b >= 0:
                    g.atoms.fix([a, b], f"{node.name}: normalised fixed channels")


def batch_norm(g, node, x: L, mean, var, weight, bias) -> L:
    atoms = g.index_atoms(x, 1, f"{node.name}: mixed channels")
    _norm_params(g, node, atoms, [(weight, "norm"), (bias, "norm"), (mean, "stat"), (var, "stat")])
    return x


def _module_p(g, node, m: nn.Module, attr: str) -> P | None:
    t = getattr(m, attr, None)
    if t is None:
        return None
    return P(node.target, attr, tuple(t.shape), isinstance(t, nn.Parameter), node)


def _affine(g, node, m: nn.Module) -> tuple[P | None, P | None]:
    return _module_p(g, node, m, "weight"), _module_p(g, node, m, "bias")


@register_module(nn.modules.batchnorm._BatchNorm)
def batch_norm_module(g, node, m: nn.Module, args: list, kwargs: dict) -> L:
    x = tensor_arg(node, args[0])
    p = [_module_p(g, node, m, a) for a in ("running_mean", "running_var", "weight", "bias")]
    return batch_norm(g, node, x, *p)


@register_function(F.batch_norm, torch.batch_norm, params=True)
def batch_norm_function(g, node, args: list, kwargs: dict) -> L:
    x = tensor_arg(node, g.labels(args[0]))
    names = ("running_mean", "running_var", "weight", "bias")
    vals = [_arg(args, kwargs, i + 1, n) for i, n in enumerate(names)]
    if fn_is_torch_batch_norm(node):  # torch.batch_norm(input, weight, bias, mean, var, ...)
        vals = [_arg(args, kwargs, 3, "running_mean"), _arg(args, kwargs, 4, "running_var")] + [
            _arg(args, kwargs, 1, "weight"),
            _arg(args, kwargs, 2, "bias"),
        ]
    return batch_norm(g, node, x, *vals)


def fn_is_torch_batch_norm(node) -> bool:
    return node.target is torch.batch_norm


def group_norm(g, node, x: L, num_groups: int, weight, bias) -> L:
    atoms = g.index_atoms(x, 1, f"{node.name}: mixed channels")
    per = atoms.size // num_groups
    if num_groups == 1:  # statistics over every channel (timm GroupNorm1): like LayerNorm, per channel
        g.normed.append(atoms)
    else:  # whole groups are removed, so the statistics of the others do not change
        g.tie_rows(
            atoms[: per * num_groups].reshape(num_groups, per), f"{node.name}: GroupNorm group with fixed channels"
        )
    _norm_params(g, node, atoms, [(weight, "norm"), (bias, "norm")])
    return x


@register_module(nn.GroupNorm)
def group_norm_module(g, node, m: nn.GroupNorm, args: list, kwargs: dict) -> L:
    return group_norm(g, node, tensor_arg(node, args[0]), m.num_groups, *_affine(g, node, m))


@register_function(F.group_norm, torch.group_norm, params=True)
def group_norm_function(g, node, args: list, kwargs: dict) -> L:
    x = tensor_arg(node, g.labels(args[0]))
    num_groups = int(_arg(args, kwargs, 1, "num_groups"))
    return group_norm(g, node, x, num_groups, _arg(args, kwargs, 2, "weight"), _arg(args, kwargs, 3, "bias"))


def layer_norm(g, node, x: L, normalized, weight, bias) -> L:
    if len(normalized) != 1:
        raise Unsupported(f"{node.name}: layer_norm over several axes")
    atoms = g.index_atoms(x, -1, f"{node.name}: mixed channels")
    g.normed.append(atoms)
    _norm_params(g, node, atoms, [(weight, "norm"), (bias, "norm")])
    return x


@register_module(nn.LayerNorm)
def layer_norm_module(g, node, m: nn.LayerNorm, args: list, kwargs: dict) -> L:
    return layer_norm(g, node, tensor_arg(node, args[0]), m.normalized_shape, *_affine(g, node, m))


@register_function(F.layer_norm, torch.layer_norm, params=True)
def layer_norm_function(g, node, args: list, kwargs: dict) -> L:
    x = tensor_arg(node, g.labels(args[0]))
    normalized = _arg(args, kwargs, 1, "normalized_shape")
    normalized = [normalized] if isinstance(normalized, (int, Size)) else list(normalized)
    weight = _arg(args, kwargs, 2, "weight")
    if len(normalized) == 1 and not isinstance(normalized[0], Size):  # a literal width must follow too
        stack = node.meta.get("nn_module_stack") or {}
        caller = list(stack.values())[-1][0] if stack else ""
        owner_resized = (
            isinstance(weight, P) and weight.owner == caller and isinstance(g.modules.get(caller), nn.LayerNorm)
        )
        if not owner_resized:
            ref = g.find_attr(node, tuple(value_of(normalized)))
            if ref is None:
                g.atoms.fix(x.arr, f"{node.name}: layer_norm over a literal width")
            else:
                g.bind_count(ref, g.index_atoms(x, -1, f"{node.name}: mixed channels"), pos=0)
    return layer_norm(g, node, x, normalized, _arg(args, kwargs, 2, "weight"), _arg(args, kwargs, 3, "bias"))


@register_module(nn.PReLU)
def prelu_module(g, node, m: nn.PReLU, args: list, kwargs: dict) -> L:
    x = tensor_arg(node, args[0])
    if m.num_parameters > 1:
        atoms = g.index_atoms(x, 1, f"{node.target}: mixed channels")
        g.slot(node.target, "weight", 0, atoms, "norm")
    return x


# ------------------------------------------------------------------------------------------- resize
def _set_param(m: nn.Module, name: str, t: torch.Tensor) -> None:
    cur = getattr(m, name)
    if isinstance(cur, nn.Parameter):
        setattr(m, name, nn.Parameter(t.clone(), requires_grad=cur.requires_grad))
    else:
        setattr(m, name, t.clone())


def resize_in_place(m: nn.Module, params: dict[str, torch.Tensor]) -> None:
    for p, t in params.items():
        _set_param(m, p, t)


def _copy_into(new: nn.Module, old: nn.Module, params: dict[str, torch.Tensor]) -> nn.Module:
    with torch.no_grad():
        for p, t in list(new.named_parameters(recurse=False)) + list(new.named_buffers(recurse=False)):
            src = params.get(p, getattr(old, p))
            if src is not None and t.shape == src.shape:
                t.copy_(src)
    new.train(old.training)
    return new


@register_resize(*_CONVS)
def resize_conv(old: nn.Module, params: dict[str, torch.Tensor]) -> nn.Module | None:
    w = params.get("weight", old.weight)
    per_group_out = old.out_channels // old.groups
    groups = old.groups if old.groups == 1 else w.shape[0] // per_group_out
    if type(old) in _CONVS:
        new = type(old)(
            w.shape[1] * groups,
            w.shape[0],
            old.kernel_size,
            old.stride,
            old.padding,
            old.dilation,
            groups,
            old.bias is not None,
            old.padding_mode,
        )
        return _copy_into(new, old, params)
    resize_in_place(old, params)  # a subclass (timm Conv2dSame, ...): same module, new sizes
    old.in_channels, old.out_channels, old.groups = int(w.shape[1] * groups), int(w.shape[0]), int(groups)
    return None


@register_resize(nn.Linear)
def resize_linear(old: nn.Linear, params: dict[str, torch.Tensor]) -> nn.Module | None:
    w = params.get("weight", old.weight)
    if type(old) is nn.Linear:
        return _copy_into(nn.Linear(w.shape[1], w.shape[0], bias=old.bias is not None), old, params)
    resize_in_place(old, params)
    old.in_features, old.out_features = int(w.shape[1]), int(w.shape[0])
    return None


@register_resize(nn.modules.batchnorm._BatchNorm)
def resize_batch_norm(old: nn.Module, params: dict[str, torch.Tensor]) -> nn.Module | None:
    n = int(next(iter(params.values())).shape[0])
    if type(old) in _BNS:
        new = type(old)(n, old.eps, old.momentum, old.affine, old.track_running_stats)
        if old.track_running_stats:
            new.num_batches_tracked.copy_(old.num_batches_tracked)
        return _copy_into(new, old, params)
    resize_in_place(old, params)  # timm BatchNormAct2d & co.
    old.num_features = n
    return None


@register_resize(nn.GroupNorm)
def resize_group_norm(old: nn.GroupNorm, params: dict[str, torch.Tensor]) -> nn.Module | None:
    n = int(next(iter(params.values())).shape[0])
    groups = 1 if old.num_groups == 1 else n // (old.num_channels // old.num_groups)
    if type(old) is nn.GroupNorm:
        return _copy_into(nn.GroupNorm(groups, n, old.eps, old.affine), old, params)
    resize_in_place(old, params)
    old.num_channels, old.num_groups = n, groups
    return None


@register_resize(nn.LayerNorm)
def resize_layer_norm(old: nn.LayerNorm, params: dict[str, torch.Tensor]) -> nn.Module | None:
    n = int(next(iter(params.values())).shape[0])
    if type(old) is nn.LayerNorm:
        new = nn.LayerNorm(n, old.eps, old.elementwise_affine, bias=old.bias is not None)
        return _copy_into(new, old, params)
    resize_in_place(old, params)
    old.normalized_shape = (n,)
    return None


@register_resize(nn.PReLU)
def resize_prelu(old: nn.PReLU, params: dict[str, torch.Tensor]) -> nn.Module | None:
    resize_in_place(old, params)
    old.num_parameters = int(old.weight.shape[0])
    return None
