"""Elementwise ops: activations pass labels through; binary ops unify the atoms they line up.

A residual add or a squeeze-excitation gate ties the channels of both operands index by index; an
operand broadcast against coupled channels (size 1 where the output is larger) is fixed. Arithmetic
on sizes read from shapes (`C // heads`) gives a derived `Size` that remembers its source axis.
"""

from __future__ import annotations

import math
import operator
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from compress.prune.labels import L, Size, Unsupported, blank_from_meta, bshape, compress_arr, value_of
from compress.prune.ops.registry import register_function, register_method, register_module

ACT_MODULES = (
    nn.ReLU,
    nn.ReLU6,
    nn.GELU,
    nn.SiLU,
    nn.Sigmoid,
    nn.Tanh,
    nn.Hardswish,
    nn.Hardsigmoid,
    nn.LeakyReLU,
    nn.ELU,
    nn.Mish,
    nn.Dropout,
    nn.Dropout1d,
    nn.Dropout2d,
    nn.Identity,
    nn.Hardtanh,
    nn.SELU,
    nn.Softplus,
    nn.CELU,
    nn.Tanhshrink,
)
UNARY_FUNCS = (
    F.relu,
    F.relu6,
    F.gelu,
    F.silu,
    F.hardswish,
    F.hardsigmoid,
    F.sigmoid,
    F.tanh,
    F.leaky_relu,
    F.elu,
    F.mish,
    F.dropout,
    F.dropout1d,
    F.dropout2d,
    F.hardtanh,
    F.softplus,
    F.selu,
    F.celu,
    torch.relu,
    torch.sigmoid,
    torch.tanh,
    torch.exp,
    torch.abs,
    torch.sqrt,
    torch.rsqrt,
    torch.erf,
    torch.clamp,
    operator.neg,
    torch.neg,
    torch.clone,
    F.relu_,
    torch.nn.functional.hardsigmoid,
)
UNARY_METHODS = (
    "relu",
    "relu_",
    "sigmoid",
    "sigmoid_",
    "tanh",
    "tanh_",
    "contiguous",
    "clone",
    "float",
    "to",
    "type_as",
    "neg",
    "abs",
    "exp",
    "sqrt",
    "rsqrt",
    "detach",
    "clamp",
    "clamp_",
    "clamp_min",
    "clamp_max",
    "half",
    "double",
    "hardswish",
    "sigmoid",
    "gelu",
    "silu",
    "erf",
    "pow",
    "__pow__",
)
BINARY_FUNCS = (
    operator.add,
    operator.iadd,
    operator.sub,
    operator.isub,
    operator.mul,
    operator.imul,
    operator.truediv,
    operator.itruediv,
    torch.add,
    torch.mul,
    torch.sub,
    torch.div,
    torch.maximum,
    torch.minimum,
)
_SIZE_OPS = {
    operator.add: operator.add,
    operator.sub: operator.sub,
    operator.mul: operator.mul,
    operator.floordiv: operator.floordiv,
    operator.truediv: operator.truediv,
    operator.mod: operator.mod,
    operator.pow: operator.pow,
    operator.neg: operator.neg,
    math.ceil: math.ceil,  # fx wraps the math module: `math.ceil(H / patch)` is a node
    math.floor: math.floor,
    math.trunc: math.trunc,
    operator.eq: operator.eq,  # comparisons of sizes: a branch on one is checked by `shape_value`
    operator.ne: operator.ne,
    operator.lt: operator.lt,
    operator.le: operator.le,
    operator.gt: operator.gt,
    operator.ge: operator.ge,
}


@register_module(*ACT_MODULES)
def act_module(g, node, m: nn.Module, args: list, kwargs: dict) -> Any:
    if not isinstance(args[0], L):
        raise Unsupported(f"{node.target}: input is not a tensor")
    return args[0]


def passthrough(g, node, args: list, kwargs: dict) -> Any:
    x = args[0] if args else None
    if isinstance(x, L):
        return x
    if isinstance(x, Size) or not g.has_tensor(node):
        return size_arith(g, node, args, kwargs) if isinstance(x, Size) else None
    raise Unsupported(f"{node.name}: elementwise op on an unknown value")


register_function(*UNARY_FUNCS, names=("stochastic_depth", "drop_block2d", "drop_path"))(passthrough)
register_method(*UNARY_METHODS)(passthrough)


def size_arith(g, node, args: list, kwargs: dict) -> Any:
    """Arithmetic on sizes: the result is a derived Size of the labelled operand (if any)."""
    sizes = [a for a in args if isinstance(a, Size)]
    fn = _SIZE_OPS.get(node.target) if node.op == "call_function" else None
    vals = [value_of(a) for a in args]
    if fn is None or any(v is None for v in vals):
        return None
    value = fn(*vals)
    atoms = next((s.atoms for s in sizes if s.atoms is not None), None)
    source = next((s.source for s in sizes if s.atoms is not None), sizes[0].source if sizes else None)
    if not isinstance(value, (int, float)):
        return value
    return Size(value, atoms, True, source, _scale(node, args, atoms))


def _scale(node, args: list, atoms) -> int | None:
    """k when a product is k x the labelled size (the other factors are sizes without channels)."""
    if atoms is None or node.target not in (operator.mul, torch.mul) or len(args) != 2:
        return None
    labelled = [a for a in args if isinstance(a, Size) and a.atoms is not None]
    if len(labelled) != 1 or labelled[0].scale is None:
        return None
    other = args[1] if args[0] is labelled[0] else args[0]
    k = value_of(other)
    if isinstance(other, Size) and other.atoms is not None or isinstance(k, bool) or not isinstance(k, int):
        return None
    return labelled[0].scale * k


register_function(
    operator.floordiv,
    operator.mod,
    operator.pow,
    math.ceil,
    math.floor,
    math.trunc,
    operator.eq,
    operator.ne,
    operator.lt,
    operator.le,
    operator.gt,
    operator.ge,
)(
    lambda g, node, args, kwargs: (
        size_arith(g, node, args, kwargs) if not any(isinstance(a, L) for a in args) else _raise(node)
    )
)


def _raise(node):
    raise Unsupported(f"{node.name}: op {node.target} on labelled tensors")


@register_function(*BINARY_FUNCS)
def binary_function(g, node, args: list, kwargs: dict) -> Any:
    a = args[0]
    b = args[1] if len(args) > 1 else kwargs.get("other")
    if not isinstance(a, L) and not isinstance(b, L) and (isinstance(a, Size) or isinstance(b, Size)):
        return size_arith(g, node, [a, b], {})
    return binary(g, node, a, b)


@register_method("add", "add_", "mul", "mul_", "sub", "sub_", "div", "div_")
def binary_method(g, node, args: list, kwargs: dict) -> Any:
    return binary(g, node, args[0], args[1] if len(args) > 1 else kwargs.get("other"))


def binary(g, node, a: Any, b: Any) -> Any:
    if not g.has_tensor(node):
        return None
    shape = g.meta_shape(node)
    ops = [v for v in (a, b) if isinstance(v, L)]
    if not ops:
        return blank_from_meta(node.meta.get("tensor_meta"))
    arrs = []
    for v in ops:
        arr = v.arr.reshape((1,) * (len(shape) - v.arr.ndim) + v.arr.shape)
        tshape = (1,) * (len(shape) - len(v.shape)) + tuple(v.shape)
        arrs.append((v, arr, tshape))
    active = []
    for v, arr, tshape in arrs:
        # a truly broadcast operand (size 1 where the output is larger) is not coupled to the other
        others = [o for o in arrs if o[0] is not v]
        broadcast = any(
            tshape[d] == 1 and shape[d] > 1 and any(o[1].shape[d] > 1 for o in others) for d in range(len(shape))
        )
        if broadcast:
            g.atoms.fix(arr, "broadcast against coupled channels")
        else:
            active.append(arr)
    if not active:
        return blank_from_meta(node.meta.get("tensor_meta"))
    if len(active) == 1:
        return L(
            compress_arr(np.broadcast_to(active[0], bshape([active[0]], shape)).copy()),
            shape,
            any(v.batched for v in ops),
        )
    target = bshape(active, shape)
    A = np.broadcast_to(active[0], target)
    B = np.broadcast_to(active[1], target)
    both = (A >= 0) & (B >= 0)
    if both.any():
        pairs = np.unique(np.stack([A[both], B[both]], 1), axis=0)
        for p, q in pairs:
            g.atoms.union(int(p), int(q))
    one = (A >= 0) ^ (B >= 0)
    if one.any():
        g.atoms.fix(np.concatenate([A[one], B[one]]), "added to / multiplied by a fixed tensor")
    out = np.where(A >= 0, A, B)
    return L(compress_arr(out.copy()), shape, any(v.batched for v in ops))
