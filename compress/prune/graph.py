"""Channel dependency analysis from the traced graph, and physical channel removal.

The network is traced with `torch.fx` (submodules that cannot be traced become opaque leaves) and run
once with shape propagation. Every output channel of a conv / linear (and every entry of a parameter
used directly in the graph, such as a layer scale or a position embedding) is an *atom*. Each tensor
carries a label array of the same rank (each axis full size or 1, i.e. broadcast) that says which atom
every element belongs to, and every op is interpreted on those labels:

* elementwise ops (residual adds, squeeze-excitation gates) unify the atoms they line up;
* concats and splits move labels around (offset index maps come out of that for free);
* reshapes (flatten -> linear, channel shuffle) are followed as merges and splits, and the axes whose
  size is a literal in the code are unified so that the pruned model reshapes consistently;
* depthwise / grouped convs and GroupNorm tie each block of input channels to its output channels,
  so whole blocks are removed and `groups` shrinks;
* anything not understood (an unknown op, a fused attention, a reshape with literal sizes, the model
  output) fixes the atoms it touches, with the reason recorded.

The union-find classes of atoms that are not fixed are the units that can be removed; a *group* is a
set of producer layers whose channels are coupled. Removal slices every parameter slot that carries
the class's atoms and rebuilds the layers with their new sizes, so tensors, checkpoints, ONNX files
and MACs all shrink. Torch-Pruning's DepGraph (Fang et al., CVPR 2023) is the public reference for
this grouping; the label-propagation formulation here is our own.
"""

from __future__ import annotations

import fnmatch
import math
import operator
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import fx, nn
from torch.fx.passes.shape_prop import ShapeProp

from compress.errors import ModelError

NONE = -1  # label of an element that belongs to no atom (input data, constants)

_ACT_MODULES = (
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
    nn.PReLU,
    nn.Hardtanh,
    nn.SELU,
)
_POOL_MODULES = (
    nn.AdaptiveAvgPool2d,
    nn.AdaptiveMaxPool2d,
    nn.AvgPool2d,
    nn.MaxPool2d,
    nn.AdaptiveAvgPool1d,
    nn.AvgPool1d,
    nn.MaxPool1d,
    nn.Upsample,
)
_UNARY_FUNCS = {
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
    F.hardtanh,
    torch.relu,
    torch.sigmoid,
    torch.tanh,
    torch.exp,
    torch.abs,
    operator.neg,
    torch.neg,
    torch.clone,
    torch.nn.functional.relu_,
}
_UNARY_METHODS = {
    "relu",
    "relu_",
    "sigmoid",
    "sigmoid_",
    "tanh",
    "contiguous",
    "clone",
    "float",
    "to",
    "type_as",
    "neg",
    "abs",
    "exp",
    "detach",
    "clamp",
    "clamp_",
    "clamp_min",
    "half",
    "double",
    "hardswish",
}
_BINARY_FUNCS = {
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
}
_BINARY_METHODS = {"add", "add_", "mul", "mul_", "sub", "sub_", "div", "div_"}
_POOL_FUNCS = {
    F.adaptive_avg_pool2d,
    F.adaptive_max_pool2d,
    F.avg_pool2d,
    F.max_pool2d,
    F.interpolate,
    F.adaptive_avg_pool1d,
    F.avg_pool1d,
    F.max_pool1d,
}
_SHAPE_METHODS = {"size", "dim", "numel"}


def _passthrough_function_names() -> set[str]:
    return {"stochastic_depth", "drop_block2d"}


# --------------------------------------------------------------------------------------------- labels
@dataclass
class _L:
    """Labels of a tensor: `arr` has the tensor's rank, each axis full size or 1 (broadcast)."""

    arr: np.ndarray
    shape: tuple[int, ...]
    batched: bool = True


def _compress(arr: np.ndarray) -> np.ndarray:
    for ax in range(arr.ndim):
        if arr.shape[ax] > 1:
            first = arr.take([0], axis=ax)
            if (arr == first).all():
                arr = first
    return arr


def _atoms_of(value: Any) -> list[np.ndarray]:
    out: list[np.ndarray] = []
    if isinstance(value, _L):
        a = np.unique(value.arr)
        out.append(a[a >= 0])
    elif isinstance(value, (list, tuple)):
        for v in value:
            out.extend(_atoms_of(v))
    elif isinstance(value, dict):
        for v in value.values():
            out.extend(_atoms_of(v))
    return out


@dataclass
class Slot:
    """One parameter axis whose entries follow atoms: `module.param` sliced along `dim`."""

    module: str
    param: str
    dim: int
    atoms: np.ndarray
    role: str  # "out" (producer rows), "in" (consumer columns), "norm", "param"


@dataclass
class Layer:
    """A conv / linear call, for MAC estimates: macs = out_kept * in_kept_per_group * factor."""

    module: str
    out_slot: int
    in_slot: int | None  # None for grouped convs (inputs per group do not change)
    in_per_group: int
    factor: int  # kernel elements x output positions
    positions: int = 1  # output positions per sample (spatial size or tokens)


@dataclass
class Group:
    """Producer layers whose output channels are coupled, and what may be removed from them."""

    index: int
    modules: list[str]
    classes: list[int]  # all classes (prunable and fixed)
    prunable: list[int]
    channels: int  # atoms of the first producer
    reasons: list[str] = field(default_factory=list)

    @property
    def name(self) -> str:
        return self.modules[0] if self.modules else f"group{self.index}"


class _Atoms:
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


# ------------------------------------------------------------------------------------------- tracing
class _Tracer(fx.Tracer):
    def __init__(self, leaves: set[str]) -> None:
        super().__init__()
        self.leaves = leaves

    def is_leaf_module(self, m: nn.Module, qualname: str) -> bool:
        return qualname in self.leaves or super().is_leaf_module(m, qualname)


def trace(module: nn.Module) -> tuple[fx.GraphModule, list[str]]:
    """Trace `module` with torch.fx; submodules that cannot be traced become opaque leaves."""
    leaves: set[str] = set()
    for _ in range(50):
        try:
            graph = _Tracer(leaves).trace(module)
            return fx.GraphModule(module, graph), sorted(leaves)
        except Exception:  # any tracing failure: find the smallest untraceable submodule
            culprit = _untraceable(module, "", leaves)
            if culprit is None or culprit == "" or culprit in leaves:
                raise ModelError(
                    f"cannot trace {type(module).__name__} with torch.fx (its own forward has data-dependent "
                    "control flow); structured pruning needs a traceable model"
                ) from None
            leaves.add(culprit)
    raise ModelError(f"cannot trace {type(module).__name__}: too many untraceable submodules")


def _untraceable(module: nn.Module, prefix: str, leaves: set[str]) -> str | None:
    sub_leaves = {q[len(prefix) + 1 :] if prefix else q for q in leaves if q.startswith(prefix)}
    try:
        _Tracer(sub_leaves).trace(module)
        return None
    except Exception:  # noqa: BLE001 - probing which submodule fails
        pass
    for name, child in module.named_children():
        q = f"{prefix}.{name}" if prefix else name
        if q in leaves:
            continue
        found = _untraceable(child, q, leaves)
        if found is not None:
            return found
    return prefix


# ------------------------------------------------------------------------------------------ analysis
class DependencyGraph:
    """The coupled-channel structure of a network (see module docstring).

    Attributes:
        module: the analysed network (pruned in place by `apply`).
        slots: parameter axes that follow atoms.
        layers: conv / linear calls for MAC estimates.
        groups: coupled producer layers with their prunable classes.
        opaque: submodules that could not be traced (left whole).
    """

    def __init__(self, module: nn.Module, input_shape: tuple[int, ...], *, ignore: list[str] | None = None):
        self.module = module
        self.input_shape = tuple(input_shape)
        self.ignore = list(ignore or [])
        self.atoms = _Atoms()
        self.slots: list[Slot] = []
        self.layers: list[Layer] = []
        self._spaces: list[str] = []
        self._module_slots: dict[tuple[str, str, int], int] = {}
        self._normed: list[np.ndarray] = []  # atoms normalised together (LayerNorm): not exactly checkable
        self.notes: list[str] = []
        was_training = module.training
        module.eval()
        try:
            self._analyse()
        finally:
            module.train(was_training)
        self._finalise()

    # ----------------------------------------------------------------------------------- tracing pass
    def _analyse(self) -> None:
        gm, self.opaque = trace(self.module)
        self.gm = gm
        example = torch.randn(2, *self.input_shape)
        placeholders = [n for n in gm.graph.nodes if n.op == "placeholder"]
        if len(placeholders) != 1:
            raise ModelError(f"structured pruning supports single-input models; this one takes {len(placeholders)}")
        with torch.no_grad():
            try:  # fake tensors: shapes without the arithmetic
                from torch._subclasses.fake_tensor import FakeTensorMode

                ShapeProp(gm, fake_mode=FakeTensorMode(allow_non_fake_inputs=True)).propagate(example)
            except Exception:  # noqa: BLE001 - fall back to a real forward pass
                try:
                    ShapeProp(gm).propagate(example)
                except Exception as e:  # noqa: BLE001 - a model that does not run on its input shape
                    raise ModelError(
                        f"the model does not run on input shape {self.input_shape}: {str(e).splitlines()[0][:200]}"
                    ) from None
        self.modules = dict(self.module.named_modules())
        out_node = next(n for n in gm.graph.nodes if n.op == "output")
        meta = out_node.args[0].meta.get("tensor_meta") if isinstance(out_node.args[0], fx.Node) else None
        self.output_shape = tuple(meta.shape[1:]) if hasattr(meta, "shape") else None
        env: dict[fx.Node, Any] = {}
        for node in gm.graph.nodes:
            try:
                env[node] = self._visit(node, env)
            except _Unsupported as e:
                self._fix_inputs(node, env, str(e))
                env[node] = self._blank(node)
        for pattern in self.ignore:
            hit = False
            for s in self.slots:
                if fnmatch.fnmatchcase(s.module, pattern):
                    self.atoms.fix(s.atoms, f"ignored ({pattern})")
                    hit = True
            if not hit:
                self.notes.append(f"ignore pattern '{pattern}' matched no prunable layer")

    def _blank(self, node: fx.Node) -> Any:
        meta = node.meta.get("tensor_meta")
        return _blank_from_meta(meta)

    def _fix_inputs(self, node: fx.Node, env: dict, reason: str) -> None:
        values = [env.get(a) for a in node.all_input_nodes]
        for arr in _atoms_of(values):
            self.atoms.fix(arr, reason)

    def _val(self, env: dict, a: Any) -> Any:
        if isinstance(a, fx.Node):
            return env[a]
        if isinstance(a, (list, tuple)):
            return type(a)(self._val(env, x) for x in a)
        return a

    def _visit(self, node: fx.Node, env: dict) -> Any:
        op = node.op
        if op == "placeholder":
            return _blank_from_meta(node.meta.get("tensor_meta"))
        if op == "get_attr":
            return self._get_attr(node)
        if op == "output":
            for arr in _atoms_of(self._val(env, node.args[0])):
                self.atoms.fix(arr, "reaches the model output")
            return None
        args = [self._val(env, a) for a in node.args]
        kwargs = {k: self._val(env, v) for k, v in node.kwargs.items()}
        if op == "call_module":
            return self._call_module(node, self.modules[node.target], args, kwargs)
        if op == "call_function":
            return self._call_function(node, node.target, args, kwargs)
        if op == "call_method":
            return self._call_method(node, node.target, args, kwargs)
        raise _Unsupported(f"unsupported node {op}")

    # ---------------------------------------------------------------------------------------- helpers
    def _meta_shape(self, node: fx.Node) -> tuple[int, ...]:
        meta = node.meta.get("tensor_meta")
        if meta is None or not hasattr(meta, "shape"):
            raise _Unsupported(f"'{node.name}' has no single tensor output")
        return tuple(int(s) for s in meta.shape)

    def _space(self, name: str) -> int:
        self._spaces.append(name)
        return len(self._spaces) - 1

    def _slot(self, module: str, param: str, dim: int, atoms: np.ndarray, role: str) -> int:
        key = (module, param, dim)
        if key in self._module_slots:  # a shared layer or parameter: the same index is the same channel
            idx = self._module_slots[key]
            old = self.slots[idx].atoms
            if old.shape != atoms.shape:
                self.atoms.fix(old, f"{module}.{param} is used with different shapes")
                self.atoms.fix(atoms, f"{module}.{param} is used with different shapes")
            else:
                for a, b in zip(old, atoms, strict=False):
                    if a >= 0 and b >= 0:
                        self.atoms.union(int(a), int(b))
                    elif a >= 0 or b >= 0:
                        self.atoms.fix([a, b], f"{module}.{param} is shared with fixed channels")
            return idx
        self.slots.append(Slot(module, param, dim, atoms, role))
        self._module_slots[key] = len(self.slots) - 1
        return len(self.slots) - 1

    def _producer(self, module: str, n: int) -> np.ndarray:
        key = (module, "weight", 0)
        if key in self._module_slots:
            return self.slots[self._module_slots[key]].atoms
        return self.atoms.new(n, self._space(module))

    def _index_atoms(self, x: _L, dim: int, reason: str) -> np.ndarray:
        """One atom per index along `dim`; atoms sharing an index elsewhere are unified."""
        dim = dim % len(x.shape)
        arr = np.broadcast_to(x.arr, tuple(x.shape[d] if d == dim else x.arr.shape[d] for d in range(len(x.shape))))
        rows = np.moveaxis(arr, dim, 0).reshape(x.shape[dim], -1)
        if rows.shape[1] == 1:
            return rows[:, 0].copy()
        out = np.full(rows.shape[0], NONE, dtype=np.int64)
        for i, row in enumerate(rows):
            u = np.unique(row)
            if u[0] < 0 and u.size > 1:
                self.atoms.fix(u, reason)
            out[i] = self.atoms.union_many(u) if u[-1] >= 0 else NONE
        return out

    def _roots(self, arr: np.ndarray) -> np.ndarray:
        """The class (union-find root) of every label, -1 kept."""
        uniq, inv = np.unique(arr, return_inverse=True)
        roots = np.array([self.atoms.find(int(u)) if u >= 0 else NONE for u in uniq], dtype=np.int64)
        return roots[inv].reshape(arr.shape)

    def _only_along(self, x: _L, dim: int, reason: str) -> None:
        """Fix atoms whose labels vary along axes other than `dim` (they cannot follow a new axis)."""
        dim = dim % len(x.shape)
        if all(x.arr.shape[d] == 1 for d in range(x.arr.ndim) if d != dim):
            return
        roots = self._roots(x.arr)  # atoms may differ along other axes as long as their classes do not
        if any(
            roots.shape[d] > 1 and not (roots == roots.take([0], axis=d)).all() for d in range(roots.ndim) if d != dim
        ):
            self.atoms.fix(x.arr, reason)

    def _channel_labels(self, shape: tuple[int, ...], dim: int, atoms: np.ndarray, batched: bool) -> _L:
        dim = dim % len(shape)
        s = [1] * len(shape)
        s[dim] = shape[dim]
        return _L(atoms.reshape(s), shape, batched)

    def _get_attr(self, node: fx.Node) -> _L:
        owner, _, attr = node.target.rpartition(".")
        value = self.gm.get_submodule(owner) if owner else self.gm
        tensor = getattr(value, attr)
        if not isinstance(tensor, torch.Tensor):
            raise _Unsupported(f"get_attr {node.target} is not a tensor")
        shape = tuple(tensor.shape)
        dims = [d for d, s in enumerate(shape) if s > 1]
        if not dims or not isinstance(tensor, nn.Parameter):
            return _L(np.full([1] * len(shape), NONE, dtype=np.int64), shape, False)
        dim = dims[-1]
        atoms = self.atoms.new(shape[dim], self._space(node.target))
        self._slot(owner, attr, dim, atoms, "param")
        return self._channel_labels(shape, dim, atoms, False)

    # ------------------------------------------------------------------------------------------ modules
    def _call_module(self, node: fx.Node, m: nn.Module, args: list, kwargs: dict) -> Any:
        name = node.target
        x = args[0] if args else None
        if isinstance(m, (nn.Conv1d, nn.Conv2d, nn.Conv3d)) and isinstance(x, _L):
            return self._conv(node, name, m, x)
        if isinstance(m, nn.Linear) and isinstance(x, _L):
            return self._linear(node, name, m, x)
        if isinstance(m, nn.modules.batchnorm._BatchNorm) and isinstance(x, _L):
            atoms = self._index_atoms(x, 1, f"{name}: mixed channels")
            if m.affine:
                self._slot(name, "weight", 0, atoms, "norm")
                self._slot(name, "bias", 0, atoms, "norm")
            if m.track_running_stats:
                self._slot(name, "running_mean", 0, atoms, "stat")
                self._slot(name, "running_var", 0, atoms, "stat")
            return x
        if isinstance(m, nn.LayerNorm) and isinstance(x, _L):
            if len(m.normalized_shape) != 1:
                raise _Unsupported(f"{name}: LayerNorm over several axes")
            atoms = self._index_atoms(x, -1, f"{name}: mixed channels")
            self._normed.append(atoms)
            if m.elementwise_affine:
                self._slot(name, "weight", 0, atoms, "norm")
                if m.bias is not None:
                    self._slot(name, "bias", 0, atoms, "norm")
            return x
        if isinstance(m, nn.GroupNorm) and isinstance(x, _L):
            atoms = self._index_atoms(x, 1, f"{name}: mixed channels")
            per = m.num_channels // m.num_groups
            for g in range(m.num_groups):
                self._tie(atoms[g * per : (g + 1) * per], f"{name}: GroupNorm group with fixed channels")
            if m.affine:
                self._slot(name, "weight", 0, atoms, "norm")
                self._slot(name, "bias", 0, atoms, "norm")
            return x
        if isinstance(m, _ACT_MODULES) and isinstance(x, _L):
            if isinstance(m, nn.PReLU) and m.num_parameters > 1:
                raise _Unsupported(f"{name}: per-channel PReLU")
            return x
        if isinstance(m, _POOL_MODULES) and isinstance(x, _L):
            return self._pool(node, x, f"{name}: pooling across channels")
        if isinstance(m, nn.Flatten) and isinstance(x, _L):
            return self._reshape(node, x, None)
        if isinstance(m, (nn.Softmax, nn.LogSoftmax)) and isinstance(x, _L):
            return self._softmax(x, m.dim if m.dim is not None else -1, name)
        if isinstance(m, nn.MultiheadAttention):
            raise _Unsupported(f"{name}: nn.MultiheadAttention (fused in_proj, embed_dim shared by q/k/v)")
        if name in self.opaque:
            raise _Unsupported(f"{name}: could not be traced (opaque)")
        raise _Unsupported(f"{name}: unknown layer {type(m).__name__}")

    def _tie(self, atoms: np.ndarray, reason: str) -> None:
        if (atoms < 0).any():
            self.atoms.fix(atoms, reason)
        self.atoms.union_many(atoms)

    def _conv(self, node: fx.Node, name: str, m: nn.Conv2d, x: _L) -> _L:
        out_shape = self._meta_shape(node)
        in_atoms = self._index_atoms(x, 1, f"{name}: mixed input channels")
        self._only_along(x, 1, f"{name}: input labels vary spatially")
        out_atoms = self._producer(name, m.out_channels)
        out_slot = self._slot(name, "weight", 0, out_atoms, "out")
        if m.bias is not None:
            self._slot(name, "bias", 0, out_atoms, "out")
        factor = int(np.prod(m.kernel_size)) * int(np.prod(out_shape[2:]))
        if m.groups == 1:
            in_slot = self._slot(name, "weight", 1, in_atoms, "in")
            self.layers.append(Layer(name, out_slot, in_slot, 0, factor, int(np.prod(out_shape[2:]))))
        else:
            gi, go = m.in_channels // m.groups, m.out_channels // m.groups
            for g in range(m.groups):
                self._tie(
                    np.concatenate([in_atoms[g * gi : (g + 1) * gi], out_atoms[g * go : (g + 1) * go]]),
                    f"{name}: grouped conv fed by fixed channels",
                )
            self.layers.append(Layer(name, out_slot, None, gi, factor, int(np.prod(out_shape[2:]))))
        return self._channel_labels(out_shape, 1, out_atoms, x.batched)

    def _linear(self, node: fx.Node, name: str, m: nn.Linear, x: _L) -> _L:
        out_shape = self._meta_shape(node)
        in_atoms = self._index_atoms(x, -1, f"{name}: mixed input features")
        self._only_along(x, -1, f"{name}: input labels vary along token axes")
        out_atoms = self._producer(name, m.out_features)
        out_slot = self._slot(name, "weight", 0, out_atoms, "out")
        if m.bias is not None:
            self._slot(name, "bias", 0, out_atoms, "out")
        in_slot = self._slot(name, "weight", 1, in_atoms, "in")
        tokens = int(np.prod(out_shape[:-1])) // out_shape[0]
        self.layers.append(Layer(name, out_slot, in_slot, 0, tokens, tokens))
        return self._channel_labels(out_shape, -1, out_atoms, x.batched)

    # -------------------------------------------------------------------------------------- functions
    def _call_function(self, node: fx.Node, fn: Any, args: list, kwargs: dict) -> Any:
        name = getattr(fn, "__name__", str(fn))
        x = args[0] if args else None
        if fn is operator.getitem:
            return self._getitem(node, x, args[1])
        if fn in _BINARY_FUNCS:
            return self._binary(node, args[0], args[1] if len(args) > 1 else kwargs.get("other"))
        if (fn in _UNARY_FUNCS or name in _passthrough_function_names()) and isinstance(x, _L):
            return x
        if fn in (torch.matmul, operator.matmul, torch.bmm) and isinstance(x, _L) and isinstance(args[1], _L):
            return self._matmul(node, x, args[1])
        if fn is torch.cat or fn is torch.concat:
            return self._cat(node, args[0], kwargs.get("dim", args[1] if len(args) > 1 else 0))
        if fn is torch.flatten and isinstance(x, _L):
            return self._reshape(node, x, None)
        if fn in (torch.reshape,) and isinstance(x, _L):
            return self._reshape(node, x, node.args[1])
        if fn in (torch.transpose, torch.permute) and isinstance(x, _L):
            return self._permute(node, x, fn.__name__, args[1:])
        if fn in _POOL_FUNCS and isinstance(x, _L):
            return self._pool(node, x, f"{name} across channels")
        if fn in (torch.chunk, torch.split) and isinstance(x, _L):
            return self._chunk(node, x, fn.__name__, args[1], kwargs.get("dim", args[2] if len(args) > 2 else 0))
        if fn in (torch.mean, torch.sum) and isinstance(x, _L):
            return self._reduce(node, x, args[1:], kwargs)
        if fn in (F.softmax, torch.softmax, F.log_softmax) and isinstance(x, _L):
            return self._softmax(x, kwargs.get("dim", args[1] if len(args) > 1 else -1), name)
        if fn is F.layer_norm and isinstance(x, _L):
            return self._functional_norm(node, x, args, kwargs)
        if fn is getattr and isinstance(x, _L) and args[1] in ("shape", "dtype", "device", "ndim"):
            return None
        if fn in (torch.squeeze, torch.unsqueeze) and isinstance(x, _L):
            return self._reshape(node, x, None)
        if not _atoms_of([args, kwargs]) and node.meta.get("tensor_meta") is None:
            return None
        raise _Unsupported(f"op {name} is not understood")

    def _call_method(self, node: fx.Node, method: str, args: list, kwargs: dict) -> Any:
        x = args[0]
        if not isinstance(x, _L):
            if method in _SHAPE_METHODS or node.meta.get("tensor_meta") is None:
                return None
            raise _Unsupported(f"method {method} on a non-tensor")
        if method in _SHAPE_METHODS:
            return None
        if method in _UNARY_METHODS:
            return x
        if method in _BINARY_METHODS:
            return self._binary(node, x, args[1] if len(args) > 1 else kwargs.get("other"))
        if method in ("view", "reshape"):
            shape_args = node.args[1:]
            if len(shape_args) == 1 and isinstance(shape_args[0], (list, tuple)):
                shape_args = shape_args[0]
            return self._reshape(node, x, shape_args)
        if method in ("flatten", "squeeze", "unsqueeze"):
            return self._reshape(node, x, None)
        if method in ("permute", "transpose"):
            return self._permute(node, x, method, args[1:])
        if method in ("chunk", "split"):
            return self._chunk(node, x, method, args[1], kwargs.get("dim", args[2] if len(args) > 2 else 0))
        if method in ("mean", "sum"):
            return self._reduce(node, x, args[1:], kwargs)
        if method in ("expand", "expand_as"):
            shape = self._meta_shape(node)
            arr = x.arr.reshape((1,) * (len(shape) - x.arr.ndim) + x.arr.shape)
            return _L(arr, shape, True)
        if method in ("matmul", "bmm") and isinstance(args[1], _L):
            return self._matmul(node, x, args[1])
        if method == "softmax":
            return self._softmax(x, kwargs.get("dim", args[1] if len(args) > 1 else -1), method)
        raise _Unsupported(f"method {method} is not understood")

    def _binary(self, node: fx.Node, a: Any, b: Any) -> Any:
        shape = self._meta_shape(node)
        ops = [v for v in (a, b) if isinstance(v, _L)]
        if not ops:
            return _blank_from_meta(node.meta.get("tensor_meta"))
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
                self.atoms.fix(arr, "broadcast against coupled channels")
            else:
                active.append(arr)
        if not active:
            return _blank_from_meta(node.meta.get("tensor_meta"))
        if len(active) == 1:
            return _L(
                _compress(np.broadcast_to(active[0], _bshape([active[0]], shape)).copy()),
                shape,
                any(v.batched for v in ops),
            )
        target = _bshape(active, shape)
        A = np.broadcast_to(active[0], target)
        B = np.broadcast_to(active[1], target)
        both = (A >= 0) & (B >= 0)
        if both.any():
            pairs = np.unique(np.stack([A[both], B[both]], 1), axis=0)
            for p, q in pairs:
                self.atoms.union(int(p), int(q))
        one = (A >= 0) ^ (B >= 0)
        if one.any():
            self.atoms.fix(np.concatenate([A[one], B[one]]), "added to / multiplied by a fixed tensor")
        out = np.where(A >= 0, A, B)
        return _L(_compress(out.copy()), shape, any(v.batched for v in ops))

    def _matmul(self, node: fx.Node, a: _L, b: _L) -> _L:
        """Batched matmul a[..., i, k] @ b[..., k, j] (attention scores and values).

        Supported: labels contracted over k in both operands (tied per batch position, e.g. one head),
        or b labelled along j with a constant per batch position (values); anything else is fixed.
        """
        shape = self._meta_shape(node)
        n = len(shape)
        if a.arr.ndim != n or b.arr.ndim != n or n < 3:
            raise _Unsupported("matmul of unexpected rank")
        if a.arr.shape[-2] > 1 or b.arr.shape[-1] > 1 and b.arr.shape[-2] > 1:
            raise _Unsupported("matmul with labels along rows")
        batch = tuple(max(a.arr.shape[d], b.arr.shape[d]) for d in range(n - 2))
        A = np.broadcast_to(a.arr, batch + a.arr.shape[-2:]).reshape(-1, a.arr.shape[-1])
        out_shape = list(batch) + [1, b.arr.shape[-1]]
        if b.arr.shape[-1] > 1:  # values: b labelled along j, a contributes one label per batch position
            B = np.broadcast_to(b.arr, batch + b.arr.shape[-2:]).reshape(len(A), -1)
            for row_a, row_b in zip(A, B, strict=True):
                ua = np.unique(row_a)
                if ua.size > 1:
                    raise _Unsupported("matmul with labels along the contraction and the columns")
                if ua[0] >= 0:
                    self._tie(np.concatenate([ua, row_b]), f"{node.name}: attention over fixed channels")
            return _L(_compress(B.reshape(out_shape).copy()), shape, a.batched or b.batched)
        B = np.broadcast_to(b.arr, batch + b.arr.shape[-2:]).reshape(len(A), -1)
        out = np.full(len(A), NONE, dtype=np.int64)
        for i, (row_a, row_b) in enumerate(zip(A, B, strict=True)):
            atoms = np.concatenate([row_a, row_b])
            if (atoms >= 0).any():
                self._tie(atoms, f"{node.name}: contraction over fixed channels")
                out[i] = atoms[atoms >= 0][0]
        if batch and all(s == 1 for s in batch) and (out >= 0).any():
            self.atoms.fix(out, f"{node.name}: contraction over channels without a batch axis")
        return _L(_compress(out.reshape(list(batch) + [1, 1]).copy()), shape, a.batched or b.batched)

    def _cat(self, node: fx.Node, tensors: Any, dim: int) -> _L:
        shape = self._meta_shape(node)
        if not isinstance(tensors, (list, tuple)) or not all(isinstance(t, _L) for t in tensors):
            raise _Unsupported("cat of non-tensors")
        dim = dim % len(shape)
        batched = any(t.batched for t in tensors)
        if dim == 0 and batched:
            raise _Unsupported("cat along the batch axis")
        lab = [max(t.arr.shape[d] for t in tensors) if d != dim else None for d in range(len(shape))]
        parts = []
        for t in tensors:
            s = tuple(t.shape[d] if d == dim else lab[d] for d in range(len(shape)))
            parts.append(np.broadcast_to(t.arr, s))
        return _L(_compress(np.concatenate(parts, axis=dim)), shape, batched)

    def _chunk(self, node: fx.Node, x: _L, kind: str, spec: Any, dim: int) -> tuple:
        dim = dim % len(x.shape)
        size = x.shape[dim]
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
            if kind == "chunk" and len(set(sizes)) == 1:
                # the pruned model splits evenly again: tie the j-th entries of every chunk
                blocks = x.arr.reshape(x.arr.shape[:dim] + (len(sizes), sizes[0]) + x.arr.shape[dim + 1 :])
                for j in range(sizes[0]):
                    self._tie(np.take(blocks, j, axis=dim + 1).ravel(), f"{node.name}: chunk of fixed channels")
            else:
                self.atoms.fix(x.arr, f"{node.name}: split with literal sizes")
        outs, start = [], 0
        for s in sizes:
            arr = np.take(x.arr, range(start, start + s), axis=dim) if varying else x.arr
            shp = list(x.shape)
            shp[dim] = s
            outs.append(_L(arr, tuple(shp), x.batched))
            start += s
        return tuple(outs)

    def _getitem(self, node: fx.Node, x: Any, idx: Any) -> Any:
        if isinstance(x, (tuple, list)):
            if not isinstance(idx, int):
                raise _Unsupported("getitem with a non-int index")
            return x[idx]
        if not isinstance(x, _L):
            if node.meta.get("tensor_meta") is None:
                return None
            raise _Unsupported("getitem on an unknown value")
        shape = self._meta_shape(node)
        idx = idx if isinstance(idx, tuple) else (idx,)
        if any(i is Ellipsis for i in idx):
            k = idx.index(Ellipsis)
            fill = len(x.shape) - (len(idx) - 1 - sum(i is None for i in idx))
            idx = idx[:k] + (slice(None),) * fill + idx[k + 1 :]
        arr = x.arr
        out_idx: list[Any] = []
        d = 0
        for i in idx:
            if i is None:
                out_idx.append(None)
                continue
            if isinstance(i, (fx.Node, _L, list, torch.Tensor)) or (
                isinstance(i, slice) and any(isinstance(v, (fx.Node, _L)) for v in (i.start, i.stop, i.step))
            ):
                raise _Unsupported("tensor indexing")
            if d == 0 and x.batched and i != slice(None):
                raise _Unsupported("indexing the batch axis")
            full = arr.shape[d] == x.shape[d] and x.shape[d] > 1
            if full and i != slice(None):
                self.atoms.fix(arr, f"{node.name}: indexing with literal positions along coupled channels")
            if arr.shape[d] == 1:
                out_idx.append(0 if isinstance(i, int) else slice(None))
            else:
                out_idx.append(i)
            d += 1
        out = arr[tuple(out_idx)]
        if out.ndim != len(shape):
            raise _Unsupported("indexing result of unexpected rank")
        return _L(_compress(np.ascontiguousarray(out)), shape, x.batched)

    def _permute(self, node: fx.Node, x: _L, kind: str, dims: list) -> _L:
        shape = self._meta_shape(node)
        n = len(x.shape)
        if kind == "transpose":
            a, b = int(dims[0]) % n, int(dims[1]) % n
            perm = list(range(n))
            perm[a], perm[b] = perm[b], perm[a]
        else:
            dims = dims[0] if len(dims) == 1 and isinstance(dims[0], (list, tuple)) else dims
            perm = [int(d) % n for d in dims]
        if x.batched and perm[0] != 0:
            raise _Unsupported("permute that moves the batch axis")
        return _L(np.transpose(x.arr, perm), shape, x.batched)

    def _pool(self, node: fx.Node, x: _L, reason: str) -> _L:
        shape = self._meta_shape(node)
        if any(x.arr.shape[d] > 1 for d in range(2, x.arr.ndim)):
            self.atoms.fix(x.arr, reason)
            return _blank_from_meta(node.meta.get("tensor_meta"))
        arr = x.arr.reshape(x.arr.shape[:2] + (1,) * (len(shape) - 2))
        return _L(arr, shape, x.batched)

    def _reduce(self, node: fx.Node, x: _L, args: list, kwargs: dict) -> Any:
        shape = self._meta_shape(node)
        dims = kwargs.get("dim", args[0] if args else None)
        keepdim = kwargs.get("keepdim", args[1] if len(args) > 1 else False)
        n = len(x.shape)
        dims = list(range(n)) if dims is None else [dims] if isinstance(dims, int) else list(dims)
        dims = [d % n for d in dims]
        if any(x.arr.shape[d] > 1 for d in dims):
            self.atoms.fix(x.arr, f"{node.name}: reduction across coupled channels")
            return _blank_from_meta(node.meta.get("tensor_meta"))
        arr = x.arr if keepdim else x.arr.reshape([s for d, s in enumerate(x.arr.shape) if d not in dims])
        if arr.ndim != len(shape):
            raise _Unsupported("reduction of unexpected rank")
        return _L(arr, shape, x.batched and 0 not in dims)

    def _softmax(self, x: _L, dim: int, name: str) -> _L:
        if x.arr.shape[dim % len(x.shape)] > 1:
            self.atoms.fix(x.arr, f"{name}: softmax across coupled channels")
        return x

    def _functional_norm(self, node: fx.Node, x: _L, args: list, kwargs: dict) -> _L:
        normalized = args[1] if len(args) > 1 else kwargs["normalized_shape"]
        if len(normalized) != 1:
            raise _Unsupported("layer_norm over several axes")
        atoms = self._index_atoms(x, -1, f"{node.name}: mixed channels")
        self._normed.append(atoms)
        for p in list(args[2:4]) + [kwargs.get("weight"), kwargs.get("bias")]:
            if isinstance(p, _L):
                pa = p.arr.reshape(-1)
                if pa.shape != atoms.shape:
                    raise _Unsupported("layer_norm parameter of unexpected shape")
                for a, b in zip(pa, atoms, strict=False):
                    if a >= 0 and b >= 0:
                        self.atoms.union(int(a), int(b))
                    else:
                        self.atoms.fix([a, b], f"{node.name}: normalised fixed channels")
        return x

    def _reshape(self, node: fx.Node, x: _L, spec: Any) -> _L:
        """Follow a reshape as merges and splits of axis groups (see module docstring)."""
        out_shape = self._meta_shape(node)
        in_shape = x.shape
        literal = _literal_axes(spec, len(out_shape))  # None: every output axis follows its input
        start = 1 if x.batched else 0
        if x.batched and (len(out_shape) == 0 or out_shape[0] != in_shape[0]):
            raise _Unsupported("reshape that changes the batch axis")
        if all(s == 1 for s in x.arr.shape):
            return _L(np.full([1] * len(out_shape), int(x.arr.ravel()[0]), dtype=np.int64), out_shape, x.batched)
        groups = _factorize(in_shape[start:], out_shape[start:])
        if groups is None:
            raise _Unsupported("reshape that does not factorise")
        varying = [g for g in groups if any(x.arr.shape[start + i] > 1 for i in g[0])]
        if len(varying) != 1:
            raise _Unsupported("reshape mixing several labelled axes")
        gin, gout = varying[0]
        gin = [start + i for i in gin]
        gout = [start + j for j in gout]
        arr = np.broadcast_to(x.arr, tuple(in_shape[d] if d in gin else x.arr.shape[d] for d in range(len(in_shape))))
        arr = arr[tuple(slice(None) if d in gin else 0 for d in range(len(in_shape)))]  # only the group axes left
        if len(gin) > 1:
            var = [k for k, d in enumerate(gin) if x.arr.shape[d] > 1]
            roots = self._roots(arr)
            primary = max(var, key=lambda k: len(np.unique(np.moveaxis(roots, k, 0).reshape(arr.shape[k], -1), axis=0)))
            moved = np.moveaxis(arr, primary, 0).reshape(arr.shape[primary], -1)
            for row in moved:
                self._tie(row, f"{node.name}: reshape merging fixed channels")
        flat = arr.reshape(-1)
        sizes = [out_shape[j] for j in gout]
        dynamic = [k for k, j in enumerate(gout) if literal is None or j not in literal]
        if len(dynamic) != 1:
            self.atoms.fix(flat, f"{node.name}: reshape to literal sizes")
            out = flat.reshape(sizes)
        else:
            out = flat.reshape(sizes)
            if len(gout) > 1:
                dk = dynamic[0]
                moved = np.moveaxis(out, dk, 0).reshape(sizes[dk], -1)
                for row in moved:
                    self._tie(row, f"{node.name}: reshape splitting fixed channels")
        full_shape = [1] * len(out_shape)
        for k, j in enumerate(gout):
            full_shape[j] = sizes[k]
        return _L(_compress(out.reshape(full_shape).copy()), out_shape, x.batched)

    # ------------------------------------------------------------------------------------ finalisation
    def _finalise(self) -> None:
        at = self.atoms
        n = len(at.parent)
        roots = np.fromiter((at.find(i) for i in range(n)), dtype=np.int64, count=n)
        uniq, inverse = np.unique(roots, return_inverse=True)
        self.atom_class = inverse.astype(np.int64)  # atom -> class index
        self.num_classes = len(uniq)
        self.class_fixed = np.array([int(r) in at.fixed for r in uniq], dtype=bool)
        self.class_reason = [at.fixed.get(int(r), []) for r in uniq]
        self.class_normed = np.zeros(self.num_classes, dtype=bool)
        for atoms in self._normed:
            self.class_normed[self.atom_class[atoms[atoms >= 0]]] = True
        self.slot_classes = [np.where(s.atoms >= 0, self.atom_class[np.maximum(s.atoms, 0)], NONE) for s in self.slots]
        # groups: union of producer spaces linked through a class
        space = np.asarray(at.space, dtype=np.int64)
        sp_parent = list(range(len(self._spaces)))

        def sfind(a: int) -> int:
            while sp_parent[a] != a:
                sp_parent[a] = sp_parent[sp_parent[a]]
                a = sp_parent[a]
            return a

        first_space: dict[int, int] = {}
        for atom in range(n):
            c = int(self.atom_class[atom])
            s = int(space[atom])
            if c in first_space:
                ra, rb = sfind(first_space[c]), sfind(s)
                if ra != rb:
                    sp_parent[max(ra, rb)] = min(ra, rb)
            else:
                first_space[c] = s
        class_group_root = {c: sfind(s) for c, s in first_space.items()}
        by_root: dict[int, list[int]] = {}
        for c, r in class_group_root.items():
            by_root.setdefault(r, []).append(c)
        self.class_group = np.zeros(self.num_classes, dtype=np.int64)
        self.groups = []
        producer_modules = {s.module for s in self.slots if s.role == "out"}
        for gi, (r, classes) in enumerate(sorted(by_root.items())):
            members = sorted(
                {self._spaces[s] for s in range(len(self._spaces)) if sfind(s) == r},
                key=lambda m: list(self.modules).index(m) if m in self.modules else 10**9,
            )
            classes = sorted(classes)
            for c in classes:
                self.class_group[c] = gi
            prunable = [c for c in classes if not self.class_fixed[c]]
            reasons = sorted({r for c in classes if self.class_fixed[c] for r in self.class_reason[c]})
            first = next((m for m in members if m in producer_modules), members[0])
            channels = int(np.sum(space == self._spaces.index(first)))
            self.groups.append(Group(gi, members, classes, prunable, channels, reasons))
        self.class_size = np.bincount(self.atom_class, minlength=self.num_classes)

    # ------------------------------------------------------------------------------------------ queries
    def prunable_classes(self) -> np.ndarray:
        return np.flatnonzero(~self.class_fixed)

    def slot_counts(self, keep: np.ndarray) -> list[int]:
        out = []
        for sc in self.slot_classes:
            valid = sc >= 0
            out.append(int((~valid).sum() + keep[sc[valid]].sum()))
        return out

    def estimate(self, keep: np.ndarray, dense_macs: int, dense_params: int) -> tuple[int, int]:
        """MACs and parameters after removing the classes where `keep` is False (analytic)."""
        ones = np.ones(self.num_classes, dtype=bool)
        return (
            dense_macs - self._layer_macs(ones) + self._layer_macs(keep),
            dense_params - self._slot_params(ones) + self._slot_params(keep),
        )

    def _layer_macs(self, keep: np.ndarray) -> int:
        counts = self._counts_cache(keep)
        total = 0
        for layer in self.layers:
            out = counts[layer.out_slot]
            inp = counts[layer.in_slot] if layer.in_slot is not None else layer.in_per_group
            total += out * inp * layer.factor
        return total

    def _counts_cache(self, keep: np.ndarray) -> list[int]:
        return self.slot_counts(keep)

    def _slot_params(self, keep: np.ndarray) -> int:
        counts = self.slot_counts(keep)
        per_param: dict[tuple[str, str], dict[int, int]] = {}
        for s, c in zip(self.slots, counts, strict=False):
            if s.role == "stat":
                continue
            per_param.setdefault((s.module, s.param), {})[s.dim] = c
        total = 0
        for (mod, param), dims in per_param.items():
            t = getattr(self.modules[mod] if mod else self.module, param)
            shape = list(t.shape)
            for d, c in dims.items():
                shape[d] = c
            total += int(np.prod(shape))
        return total

    def repair(self, keep: np.ndarray, score: np.ndarray) -> np.ndarray:
        """Keep at least one entry in every slot (restoring the best removed class where needed)."""
        keep = keep.copy()
        keep[self.class_fixed] = True
        for sc in self.slot_classes:
            valid = sc[sc >= 0]
            if valid.size and not keep[valid].any() and (sc < 0).sum() == 0:
                best = valid[np.argmax(score[valid])]
                keep[best] = True
        return keep

    # ------------------------------------------------------------------------------------------ removal
    def apply(self, keep: np.ndarray) -> dict[str, Any]:
        """Physically remove the classes where `keep` is False; returns {module: new sizes}."""
        keep = keep.copy()
        keep[self.class_fixed] = True
        new_params: dict[tuple[str, str], torch.Tensor] = {}
        for s, sc in zip(self.slots, self.slot_classes, strict=False):
            idx = np.flatnonzero((sc < 0) | keep[np.maximum(sc, 0)])
            if idx.size == sc.size:
                continue
            key = (s.module, s.param)
            owner = self.modules[s.module] if s.module else self.module
            t = new_params.get(key, getattr(owner, s.param))
            new_params[key] = t.detach().index_select(s.dim, torch.as_tensor(idx, dtype=torch.long))
        touched: dict[str, dict[str, torch.Tensor]] = {}
        for (mod, param), t in new_params.items():
            touched.setdefault(mod, {})[param] = t
        for mod, params in touched.items():
            self._rebuild(mod, params)
        self.modules = dict(self.module.named_modules())
        return {m: {p: list(t.shape) for p, t in ps.items()} for m, ps in touched.items()}

    def _rebuild(self, path: str, params: dict[str, torch.Tensor]) -> None:
        old = self.modules[path] if path else self.module
        if isinstance(old, (nn.Conv1d, nn.Conv2d, nn.Conv3d)) and type(old) in (nn.Conv1d, nn.Conv2d, nn.Conv3d):
            w = params.get("weight", old.weight)
            per_group_out = old.out_channels // old.groups
            groups = old.groups if old.groups == 1 else w.shape[0] // per_group_out
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
        elif type(old) is nn.Linear:
            w = params.get("weight", old.weight)
            new = nn.Linear(w.shape[1], w.shape[0], bias=old.bias is not None)
        elif type(old) in (nn.BatchNorm1d, nn.BatchNorm2d, nn.BatchNorm3d):
            n = next(iter(params.values())).shape[0]
            new = type(old)(n, old.eps, old.momentum, old.affine, old.track_running_stats)
            if old.track_running_stats:
                new.num_batches_tracked.copy_(old.num_batches_tracked)
        elif type(old) is nn.GroupNorm:
            n = next(iter(params.values())).shape[0]
            per = old.num_channels // old.num_groups
            new = nn.GroupNorm(n // per, n, old.eps, old.affine)
        elif type(old) is nn.LayerNorm:
            n = next(iter(params.values())).shape[0]
            new = nn.LayerNorm(n, old.eps, old.elementwise_affine, bias=old.bias is not None)
        else:
            new = None
        if new is None:  # a parameter owned by another module (layer scale, LayerNorm subclass): resize in place
            for p, t in params.items():
                cur = getattr(old, p)
                setattr(
                    old,
                    p,
                    nn.Parameter(t.clone(), requires_grad=cur.requires_grad)
                    if isinstance(cur, nn.Parameter)
                    else t.clone(),
                )
            if isinstance(old, nn.LayerNorm) and "weight" in params:
                old.normalized_shape = (int(params["weight"].shape[0]),)
            return
        with torch.no_grad():
            for p, t in list(new.named_parameters(recurse=False)) + list(new.named_buffers(recurse=False)):
                src = params.get(p, getattr(old, p))
                if src is not None and t.shape == src.shape:
                    t.copy_(src)
        new.train(old.training)
        for k, v in old.__dict__.get("_forward_hooks", {}).items():
            new._forward_hooks[k] = v
        _set_module(self.module, path, new)

    # ----------------------------------------------------------------------------------------- report
    def report(self) -> dict[str, Any]:
        groups = []
        for g in self.groups:
            groups.append(
                {
                    "group": g.index,
                    "name": g.name,
                    "layers": g.modules,
                    "channels": g.channels,
                    "units": len(g.classes),
                    "prunable_units": len(g.prunable),
                    "status": "prunable" if g.prunable else "kept whole",
                    "reasons": g.reasons,
                }
            )
        return {
            "groups": groups,
            "prunable_groups": sum(1 for g in self.groups if g.prunable),
            "total_groups": len(self.groups),
            "opaque_modules": list(self.opaque),
            "notes": list(self.notes),
        }


class _Unsupported(Exception):
    """An op the analysis does not understand: its inputs' channels are left whole."""


def _bshape(arrs: list[np.ndarray], shape: tuple[int, ...]) -> tuple[int, ...]:
    return tuple(max(a.shape[d] for a in arrs) for d in range(len(shape)))


def _blank_from_meta(meta: Any) -> Any:
    if meta is None:
        return None
    if hasattr(meta, "shape"):
        shape = tuple(int(s) for s in meta.shape)
        return _L(np.full([1] * len(shape), NONE, dtype=np.int64), shape, True)
    if isinstance(meta, (list, tuple)):
        return type(meta)(_blank_from_meta(m) for m in meta) if not hasattr(meta, "_fields") else None
    return None


def _literal_axes(spec: Any, n: int) -> set[int] | None:
    """Output axes whose size is a literal int in the code (not -1, not computed from a size)."""
    if spec is None:
        return None
    if isinstance(spec, fx.Node):
        return set()
    spec = list(spec)
    if len(spec) != n:
        return set(range(n))
    return {i for i, s in enumerate(spec) if isinstance(s, int) and s != -1}


def _factorize(a: tuple[int, ...], b: tuple[int, ...]) -> list[tuple[list[int], list[int]]] | None:
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


def _set_module(root: nn.Module, path: str, new: nn.Module) -> None:
    parent_path, _, name = path.rpartition(".")
    parent = root.get_submodule(parent_path) if parent_path else root
    setattr(parent, name, new)


def analyze(module: nn.Module, input_shape: tuple[int, ...], *, ignore: list[str] | None = None) -> DependencyGraph:
    """Trace `module` on inputs of `input_shape` (one sample, no batch axis) and group coupled channels."""
    return DependencyGraph(module, tuple(input_shape), ignore=ignore)


def masked_reference(module: nn.Module, graph: DependencyGraph, keep: np.ndarray) -> nn.Module:
    """A copy of the unpruned `module` whose layers ignore the channels that `keep` removes.

    Every consumer column fed by a removed channel is zeroed, so for networks without cross-channel
    normalisation (LayerNorm / GroupNorm over pruned channels) its outputs equal those of the
    physically pruned network: an exact check that the removal was consistent.
    """
    import copy

    ref = copy.deepcopy(module)
    mods = dict(ref.named_modules())
    keep = keep | graph.class_fixed
    with torch.no_grad():
        for s, sc in zip(graph.slots, graph.slot_classes, strict=False):
            if s.role != "in":
                continue
            removed = np.flatnonzero((sc >= 0) & ~keep[np.maximum(sc, 0)])
            if removed.size:
                getattr(mods[s.module], s.param).index_fill_(s.dim, torch.as_tensor(removed), 0.0)
    return ref
