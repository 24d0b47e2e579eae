"""Pooling, reductions and softmax: fine along unlabelled axes, fixing when they mix channels."""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from compress.prune.labels import L, Unsupported, blank_from_meta, tensor_arg, value_of
from compress.prune.ops.registry import register_function, register_method, register_module

POOL_MODULES = (
    nn.AdaptiveAvgPool2d,
    nn.AdaptiveMaxPool2d,
    nn.AvgPool2d,
    nn.MaxPool2d,
    nn.AdaptiveAvgPool1d,
    nn.AdaptiveMaxPool1d,
    nn.AvgPool1d,
    nn.MaxPool1d,
    nn.Upsample,
    nn.ZeroPad2d,
    nn.ConstantPad2d,
    nn.ReflectionPad2d,
    nn.ReplicationPad2d,
)
POOL_FUNCS = (
    F.adaptive_avg_pool2d,
    F.adaptive_max_pool2d,
    F.avg_pool2d,
    F.max_pool2d,
    F.interpolate,
    F.adaptive_avg_pool1d,
    F.adaptive_max_pool1d,
    F.avg_pool1d,
    F.max_pool1d,
    torch.nn.functional.pad,
    torch.roll,
)


def pool(g, node, x: L, reason: str) -> L:
    """A spatial op (pooling, pad, roll, resize): labels along axes >= 2 cannot survive it."""
    shape = g.meta_shape(node)
    if any(x.arr.shape[d] > 1 for d in range(2, x.arr.ndim)) and len(shape) == x.arr.ndim:
        return _fix(g, node, x, reason)
    if len(shape) != x.arr.ndim:
        raise Unsupported(f"{node.name}: pooling of unexpected rank")
    arr = x.arr.reshape(x.arr.shape[:2] + (1,) * (len(shape) - 2))
    return L(arr, shape, x.batched)


def _fix(g, node, x: L, reason: str) -> Any:
    g.atoms.fix(x.arr, reason)
    return blank_from_meta(node.meta.get("tensor_meta"))


@register_module(*POOL_MODULES)
def pool_module(g, node, m: nn.Module, args: list, kwargs: dict) -> L:
    return pool(g, node, tensor_arg(node, args[0]), f"{node.target}: pooling across channels")


@register_function(*POOL_FUNCS)
def pool_function(g, node, args: list, kwargs: dict) -> L:
    if not isinstance(args[0], L):
        raise Unsupported(f"{node.name}: input is not a tensor")
    if node.target in (torch.roll, torch.nn.functional.pad):
        return shift(g, node, args, kwargs)
    return pool(g, node, args[0], f"{getattr(node.target, '__name__', node.target)} across channels")


def shift(g, node, args: list, kwargs: dict) -> L:
    """torch.roll / F.pad: positions move along the axes named; labels along other axes stay."""
    x = args[0]
    shape = g.meta_shape(node)
    n = len(x.shape)
    if node.target is torch.roll:
        dims = value_of(kwargs.get("dims", args[2] if len(args) > 2 else None))
        dims = list(range(n)) if dims is None else [dims] if isinstance(dims, int) else list(dims)
    else:
        pad = value_of(kwargs.get("pad", args[1] if len(args) > 1 else ()))
        dims = [n - 1 - k for k in range(len(pad) // 2) if pad[2 * k] or pad[2 * k + 1]]
    dims = [d % n for d in dims]
    if any(x.arr.shape[d] > 1 for d in dims):
        return _fix(g, node, x, f"{node.name}: shift / pad across coupled channels")
    return L(x.arr, shape, x.batched)


def reduce(g, node, x: L, args: list, kwargs: dict) -> Any:
    shape = g.meta_shape(node)
    dims = value_of(kwargs.get("dim", args[0] if args else None))
    keepdim = kwargs.get("keepdim", args[1] if len(args) > 1 else False)
    n = len(x.shape)
    dims = list(range(n)) if dims is None else [dims] if isinstance(dims, int) else list(dims)
    dims = [d % n for d in dims]
    if any(x.arr.shape[d] > 1 for d in dims):
        g.atoms.fix(x.arr, f"{node.name}: reduction across coupled channels")
        return blank_from_meta(node.meta.get("tensor_meta"))
    arr = x.arr if keepdim else x.arr.reshape([s for d, s in enumerate(x.arr.shape) if d not in dims])
    if arr.ndim != len(shape):
        raise Unsupported("reduction of unexpected rank")
    return L(arr, shape, x.batched and 0 not in dims)


@register_function(torch.mean, torch.sum, torch.amax, torch.amin)
def reduce_function(g, node, args: list, kwargs: dict) -> Any:
    return reduce(g, node, tensor_arg(node, args[0]), args[1:], kwargs)


@register_method("mean", "sum", "amax", "amin")
def reduce_method(g, node, args: list, kwargs: dict) -> Any:
    return reduce(g, node, tensor_arg(node, args[0]), args[1:], kwargs)


def softmax(g, x: L, dim: int, name: str) -> L:
    if x.arr.shape[int(value_of(dim)) % len(x.shape)] > 1:
        g.atoms.fix(x.arr, f"{name}: softmax across coupled channels")
    return x


@register_module(nn.Softmax, nn.LogSoftmax)
def softmax_module(g, node, m: nn.Module, args: list, kwargs: dict) -> L:
    if not isinstance(args[0], L):
        raise Unsupported(f"{node.target}: input is not a tensor")
    return softmax(g, args[0], m.dim if m.dim is not None else -1, node.target)


@register_function(F.softmax, torch.softmax, F.log_softmax)
def softmax_function(g, node, args: list, kwargs: dict) -> L:
    if not isinstance(args[0], L):
        raise Unsupported(f"{node.name}: input is not a tensor")
    return softmax(g, args[0], kwargs.get("dim", args[1] if len(args) > 1 else -1), node.name)


@register_method("softmax", "log_softmax")
def softmax_method(g, node, args: list, kwargs: dict) -> L:
    if not isinstance(args[0], L):
        raise Unsupported(f"{node.name}: input is not a tensor")
    return softmax(g, args[0], kwargs.get("dim", args[1] if len(args) > 1 else -1), node.target)


@register_function(F.normalize)
def normalize_function(g, node, args: list, kwargs: dict) -> L:
    """x / ||x|| along `dim`: across channels it mixes them like a norm (not exactly checkable)."""
    x = tensor_arg(node, args[0])
    dim = int(value_of(kwargs.get("dim", args[2] if len(args) > 2 else 1))) % len(x.shape)
    if x.arr.shape[dim] > 1:
        g.normed.append(g.index_atoms(x, dim, f"{node.name}: mixed channels"))
    return x
