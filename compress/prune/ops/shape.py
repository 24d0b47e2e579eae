"""Shape ops: reshapes followed as merges and splits of axis groups, permutes, expands, shape reads.

A reshape is factorised into groups of input axes that become groups of output axes. Only one group
may carry labels. Inside it, the output axis whose size is not a literal (`-1`, or a size read from
a shape) follows the pruned width; the others keep their size, so the labels along them are tied.
When every size is a literal, an axis whose literal is an int attribute of the calling module
(`self.num_heads`) is taken as the one that follows, and that attribute is updated after pruning.
A size read from *another* tensor's shape (`reshape(B, N, C)` with C from the residual) ties that
tensor's channels to the reshaped ones, index by index, so both widths prune alike; so does a
size that is a multiple of it (`B * C * n_h`, mobilevit's patch fold), when the axis it sizes holds
exactly those channels that many times each. A size read from an axis without channels (the batch,
a spatial axis) does not change when pruning, so it is not the axis that follows.

Python values that a model computes from shapes and branches on (mobilevit's patch grid) are fixed
from the example input when tracing (`graph.trace`); each leaves a `shape_value` node, and one read
from a pruned width keeps that width whole.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from torch import fx, nn

from compress.prune.labels import L, Shape, Size, Unsupported, compress_arr, factorize, tensor_arg, value_of
from compress.prune.ops.registry import register_function, register_method, register_module


def _spec_entries(spec: Any, n: int) -> list[Any] | None:
    if spec is None:
        return None
    if isinstance(spec, Shape):
        return [spec.size(d) for d in range(len(spec.labels.shape))] if len(spec.labels.shape) == n else None
    if not isinstance(spec, (list, tuple)):
        return None
    spec = list(spec)
    return spec if len(spec) == n else None


def reshape(g, node: fx.Node, x: L, spec: Any) -> L:
    """Follow a reshape (`spec`: the requested sizes, or None when every axis follows its input)."""
    out_shape = g.meta_shape(node)
    in_shape = x.shape
    entries = _spec_entries(spec, len(out_shape))
    start = 1 if x.batched else 0
    if x.batched and (len(out_shape) == 0 or out_shape[0] != in_shape[0]):
        if x.arr.shape[0] > 1 or len(out_shape) == 0:
            raise Unsupported("reshape that changes the batch axis")
        start = 0  # the batch axis merges with unlabelled axes (levit's x.flatten(0, 1)): follow all axes
    if all(s == 1 for s in x.arr.shape):
        _tie_sizes(g, node, entries, None, None)
        return L(np.full([1] * len(out_shape), int(x.arr.ravel()[0]), dtype=np.int64), out_shape, x.batched)
    groups = factorize(in_shape[start:], out_shape[start:])
    if groups is None:
        raise Unsupported("reshape that does not factorise")
    varying = [gr for gr in groups if any(x.arr.shape[start + i] > 1 for i in gr[0])]
    if len(varying) != 1:
        raise Unsupported("reshape mixing several labelled axes")
    gin, gout = varying[0]
    gin = [start + i for i in gin]
    gout = [start + j for j in gout]
    arr = np.broadcast_to(x.arr, tuple(in_shape[d] if d in gin else x.arr.shape[d] for d in range(len(in_shape))))
    arr = arr[tuple(slice(None) if d in gin else 0 for d in range(len(in_shape)))]  # only the group axes left
    if len(gin) > 1:
        var = [k for k, d in enumerate(gin) if x.arr.shape[d] > 1]
        roots = g.roots(arr)
        primary = max(var, key=lambda k: len(np.unique(np.moveaxis(roots, k, 0).reshape(arr.shape[k], -1), axis=0)))
        moved = np.moveaxis(arr, primary, 0).reshape(arr.shape[primary], -1)
        for row in moved:
            g.tie(row, f"{node.name}: reshape merging fixed channels")
    flat = arr.reshape(-1)
    sizes = [out_shape[j] for j in gout]
    out = flat.reshape(sizes)
    dynamic, bound, linked = _dynamic_axes(g, node, x, entries, gout, out)
    linked = linked & {gout[dynamic[0]]} if len(dynamic) == 1 else set()
    if len(dynamic) != 1:
        g.atoms.fix(flat, f"{node.name}: reshape to literal sizes")
    else:
        dk = dynamic[0]
        if len(gout) > 1:
            moved = np.moveaxis(out, dk, 0).reshape(sizes[dk], -1)
            for row in moved:
                g.tie(row, f"{node.name}: reshape splitting fixed channels")
            if bound is not None:
                g.bind_count(bound[:2], moved[:, 0], pos=bound[2] if len(bound) > 2 else None)
        elif bound is not None:
            g.bind_count(bound[:2], flat, pos=bound[2] if len(bound) > 2 else None)
    full_shape = [1] * len(out_shape)
    for k, j in enumerate(gout):
        full_shape[j] = sizes[k]
    # the batch merged with labelled axes (mobilevit's B * C * n_h): axis 0 is no longer the batch
    batched = x.batched and not (start == 0 and 0 in gin)
    result = L(compress_arr(out.reshape(full_shape).copy()), out_shape, batched)
    _tie_sizes(g, node, entries, result, x, linked)
    return result


def _dynamic_axes(
    g, node, x: L, entries: list | None, gout: list[int], out: np.ndarray
) -> tuple[list[int], tuple | None, set[int]]:
    """Indices (into gout) of the axes that follow the pruned width, an attribute bound to it, and the
    output axes sized by a multiple of another tensor's width that holds exactly its channels."""
    if entries is None:
        return (list(range(len(gout))) if len(gout) == 1 else []), None, set()
    dynamic = []
    linked: set[int] = set()
    for k, j in enumerate(gout):
        e = entries[j]
        if isinstance(e, int) and not isinstance(e, bool):
            if e == -1:
                dynamic.append(k)
        elif isinstance(e, Size):
            if not e.derived or e.atoms is None or e.source is node.args[0]:
                dynamic.append(k)
            elif _holds_multiple(g, e, np.moveaxis(out, k, 0).reshape(out.shape[k], -1)):
                dynamic.append(k)
                linked.add(j)
        else:
            dynamic.append(k)
    if len(dynamic) > 1:  # sizes of axes without channels (the batch, spatial) stay as they are
        moving = [k for k in dynamic if not (isinstance(entries[gout[k]], Size) and entries[gout[k]].atoms is None)]
        if len(moving) == 1:
            dynamic = moving
    # an int attribute of the calling module may follow instead: `self.num_heads` first (whole heads
    # go, the `-1` head width stays), else when every size is a literal; of equal values the later
    # axis (timm's (B, N, 3, heads, head_dim) has 3 == heads in deit_tiny)
    found = []
    for k, j in enumerate(gout):
        e = entries[j]
        if isinstance(e, int) and not isinstance(e, bool) and e > 1:
            ref = g.find_attr(node, e)
            if ref is not None and (not dynamic or "heads" in ref[1]):
                found.append((("heads" in ref[1]) * 2 + (k > 0), k, ref))
    if not found and not dynamic and all(isinstance(e, int) for e in entries):
        whole = g.find_attr(node, tuple(entries))  # timm Scale: self.scale.view(self.shape)
        if whole is not None and len(gout) == 1:
            return [0], (whole[0], whole[1], gout[0]), linked
    if not found:
        return dynamic, None, linked
    if len(found) > 1:  # equal values: not the innermost axis (the head width), else the later one
        found = [f for f in found if f[1] != len(gout) - 1] or found
    best = max(found, key=lambda t: (t[0], t[1]))
    return [best[1]], best[2], linked


def _holds_multiple(g, e: Size, rows: np.ndarray) -> bool:
    """`e` is `scale` x another tensor's width, and the axis it sizes (`rows`: labels along it) holds
    each of that tensor's channel classes `scale` times, one class per row: after pruning the axis
    keeps `scale` x the kept width, which is what the model computes."""
    if e.scale is None or e.scale < 1 or rows.shape[0] != e.value or (rows < 0).any():
        return False
    roots = g.roots(rows)
    if (roots != roots[:, :1]).any():
        return False
    have, n_have = np.unique(roots[:, 0], return_counts=True)
    want, n_want = np.unique(g.roots(e.atoms), return_counts=True)
    return bool(np.array_equal(have, want) and np.array_equal(n_have, n_want * e.scale))


def _tie_sizes(g, node, entries: list | None, result: L | None, x: L | None, linked: set[int] = frozenset()) -> None:
    """Sizes read from other tensors' shapes: tie those tensors' channels to the axis they size."""
    if entries is None:
        return
    for j, e in enumerate(entries):
        if not isinstance(e, Size) or e.atoms is None or j in linked:
            continue
        if x is not None and e.source is node.args[0]:
            continue
        reason = f"{node.name}: reshape to a size read from another tensor"
        if e.derived:
            g.atoms.fix(e.atoms, f"{node.name}: reshape to a size computed from a pruned width")
            continue
        if result is None or result.arr.shape[j] == 1:
            if result is not None and e.atoms.size == result.shape[j]:
                g.atoms.fix(e.atoms, reason)
            continue
        lab = np.moveaxis(result.arr, j, 0).reshape(result.arr.shape[j], -1)
        if lab.shape[0] != e.atoms.size:
            g.atoms.fix(e.atoms, reason)
            continue
        for row, a in zip(lab, e.atoms, strict=True):
            g.tie(np.concatenate([row, [a]]), reason)


def _shape_args(node_args: list) -> Any:
    if len(node_args) == 1 and isinstance(node_args[0], (list, tuple)):
        return node_args[0]
    return node_args


@register_method("view", "reshape")
def view_method(g, node, args: list, kwargs: dict) -> L:
    x = _tensor(node, args[0])
    if len(args) == 2 and isinstance(args[1], L):  # x.view(dtype) is not a reshape
        raise Unsupported(f"{node.name}: view with a tensor argument")
    return reshape(g, node, x, _shape_args(args[1:]) if len(args) > 1 else kwargs.get("shape"))


@register_function(__import__("torch").reshape)
def reshape_function(g, node, args: list, kwargs: dict) -> L:
    return reshape(g, node, _tensor(node, args[0]), args[1] if len(args) > 1 else kwargs.get("shape"))


@register_method("reshape_as", "view_as")
def reshape_as_method(g, node, args: list, kwargs: dict) -> L:
    x, other = _tensor(node, args[0]), args[1]
    if not isinstance(other, L):
        raise Unsupported(f"{node.name}: reshape_as of an unknown value")
    spec = [_shape(g, other, node.args[1]).size(d) for d in range(len(other.shape))]
    return reshape(g, node, x, spec)


@register_method("flatten", "squeeze", "unsqueeze")
def flatten_method(g, node, args: list, kwargs: dict) -> L:
    return reshape(g, node, _tensor(node, args[0]), None)


@register_function(__import__("torch").flatten, __import__("torch").squeeze, __import__("torch").unsqueeze)
def flatten_function(g, node, args: list, kwargs: dict) -> L:
    return reshape(g, node, _tensor(node, args[0]), None)


@register_module(nn.Flatten, nn.Unflatten)
def flatten_module(g, node, m: nn.Module, args: list, kwargs: dict) -> L:
    return reshape(g, node, _tensor(node, args[0]), None)


def permute(g, node, x: L, kind: str, dims: list) -> L:
    shape = g.meta_shape(node)
    n = len(x.shape)
    if kind == "transpose":
        a, b = int(dims[0]) % n, int(dims[1]) % n
        perm = list(range(n))
        perm[a], perm[b] = perm[b], perm[a]
    else:
        dims = dims[0] if len(dims) == 1 and isinstance(dims[0], (list, tuple)) else dims
        perm = [int(d) % n for d in dims]
    batched = x.batched
    if batched and perm[0] != 0:
        batched = False  # the batch axis moved (qkv.permute(2, 0, 3, 1, 4)): no longer tracked
    return L(np.transpose(x.arr, perm), shape, batched)


@register_method("permute", "transpose")
def permute_method(g, node, args: list, kwargs: dict) -> L:
    dims = list(args[1:]) or [kwargs.get("dims") or (kwargs.get("dim0"), kwargs.get("dim1"))]
    return permute(g, node, _tensor(node, args[0]), node.target, dims)


@register_function(__import__("torch").transpose, __import__("torch").permute)
def permute_function(g, node, args: list, kwargs: dict) -> L:
    return permute(g, node, _tensor(node, args[0]), node.target.__name__, list(args[1:]))


@register_method("expand", "expand_as")
def expand_method(g, node, args: list, kwargs: dict) -> L:
    x = _tensor(node, args[0])
    shape = g.meta_shape(node)
    arr = x.arr.reshape((1,) * (len(shape) - x.arr.ndim) + x.arr.shape)
    return L(arr, shape, True)


@register_method("size")
def size_method(g, node, args: list, kwargs: dict) -> Any:
    x = args[0]
    if not isinstance(x, L):
        return None
    shape = _shape(g, x, node.args[0])
    dim = args[1] if len(args) > 1 else kwargs.get("dim")
    return shape if dim is None else shape.size(int(dim))


@register_method("dim", "numel", "ndimension", "nelement")
def scalar_method(g, node, args: list, kwargs: dict) -> Any:
    return None


@register_function(getattr)
def getattr_function(g, node, args: list, kwargs: dict) -> Any:
    x, attr = args[0], args[1]
    if isinstance(x, L) and attr == "shape":
        return _shape(g, x, node.args[0])
    if isinstance(x, L) and attr in ("dtype", "device", "ndim", "is_cuda"):
        return None
    if isinstance(x, L) and attr in ("T", "mT"):
        raise Unsupported(f"{node.name}: .{attr}")
    if not g.has_tensor(node):
        return None
    raise Unsupported(f"{node.name}: getattr {attr}")


_tensor = tensor_arg


def _shape(g, x: L, source) -> Shape:
    """The shape of `x`, with labels by class (atoms already unified are one label)."""
    return Shape(L(compress_arr(g.roots(x.arr)), x.shape, x.batched), source)


def shape_value(value: Any, concrete: Any) -> Any:
    """A Python value computed from shapes that tracing fixed from the example input: `concrete`."""
    return concrete


@register_function(shape_value)
def shape_value_function(g, node, args: list, kwargs: dict) -> Any:
    """Control flow or a plain number taken from a pruned width would not follow it: keep it whole."""
    value = args[0]
    if isinstance(value, L):
        raise Unsupported(f"{node.name}: a tensor's value decides the traced path")
    if isinstance(value, Size) and value.atoms is not None:
        g.atoms.fix(value.atoms, f"{node.name}: a value computed from a pruned width is fixed when tracing")
    return value_of(args[1])
