"""Indexing, concatenation and splits: labels move with the elements.

Concats along the channel axis stack the operands' labels (offset index maps for free). Splits and
chunks into equal parts tie the j-th channel of every part (the pruned model splits evenly again);
splits with literal sizes keep each part independent when the sizes are an attribute of the calling
module (`self.splits`, `self.width`), which is then updated after pruning. Slices that cover the
whole axis (`x[:, :self.out_chs]` in ghostnet) are identities; other literal positions fix the
channels they cut.
"""

from __future__ import annotations

import math
import operator
from typing import Any

import numpy as np
import torch
from torch import fx

from compress.prune.labels import L, Shape, Size, Unsupported, compress_arr, tensor_arg, value_of
from compress.prune.ops.registry import register_function, register_method


@register_function(operator.getitem)
def getitem(g, node: fx.Node, args: list, kwargs: dict) -> Any:
    x, idx = args[0], args[1]
    if isinstance(x, Shape):
        if isinstance(idx, slice):
            return tuple(x.size(i) for i in range(len(x.labels.shape))[idx])
        return x.size(int(value_of(idx)))
    if isinstance(x, (tuple, list)):
        if isinstance(idx, Size):
            idx = int(idx.value)
        if isinstance(idx, slice):
            return x[idx]
        if not isinstance(idx, int):
            raise Unsupported("getitem with a non-int index")
        return x[idx]
    if not isinstance(x, L):
        if not g.has_tensor(node):
            return None
        raise Unsupported("getitem on an unknown value")
    if isinstance(idx, L):
        return gather(g, node, x, idx)
    return index_tensor(g, node, x, idx)


def gather(g, node: fx.Node, x: L, idx: L) -> L:
    """`table[index_tensor]` along the first axis (swin's relative position bias): fine when that
    axis carries no labels and the index is a constant."""
    shape = g.meta_shape(node)
    if x.arr.shape[0] > 1 or (idx.arr >= 0).any():
        raise Unsupported("tensor indexing")
    arr = x.arr.reshape((1,) * (len(shape) - x.arr.ndim + 1) + x.arr.shape[1:])
    return L(arr, shape, False)


def _full_slice(i: slice, size: int) -> bool:
    start, stop, step = (value_of(v) for v in (i.start, i.stop, i.step))
    return start in (None, 0) and step in (None, 1) and (stop is None or (isinstance(stop, int) and stop >= size))


def index_tensor(g, node: fx.Node, x: L, idx: Any) -> L:
    shape = g.meta_shape(node)
    idx = idx if isinstance(idx, tuple) else (idx,)
    if any(i is Ellipsis for i in idx):
        k = idx.index(Ellipsis)
        fill = len(x.shape) - (len(idx) - 1 - sum(i is None for i in idx))
        idx = idx[:k] + (slice(None),) * fill + idx[k + 1 :]
    arr = compress_arr(g.roots(x.arr))  # by class: unified atoms along an axis do not vary
    out_idx: list[Any] = []
    d = 0
    for i in idx:
        if i is None:
            out_idx.append(None)
            continue
        if isinstance(i, Size):
            i = int(i.value)
        if isinstance(i, slice):
            i = slice(*(value_of(v) for v in (i.start, i.stop, i.step)))
        if isinstance(i, (fx.Node, L, list, torch.Tensor)) or (
            isinstance(i, slice) and any(isinstance(v, (fx.Node, L)) for v in (i.start, i.stop, i.step))
        ):
            raise Unsupported("tensor indexing")
        if isinstance(i, slice) and _full_slice(i, x.shape[d]):
            i = slice(None)
        if d == 0 and x.batched and i != slice(None):
            raise Unsupported("indexing the batch axis")
        full = arr.shape[d] == x.shape[d] and x.shape[d] > 1
        if full and i != slice(None):
            g.atoms.fix(arr, f"{node.name}: indexing with literal positions along coupled channels")
        if arr.shape[d] == 1:
            out_idx.append(0 if isinstance(i, int) else slice(None))
        else:
            out_idx.append(i)
        d += 1
    out = arr[tuple(out_idx)]
    if out.ndim != len(shape):
        raise Unsupported("indexing result of unexpected rank")
    return L(compress_arr(np.ascontiguousarray(out)), shape, x.batched)


@register_function(torch.cat, torch.concat, torch.concatenate)
def cat(g, node: fx.Node, args: list, kwargs: dict) -> L:
    tensors = args[0]
    dim = int(value_of(kwargs.get("dim", kwargs.get("axis", args[1] if len(args) > 1 else 0))))
    shape = g.meta_shape(node)
    if not isinstance(tensors, (list, tuple)) or not all(isinstance(t, L) for t in tensors):
        raise Unsupported("cat of non-tensors")
    dim = dim % len(shape)
    batched = any(t.batched for t in tensors)
    if dim == 0 and batched:
        raise Unsupported("cat along the batch axis")
    lab = [max(t.arr.shape[d] for t in tensors) if d != dim else None for d in range(len(shape))]
    parts = []
    for t in tensors:
        s = tuple(t.shape[d] if d == dim else lab[d] for d in range(len(shape)))
        parts.append(np.broadcast_to(t.arr, s))
    return L(compress_arr(np.concatenate(parts, axis=dim)), shape, batched)


def split(g, node: fx.Node, x: L, kind: str, spec: Any, dim: int) -> tuple:
    dim = int(value_of(dim)) % len(x.shape)
    size = x.shape[dim]
    raw = spec
    spec = value_of(spec)
    if kind == "chunk":
        n = int(spec)
        per = math.ceil(size / n)
        sizes = [per] * (size // per) + ([size % per] if size % per else [])
    elif isinstance(spec, int):
        sizes = [spec] * (size // spec) + ([size % spec] if size % spec else [])
    else:
        sizes = [int(s) for s in spec]
    varying = x.arr.shape[dim] > 1
    if varying:
        even = len(set(sizes)) == 1
        follows = kind == "chunk" or isinstance(raw, Size) and raw.source is node.args[0]
        if even and len(sizes) > 1:
            # the parts stay equal after pruning: tie the j-th entries of every part
            blocks = x.arr.reshape(x.arr.shape[:dim] + (len(sizes), sizes[0]) + x.arr.shape[dim + 1 :])
            for j in range(sizes[0]):
                g.tie(np.take(blocks, j, axis=dim + 1).ravel(), f"{node.name}: chunk of fixed channels")
            if not follows:  # an int part size: it must shrink with the parts
                part = np.take(blocks, 0, axis=dim)
                part = np.moveaxis(part, dim, 0).reshape(sizes[0], -1)[:, 0]
                ref, mult = g.find_attr(node, int(spec)), 1
                if ref is None:  # cspnet: x.split(self.expand_chs // 2)
                    ref, mult = g.find_attr(node, int(spec) * len(sizes)), len(sizes)
                if ref is None:
                    g.atoms.fix(x.arr, f"{node.name}: split with literal sizes")
                else:
                    g.bind_count(ref, part, mult)
        elif len(sizes) > 1:
            ref = g.find_attr(node, list(sizes)) if isinstance(spec, (list, tuple)) else None
            if ref is None:
                g.atoms.fix(x.arr, f"{node.name}: split with literal sizes")
            else:
                flat = np.moveaxis(x.arr, dim, 0).reshape(size, -1)[:, 0]
                bounds = np.cumsum([0] + sizes)
                g.bind_count(ref, [flat[bounds[k] : bounds[k + 1]] for k in range(len(sizes))])
    outs, start = [], 0
    for s in sizes:
        arr = np.take(x.arr, range(start, start + s), axis=dim) if varying else x.arr
        shp = list(x.shape)
        shp[dim] = s
        outs.append(L(arr, tuple(shp), x.batched))
        start += s
    return tuple(outs)


def _dim(args: list, kwargs: dict, pos: int) -> Any:
    return kwargs.get("dim", args[pos] if len(args) > pos else 0)


@register_function(torch.chunk, torch.split)
def split_function(g, node, args: list, kwargs: dict) -> tuple:
    x = tensor_arg(node, args[0])
    spec = args[1] if len(args) > 1 else kwargs.get("chunks", kwargs.get("split_size_or_sections"))
    return split(g, node, x, node.target.__name__, spec, _dim(args, kwargs, 2))


@register_method("chunk", "split")
def split_method(g, node, args: list, kwargs: dict) -> tuple:
    x = tensor_arg(node, args[0])
    spec = args[1] if len(args) > 1 else kwargs.get("chunks", kwargs.get("split_size"))
    return split(g, node, x, node.target, spec, _dim(args, kwargs, 2))


def unbind(g, node, x: L, dim: int) -> tuple:
    dim = int(value_of(dim)) % len(x.shape)
    if x.batched and dim == 0:
        raise Unsupported("unbind along the batch axis")
    if x.arr.shape[dim] > 1:  # the unbound axis keeps its size: what lines up across it goes together
        rows = np.moveaxis(x.arr, dim, -1).reshape(-1, x.arr.shape[dim])
        for row in np.unique(rows, axis=0):
            g.tie(row, f"{node.name}: unbind across fixed channels")
    shp = tuple(s for d, s in enumerate(x.shape) if d != dim)
    outs = []
    for i in range(x.shape[dim]):
        arr = np.take(x.arr, i if x.arr.shape[dim] > 1 else 0, axis=dim)
        outs.append(L(arr, shp, x.batched))
    return tuple(outs)


@register_method("unbind")
def unbind_method(g, node, args: list, kwargs: dict) -> tuple:
    return unbind(g, node, tensor_arg(node, args[0]), _dim(args, kwargs, 1))


@register_function(torch.unbind)
def unbind_function(g, node, args: list, kwargs: dict) -> tuple:
    return unbind(g, node, tensor_arg(node, args[0]), _dim(args, kwargs, 1))
