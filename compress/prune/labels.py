"""The values the dependency analysis computes for every traced node.

A tensor is interpreted as `L`, a label array of the same rank (each axis full size or 1, i.e.
broadcast) that says which *atom* (one output channel of a layer, one entry of a parameter) every
element belongs to. A parameter read from a module (`get_attr`) is a `P` until an op consumes it: the
layer handlers (conv / linear / norms, module or functional form) slice it along the axis it scales,
every other op sees its default labels. A size read from a tensor's shape is a `Size`, which keeps
the labels of the axis it was read from through arithmetic, so a reshape to that size stays tied to
that tensor. `Atoms` is the union-find over atoms; its classes are the units that can be removed.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import fx

NONE = -1  # label of an element that belongs to no atom (input data, constants)


class Unsupported(Exception):
    """An op the analysis does not understand: its inputs' channels are left whole."""


@dataclass
class L:
    """Labels of a tensor: `arr` has the tensor's rank, each axis full size or 1 (broadcast)."""

    arr: np.ndarray
    shape: tuple[int, ...]
    batched: bool = True


@dataclass
class P:
    """A parameter or buffer read from a module, not yet interpreted: `owner.attr` of `shape`."""

    owner: str
    attr: str
    shape: tuple[int, ...]
    is_param: bool
    node: fx.Node


@dataclass
class Size:
    """An int read from a tensor's shape (`x.shape[2]`, `x.size(1)`), possibly through arithmetic.

    `atoms` are the labels along the axis it was read from (None when that axis carries no atoms);
    `derived` is False for the size itself and True once arithmetic (`C // heads`) changed it;
    `source` is the node of the tensor it was read from; `scale` is k when the value is exactly k x
    that axis's size (products with sizes of axes without channels, `B * C * n_h`), else None.
    """

    value: int
    atoms: np.ndarray | None
    derived: bool
    source: fx.Node | None
    scale: int | None = None

    def __index__(self) -> int:
        return int(self.value)


@dataclass
class Shape:
    """`x.shape` / `x.size()`: indexing it gives a `Size`."""

    labels: L
    source: fx.Node

    def size(self, axis: int) -> Size:
        axis = axis % len(self.labels.shape)
        arr = self.labels.arr
        atoms = None
        if arr.shape[axis] > 1:
            other = [d for d in range(arr.ndim) if d != axis]
            rows = np.moveaxis(arr, axis, 0).reshape(arr.shape[axis], -1)
            atoms = rows[:, 0].copy() if not other or rows.shape[1] == 1 else rows.max(axis=1)
            if (atoms < 0).all():
                atoms = None
        return Size(int(self.labels.shape[axis]), atoms, False, self.source, 1 if atoms is not None else None)


def tensor_arg(node: fx.Node, x: Any) -> L:
    """`x` if it is a tensor's labels; otherwise the op is not understood."""
    if not isinstance(x, L):
        raise Unsupported(f"{node.name}: {getattr(node.target, '__name__', node.target)} of a non-tensor")
    return x


def value_of(v: Any) -> Any:
    """The plain Python value of a (possibly nested) Size."""
    if isinstance(v, Size):  # a quotient stays a float (`math.ceil(H / patch)`)
        return v.value if isinstance(v.value, float) else int(v.value)
    if isinstance(v, (list, tuple)):
        return type(v)(value_of(x) for x in v)
    return v


def compress_arr(arr: np.ndarray) -> np.ndarray:
    """Collapse every axis whose labels are all equal to size 1."""
    for ax in range(arr.ndim):
        if arr.shape[ax] > 1:
            first = arr.take([0], axis=ax)
            if (arr == first).all():
                arr = first
    return arr


def atoms_of(value: Any) -> list[np.ndarray]:
    out: list[np.ndarray] = []
    if isinstance(value, L):
        a = np.unique(value.arr)
        out.append(a[a >= 0])
    elif isinstance(value, (list, tuple)):
        for v in value:
            out.extend(atoms_of(v))
    elif isinstance(value, dict):
        for v in value.values():
            out.extend(atoms_of(v))
    return out


def blank_from_meta(meta: Any) -> Any:
    if meta is None:
        return None
    if hasattr(meta, "shape"):
        shape = tuple(int(s) for s in meta.shape)
        return L(np.full([1] * len(shape), NONE, dtype=np.int64), shape, True)
    if isinstance(meta, (list, tuple)):
        return type(meta)(blank_from_meta(m) for m in meta) if not hasattr(meta, "_fields") else None
    return None


def channel_labels(shape: tuple[int, ...], dim: int, atoms: np.ndarray, batched: bool) -> L:
    dim = dim % len(shape)
    s = [1] * len(shape)
    s[dim] = shape[dim]
    return L(atoms.reshape(s), shape, batched)


def bshape(arrs: list[np.ndarray], shape: tuple[int, ...]) -> tuple[int, ...]:
    return tuple(max(a.shape[d] for a in arrs) for d in range(len(shape)))


def factorize(a: tuple[int, ...], b: tuple[int, ...]) -> list[tuple[list[int], list[int]]] | None:
    """Group the axes of two shapes of equal numel into matching products (reshape = merges + splits)."""
    ia = [i for i, s in enumerate(a) if s != 1]
    ib = [j for j, s in enumerate(b) if s != 1]
    groups = []
    i = j = 0
    while i < len(ia) and j < len(ib):
        gi, gj = [ia[i]], [ib[j]]
        pa, pb = a[ia[i]], b[ib[j]]
        while pa != pb:
            if pa < pb:
                i += 1
                if i >= len(ia):
                    return None
                gi.append(ia[i])
                pa *= a[ia[i]]
            else:
                j += 1
                if j >= len(ib):
                    return None
                gj.append(ib[j])
                pb *= b[ib[j]]
        groups.append((gi, gj))
        i += 1
        j += 1
    if i != len(ia) or j != len(ib):
        return None
    return groups


def is_tensor_meta(node: fx.Node) -> bool:
    meta = node.meta.get("tensor_meta")
    return meta is not None and hasattr(meta, "shape")


class Atoms:
    """Union-find over atoms, with the reasons why a class is fixed (kept whole)."""

    def __init__(self) -> None:
        self.parent: list[int] = []
        self.space: list[int] = []
        self.fixed: dict[int, list[str]] = {}

    def new(self, n: int, space: int) -> np.ndarray:
        start = len(self.parent)
        self.parent.extend(range(start, start + n))
        self.space.extend([space] * n)
        return np.arange(start, start + n, dtype=np.int64)

    def find(self, a: int) -> int:
        p = self.parent
        root = a
        while p[root] != root:
            root = p[root]
        while p[a] != root:
            p[a], a = root, p[a]
        return root

    def roots(self) -> np.ndarray:
        """The root of every atom (vectorised path halving: a few passes over the parent array)."""
        p = np.asarray(self.parent, dtype=np.int64)
        while True:
            q = p[p]
            if np.array_equal(q, p):
                return p
            p = q

    def union(self, a: int, b: int) -> None:
        ra, rb = self.find(int(a)), self.find(int(b))
        if ra == rb:
            return
        if rb < ra:
            ra, rb = rb, ra
        self.parent[rb] = ra
        if rb in self.fixed:
            merged = self.fixed.setdefault(ra, [])
            merged.extend(r for r in self.fixed.pop(rb) if r not in merged)

    def union_many(self, atoms: np.ndarray) -> int:
        atoms = np.unique(atoms[atoms >= 0])
        if atoms.size == 0:
            return NONE
        first = int(atoms[0])
        for a in atoms[1:]:
            self.union(first, int(a))
        return first

    def fix(self, atoms: np.ndarray | list, reason: str) -> None:
        for a in np.unique(np.asarray(atoms, dtype=np.int64).ravel()):
            if a >= 0:
                reasons = self.fixed.setdefault(self.find(int(a)), [])
                if reason not in reasons and len(reasons) < 8:
                    reasons.append(reason)

    def is_fixed(self, a: int) -> bool:
        return self.find(a) in self.fixed


def tensor_shape(t: Any) -> tuple[int, ...]:
    return tuple(int(s) for s in t.shape) if isinstance(t, torch.Tensor) else ()
