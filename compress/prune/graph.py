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
* anything not understood (an unknown op, a reshape with literal sizes, the model output) fixes the
  atoms it touches, with the reason recorded.

How each op does this lives in `compress.prune.ops`, one handler per op or layer kind registered by
type, function or method name; this module traces, dispatches, and turns the classes into groups.
Functional layers (`F.conv2d(x, self.weight)`, `F.batch_norm`, ...) share their module forms'
handlers, optional forward arguments are bound to their defaults when tracing, and sizes read from
shapes keep the labels of the axis they came from (`compress.prune.labels.Size`).

The union-find classes of atoms that are not fixed are the units that can be removed; a *group* is a
set of producer layers whose channels are coupled. Removal slices every parameter slot that carries
the class's atoms and rebuilds the layers with their new sizes, so tensors, checkpoints, ONNX files
and MACs all shrink. Torch-Pruning's DepGraph (Fang et al., CVPR 2023) is the public reference for
this grouping; the label-propagation formulation here is our own.
"""

from __future__ import annotations

import fnmatch
import inspect
import re
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from torch import fx, nn
from torch.fx import _symbolic_trace
from torch.fx.passes.shape_prop import ShapeProp
from torch.fx.proxy import TraceError

from compress.errors import ModelError
from compress.prune import ops
from compress.prune.labels import (
    NONE,
    Atoms,
    L,
    P,
    Unsupported,
    atoms_of,
    blank_from_meta,
    channel_labels,
    is_tensor_meta,
)
from compress.prune.ops.shape import shape_value


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


# ------------------------------------------------------------------------------------------- tracing
class _Tracer(fx.Tracer):
    def __init__(self, leaves: set[str]) -> None:
        super().__init__()
        self.leaves = leaves

    def is_leaf_module(self, m: nn.Module, qualname: str) -> bool:
        return qualname in self.leaves or super().is_leaf_module(m, qualname)

    def trace(self, root: Any, concrete_args: dict[str, Any] | None = None) -> fx.Graph:
        self._params: dict[int, str] = {}
        self._buffers: dict[int, str] = {}
        if isinstance(root, nn.Module):
            for n, t in root.named_parameters():
                self._params.setdefault(id(t), n)
            for n, t in root.named_buffers():
                self._buffers.setdefault(id(t), n)
        return super().trace(root, concrete_args)

    def getattr(self, attr: str, attr_val: Any, parameter_proxy_cache: dict[str, Any]) -> Any:
        """fx's own lookup scans every parameter of the root on each access (quadratic in the layers
        that read their weights in forward, e.g. timm's BatchNormAct2d): the same names, by identity."""
        if isinstance(attr_val, torch.Tensor) and not self.param_shapes_constant:
            name = self._params.get(id(attr_val)) if isinstance(attr_val, nn.Parameter) else None
            if name is None and self.proxy_buffer_attributes:
                name = self._buffers.get(id(attr_val))
            if name is not None:
                if name not in parameter_proxy_cache:
                    parameter_proxy_cache[name] = self.create_proxy("get_attr", name, (), {})
                return parameter_proxy_cache[name]
        return super().getattr(attr, attr_val, parameter_proxy_cache)

    def create_arg(self, a: Any) -> Any:
        """A parameter or buffer passed to an op as a tensor: found by identity (fx scans them all)."""
        if isinstance(a, torch.Tensor) and not isinstance(a, fx.Proxy):
            name = self._params.get(id(a)) if isinstance(a, nn.Parameter) else self._buffers.get(id(a))
            if name is not None:
                return self.create_node("get_attr", name, (), {})
        return super().create_arg(a)


def optional_args(module: nn.Module) -> dict[str, Any]:
    """Forward arguments after the first that have defaults (`attn_mask=None`), bound when tracing."""
    try:
        sig = inspect.signature(module.forward)
    except (TypeError, ValueError):
        return {}
    out: dict[str, Any] = {}
    params = [p for p in sig.parameters.values() if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)]
    for p in params[1:]:
        if p.default is inspect.Parameter.empty:
            return {}
        if isinstance(p.default, (bool, int, float, str, type(None))):
            out[p.name] = p.default
    return out


class _ShapeProxy(fx.Proxy):
    """A proxy that can become a Python number (`math.ceil(H / p)`, `int(n)`), see `_ShapeTracer`."""

    def __float__(self) -> float:
        return self.tracer.concrete(self, float)

    def __int__(self) -> int:
        return self.tracer.concrete(self, int)


class _ShapeTracer(_Tracer):
    """Traces with the Python values computed from shapes fixed from the example input.

    Pruning analyses the network at one input size, so a branch on the feature-map size (timm's
    MobileVitBlock: `if new_h != H or new_w != W: interpolate`) or a number computed from it
    (`math.ceil(H / patch_h)`) is taken as the example input takes it. A value is fixed only if it
    is a plain number, not a tensor's data, and the same for batch sizes 1 and 2; each fixed value
    leaves a `shape_value` node, so one computed from a pruned width is kept whole by the analysis.
    The graph so far is evaluated on meta tensors (shapes only) where a value is needed.
    """

    def __init__(self, leaves: set[str], input_shape: tuple[int, ...]) -> None:
        super().__init__(leaves)
        self.input_shape = tuple(input_shape)

    def trace(self, root: Any, concrete_args: dict[str, Any] | None = None) -> fx.Graph:
        self._root = root
        self._memo: dict[int, dict[fx.Node, Any]] = {2: {}, 1: {}}
        return super().trace(root, concrete_args)

    def proxy(self, node: fx.Node) -> fx.Proxy:
        return _ShapeProxy(node, self)

    def to_bool(self, obj: fx.Proxy) -> bool:
        return self.concrete(obj, bool)

    def concrete(self, proxy: fx.Proxy, kind: type) -> Any:
        values = [self._evaluate(proxy.node, batch) for batch in (2, 1)]
        if not all(isinstance(v, (bool, int, float)) for v in values):
            raise TraceError(f"{proxy.node.name}: a tensor's value decides control flow")
        if kind(values[0]) != kind(values[1]):
            raise TraceError(f"{proxy.node.name}: a value that depends on the batch size decides control flow")
        value = kind(values[0])
        self.create_proxy("call_function", shape_value, (proxy, value), {})
        return value

    def _evaluate(self, target: fx.Node, batch: int) -> Any:
        memo = self._memo[batch]
        need, stack = set(), [target]
        while stack:
            n = stack.pop()
            if n in memo or n in need:
                continue
            need.add(n)
            stack.extend(n.all_input_nodes)
        revert = getattr(_symbolic_trace, "_maybe_revert_all_patches", None)
        if revert is None:  # this torch cannot run modules while tracing
            raise TraceError("cannot evaluate shapes while tracing")
        with revert():  # fx patches Module.__call__ while tracing: run the real forward
            for n in self.graph.nodes:
                if n in need:
                    memo[n] = self._run(n, memo, batch)
                if n is target:
                    break
        return memo[target]

    def _run(self, n: fx.Node, memo: dict, batch: int) -> Any:
        def meta(v: Any) -> Any:
            return v.to("meta") if isinstance(v, torch.Tensor) else v

        args = fx.node.map_arg(n.args, lambda a: memo[a])
        kwargs = fx.node.map_arg(n.kwargs, lambda a: memo[a])
        with torch.no_grad():
            if n.op == "placeholder":
                if n.args or n is not next(iter(self.graph.nodes)):
                    raise TraceError(f"{n.name}: only the first input has a known shape")
                return torch.empty((batch, *self.input_shape), device="meta")
            if n.op == "get_attr":
                value = self._root
                for part in str(n.target).split("."):
                    value = getattr(value, part)
                return meta(value)
            if n.op == "call_function":
                return n.target(*args, **kwargs)
            if n.op == "call_method":
                return getattr(args[0], n.target)(*args[1:], **kwargs)
            if n.op == "call_module":
                m = self._root.get_submodule(n.target)
                tensors = {k: meta(t) for k, t in (*m.named_parameters(), *m.named_buffers())}
                return torch.func.functional_call(m, tensors, tuple(args), dict(kwargs))
        raise TraceError(f"{n.name}: cannot evaluate a {n.op} node")


def trace(module: nn.Module, input_shape: tuple[int, ...] | None = None) -> tuple[fx.GraphModule, list[str]]:
    """Trace `module` with torch.fx; submodules that cannot be traced become opaque leaves.

    With `input_shape` (one sample, no batch axis), submodules that fail only because they branch
    on shapes are traced again with those values fixed from that input (`_ShapeTracer`).
    """
    try:
        gm, leaves = _trace_leaves(module)
    except ModelError:
        if input_shape is None:
            raise
        gm, leaves = None, [""]  # the root's own forward: only the shape tracer may do
    if not leaves or input_shape is None:
        return gm, leaves
    concrete = optional_args(module) or None

    def attempt(leaf_set: set[str]) -> fx.GraphModule | None:
        try:
            return fx.GraphModule(module, _ShapeTracer(leaf_set, input_shape).trace(module, concrete_args=concrete))
        except Exception:  # noqa: BLE001 - still untraceable: it stays a leaf
            return None

    found = attempt(set())
    if found is not None:
        return found, []
    if gm is None:
        return _trace_leaves(module)  # raises the plain tracer's error
    kept, best = set(leaves), None
    for q in leaves if len(leaves) > 1 else ():  # one by one
        found = attempt(kept - {q})
        if found is not None:
            kept, best = kept - {q}, found
    return (best, sorted(kept)) if best is not None else (gm, leaves)


def _trace_leaves(module: nn.Module) -> tuple[fx.GraphModule, list[str]]:
    leaves: set[str] = set()
    concrete = optional_args(module) or None
    for _ in range(50):
        try:
            graph = _Tracer(leaves).trace(module, concrete_args=concrete)
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


class _OnDevice(nn.Module):
    """Shape propagation over `gm` as a module, so `functional_call` can swap in meta tensors."""

    def __init__(self, gm: fx.GraphModule) -> None:
        super().__init__()
        self.gm = gm

    def forward(self, x: torch.Tensor) -> Any:
        return ShapeProp(self.gm).propagate(x)


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
        self.atoms = Atoms()
        self.slots: list[Slot] = []
        self.layers: list[Layer] = []
        self._spaces: list[str] = []
        self._module_slots: dict[tuple[str, str, int], int] = {}
        self.normed: list[np.ndarray] = []  # atoms normalised together (LayerNorm): not exactly checkable
        self.bound: list[
            tuple[str, str, Any, int, int | None]
        ] = []  # int attributes that follow a width (see bind_count)
        self._param_cache: dict[tuple[str, str], L] = {}
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
        gm, self.opaque = trace(self.module, self.input_shape)
        self.bound_args = set(optional_args(self.module))
        self.gm = gm
        placeholders = [n for n in gm.graph.nodes if n.op == "placeholder" and _real_input(n, self.bound_args)]
        self._input = placeholders[0] if placeholders else None
        if len(placeholders) != 1:
            raise ModelError(f"structured pruning supports single-input models; this one takes {len(placeholders)}")
        self._propagate(gm, (2, *self.input_shape))
        fixed = sorted({_owner(n) for n in gm.graph.nodes if n.op == "call_function" and n.target is shape_value})
        if fixed:
            self.notes.append(
                f"traced with the values they compute from shapes fixed at input {self.input_shape}: "
                + ", ".join(m or "(the model)" for m in fixed)
            )
        self.modules = dict(self.module.named_modules())
        out_node = next(n for n in gm.graph.nodes if n.op == "output")
        meta = out_node.args[0].meta.get("tensor_meta") if isinstance(out_node.args[0], fx.Node) else None
        self.output_shape = tuple(meta.shape[1:]) if hasattr(meta, "shape") else None
        env: dict[fx.Node, Any] = {}
        for node in gm.graph.nodes:
            try:
                env[node] = self._visit(node, env)
            except Unsupported as e:
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

    def _propagate(self, gm: fx.GraphModule, shape: tuple[int, ...]) -> None:
        """Record every node's output shape.

        On the meta device first: only shapes are computed, no kernel runs, so the cost does not grow
        with the network's width or the input size, nor suffer from other processes holding the
        cores. A model that computes on values (`.item()`, data-dependent shapes, a constant tensor
        it made itself) fails there and gets one real forward instead.
        """
        prop = _OnDevice(gm)
        with torch.no_grad():
            try:
                tensors = {n: t.to("meta") for n, t in (*prop.named_parameters(), *prop.named_buffers())}
                torch.func.functional_call(prop, tensors, (torch.empty(shape, device="meta"),))
                return
            except Exception:  # noqa: BLE001 - it computes on values: run it for real
                pass
            try:
                prop(torch.randn(shape))
            except Exception as e:  # noqa: BLE001 - a model that does not run on its input shape
                raise ModelError(
                    f"the model does not run on input shape {self.input_shape}: {str(e).splitlines()[0][:200]}"
                ) from None

    def _blank(self, node: fx.Node) -> Any:
        return blank_from_meta(node.meta.get("tensor_meta"))

    def _fix_inputs(self, node: fx.Node, env: dict, reason: str) -> None:
        values = [env.get(a) for a in node.all_input_nodes]
        for arr in atoms_of([self.labels(v) for v in values]):
            self.atoms.fix(arr, reason)

    def _val(self, env: dict, a: Any) -> Any:
        if isinstance(a, fx.Node):
            return env[a]
        if isinstance(a, (list, tuple)):
            return type(a)(self._val(env, x) for x in a)
        if isinstance(a, slice):
            return slice(self._val(env, a.start), self._val(env, a.stop), self._val(env, a.step))
        return a

    def _visit(self, node: fx.Node, env: dict) -> Any:
        op = node.op
        if op == "placeholder":
            return blank_from_meta(node.meta.get("tensor_meta")) if node is self._input else None
        if op == "get_attr":
            return self._get_attr(node)
        if op == "output":
            for arr in atoms_of(self.labels(self._val(env, node.args[0]))):
                self.atoms.fix(arr, "reaches the model output")
            return None
        args = [self._val(env, a) for a in node.args]
        kwargs = {k: self._val(env, v) for k, v in node.kwargs.items()}
        if op == "call_module":
            m = self.modules[node.target]
            if node.target in self.opaque:
                raise Unsupported(f"{node.target}: could not be traced (opaque)")
            handler = ops.module_handler(m)
            if handler is None:
                raise Unsupported(f"{node.target}: unknown layer {type(m).__name__}")
            args, kwargs = self._plain(args, kwargs, handler)
            return handler.fn(self, node, m, args, kwargs)
        if op == "call_function":
            handler = ops.function_handler(node.target)
            name = getattr(node.target, "__name__", str(node.target))
        elif op == "call_method":
            handler = ops.method_handler(node.target)
            name = node.target
        else:
            raise Unsupported(f"unsupported node {op}")
        if handler is None:
            if not atoms_of(self.labels([args, kwargs])) and not is_tensor_meta(node):
                return None  # arithmetic on constants, asserts, ...
            raise Unsupported(f"op {name} is not understood")
        args, kwargs = self._plain(args, kwargs, handler)
        return handler.fn(self, node, args, kwargs)

    def _plain(self, args: list, kwargs: dict, handler) -> tuple[list, dict]:
        """Parameters become labels, unless the handler slices them itself."""
        if handler.params:
            return args, kwargs
        return [self.labels(a) for a in args], {k: self.labels(v) for k, v in kwargs.items()}

    # ------------------------------------------------------------------------------ handler helpers
    def meta_shape(self, node: fx.Node) -> tuple[int, ...]:
        meta = node.meta.get("tensor_meta")
        if meta is None or not hasattr(meta, "shape"):
            raise Unsupported(f"'{node.name}' has no single tensor output")
        return tuple(int(s) for s in meta.shape)

    def _space(self, name: str) -> int:
        self._spaces.append(name)
        return len(self._spaces) - 1

    def slot(self, module: str, param: str, dim: int, atoms: np.ndarray, role: str) -> int:
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

    def producer(self, module: str, n: int, param: str = "weight") -> np.ndarray:
        key = (module, param, 0)
        if key in self._module_slots:
            return self.slots[self._module_slots[key]].atoms
        return self.atoms.new(n, self._space(module))

    def index_atoms(self, x: L, dim: int, reason: str) -> np.ndarray:
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

    def roots(self, arr: np.ndarray) -> np.ndarray:
        """The class (union-find root) of every label, -1 kept."""
        uniq, inv = np.unique(arr, return_inverse=True)
        roots = np.array([self.atoms.find(int(u)) if u >= 0 else NONE for u in uniq], dtype=np.int64)
        return roots[inv].reshape(arr.shape)

    def only_along(self, x: L, dim: int, reason: str) -> None:
        """Fix atoms whose labels vary along axes other than `dim` (they cannot follow a new axis)."""
        dim = dim % len(x.shape)
        if all(x.arr.shape[d] == 1 for d in range(x.arr.ndim) if d != dim):
            return
        roots = self.roots(x.arr)  # atoms may differ along other axes as long as their classes do not
        if any(
            roots.shape[d] > 1 and not (roots == roots.take([0], axis=d)).all() for d in range(roots.ndim) if d != dim
        ):
            self.atoms.fix(x.arr, reason)

    def tie(self, atoms: np.ndarray, reason: str) -> None:
        if (atoms < 0).any():
            self.atoms.fix(atoms, reason)
        self.atoms.union_many(atoms)

    def tie_rows(self, rows: np.ndarray, reason: str) -> None:
        """`tie` each row of the 2-D `rows` (the blocks of a grouped conv / GroupNorm), at once."""
        if (rows < 0).any():
            for row in rows:
                self.tie(row, reason)
            return
        for a, b in zip(np.repeat(rows[:, 0], rows.shape[1] - 1).tolist(), rows[:, 1:].ravel().tolist(), strict=True):
            self.atoms.union(a, b)

    def has_tensor(self, node: fx.Node) -> bool:
        return is_tensor_meta(node)

    def add_layer(
        self, module: str, out_slot: int, in_slot: int | None, in_per_group: int, factor: int, positions: int
    ):
        self.layers.append(Layer(module, out_slot, in_slot, in_per_group, factor, positions))

    def labels(self, v: Any) -> Any:
        """`v` with every parameter (`P`) replaced by its default labels."""
        if isinstance(v, P):
            return self._param_labels(v)
        if isinstance(v, (list, tuple)) and any(isinstance(x, (P, list, tuple)) for x in v):
            return type(v)(self.labels(x) for x in v)
        if isinstance(v, dict):
            return {k: self.labels(x) for k, x in v.items()}
        return v

    def _param_labels(self, p: P) -> L:
        """A parameter used directly (layer scale, position embedding): one atom per entry of its last
        non-trivial axis; buffers carry no atoms."""
        key = (p.owner, p.attr)
        if key in self._param_cache:
            return self._param_cache[key]
        dims = [d for d, s in enumerate(p.shape) if s > 1]
        if not dims or not p.is_param:
            out = L(np.full([1] * len(p.shape), NONE, dtype=np.int64), p.shape, False)
        else:
            dim = dims[-1]
            skey = (p.owner, p.attr, dim)
            atoms = self.slots[self._module_slots[skey]].atoms if skey in self._module_slots else None
            if atoms is None:
                atoms = self.atoms.new(p.shape[dim], self._space(f"{p.owner}.{p.attr}" if p.owner else p.attr))
                self.slot(p.owner, p.attr, dim, atoms, "param")
            out = channel_labels(p.shape, dim, atoms, False)
        self._param_cache[key] = out
        return out

    def _get_attr(self, node: fx.Node) -> Any:
        owner, _, attr = node.target.rpartition(".")
        value = self.gm.get_submodule(owner) if owner else self.gm
        tensor = getattr(value, attr)
        if not isinstance(tensor, torch.Tensor):
            raise Unsupported(f"get_attr {node.target} is not a tensor")
        return P(owner, attr, tuple(int(s) for s in tensor.shape), isinstance(tensor, nn.Parameter), node)

    def find_attr(self, node: fx.Node, value: Any) -> tuple[str, str] | None:
        """The int (or int list) attribute of the module whose forward made `node` that equals `value`,
        if exactly one does: a literal size that pruning may change (`self.num_heads`, `self.splits`)."""
        stack = node.meta.get("nn_module_stack")
        path = list(stack.values())[-1][0] if stack else ""  # no stack: the root module's own forward
        mod = self.modules.get(path)
        if mod is None:
            return None
        want = tuple(value) if isinstance(value, (list, tuple)) else value
        hits = []
        for k, v in vars(mod).items():
            if k.startswith("_") or k == "training" or isinstance(v, bool):
                continue
            if isinstance(v, (list, tuple)) and all(isinstance(e, int) for e in v):
                v = tuple(v)
            elif not isinstance(v, int):
                continue
            if v == want:
                hits.append(k)
        if len(hits) > 1:  # num_heads == head_dim: the head count is the one that may follow
            hits = [h for h in hits if "heads" in h]
        return (path, hits[0]) if len(hits) == 1 else None

    def bind_count(self, ref: tuple[str, str], atoms: Any, mult: int = 1, pos: int | None = None) -> None:
        """After pruning, set `ref` to `mult` x the number of kept entries of `atoms` (a list: one count
        per part; `pos`: only that entry of a tuple attribute)."""
        self.bound.append((ref[0], ref[1], atoms, mult, pos))

    # ------------------------------------------------------------------------------------ finalisation
    def _finalise(self) -> None:
        at = self.atoms
        roots = at.roots()
        uniq, inverse = np.unique(roots, return_inverse=True)
        self.atom_class = inverse.astype(np.int64)  # atom -> class index
        self.num_classes = len(uniq)
        roots_of_classes = uniq.tolist()
        self.class_fixed = np.array([r in at.fixed for r in roots_of_classes], dtype=bool)
        self.class_reason = [at.fixed.get(r, ()) for r in roots_of_classes]  # no list per free class
        self.class_normed = np.zeros(self.num_classes, dtype=bool)
        for atoms in self.normed:
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

        # each distinct (class, space) pair once, in atom order: the first space of a class links the rest
        pairs = self.atom_class * max(len(self._spaces), 1) + space
        _, first_atom = np.unique(pairs, return_index=True)
        first_space: dict[int, int] = {}
        for atom in np.sort(first_atom).tolist():
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
        spaces_of: dict[int, set[str]] = {}
        for s in range(len(self._spaces)):
            spaces_of.setdefault(sfind(s), set()).add(self._spaces[s])
        order = {m: i for i, m in enumerate(self.modules)}
        space_index: dict[str, int] = {}
        for i, name in enumerate(self._spaces):
            space_index.setdefault(name, i)
        space_size = np.bincount(space, minlength=len(self._spaces))
        self.class_group = np.zeros(self.num_classes, dtype=np.int64)
        self.groups = []
        producer_modules = {s.module for s in self.slots if s.role == "out"}
        for gi, (r, classes) in enumerate(sorted(by_root.items())):
            # module order, then (parameters used directly) the order the analysis met them
            members = sorted(spaces_of.get(r, set()), key=lambda m: (order.get(m, 10**9), space_index[m]))
            classes = sorted(classes)
            for c in classes:
                self.class_group[c] = gi
            prunable = [c for c in classes if not self.class_fixed[c]]
            reasons = sorted({r for c in classes if self.class_fixed[c] for r in self.class_reason[c]})
            first = next((m for m in members if m in producer_modules), members[0])
            channels = int(space_size[space_index[first]])
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
        self._apply_bound(keep)
        return {m: {p: list(t.shape) for p, t in ps.items()} for m, ps in touched.items()}

    def _rebuild(self, path: str, params: dict[str, torch.Tensor]) -> None:
        old = self.modules[path] if path else self.module
        resize = ops.resize_handler(old)
        new = resize(old, params) if resize is not None else None
        if resize is None:  # a parameter owned by another module (layer scale, position embedding)
            ops.layers.resize_in_place(old, params)
        if new is None:
            return
        for k, v in old.__dict__.get("_forward_hooks", {}).items():
            new._forward_hooks[k] = v
        _set_module(self.module, path, new)

    def _apply_bound(self, keep: np.ndarray) -> dict[str, Any]:
        """Update the int attributes that sized a pruned axis (num_heads, split sizes)."""

        def count(atoms) -> int:
            atoms = np.asarray(atoms)
            return int(((atoms < 0) | keep[self.atom_class[np.maximum(atoms, 0)]]).sum())

        done: dict[str, Any] = {}
        for path, attr, atoms, mult, pos in self.bound:
            mod = self.modules.get(path) if path else self.module
            if mod is None:
                continue
            old = getattr(mod, attr)
            new = [count(a) for a in atoms] if isinstance(atoms, list) else count(atoms) * mult
            if pos is not None:
                new = type(old)(new if i == pos else v for i, v in enumerate(old))
            elif isinstance(old, tuple):
                new = tuple(new)
            if new != old:
                setattr(mod, attr, new)
                done[f"{path}.{attr}"] = new
        return done

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
            "channels_total": int(self.class_size.sum()),
            "channels_prunable": int(self.class_size[~self.class_fixed].sum()),
            "total_groups": len(self.groups),
            "opaque_modules": list(self.opaque),
            "notes": list(self.notes),
        }


def _owner(node: fx.Node) -> str:
    """The module whose forward made `node` ('' for the root's own)."""
    stack = node.meta.get("nn_module_stack")
    return list(stack.values())[-1][0] if stack else ""


def _real_input(node: fx.Node, bound: set[str]) -> bool:
    """A placeholder that is a real input (not an optional argument bound as a constant)."""
    return re.sub(r"_\d+$", "", str(node.target)) not in bound


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
    with torch.no_grad():
        for name, t in masked_params(module, graph, keep).items():
            owner, _, attr = name.rpartition(".")
            getattr(ref.get_submodule(owner), attr).copy_(t)
    return ref


def masked_params(module: nn.Module, graph: DependencyGraph, keep: np.ndarray) -> dict[str, torch.Tensor]:
    """The consumer weights of `module` with every column fed by a channel that `keep` removes zeroed,
    by parameter name (copies; `module` is unchanged): what `masked_reference` computes with, for
    `torch.func.functional_call` without copying the whole network."""
    mods = dict(module.named_modules())
    keep = keep | graph.class_fixed
    out: dict[str, torch.Tensor] = {}
    with torch.no_grad():
        for s, sc in zip(graph.slots, graph.slot_classes, strict=False):
            if s.role != "in":
                continue
            removed = np.flatnonzero((sc >= 0) & ~keep[np.maximum(sc, 0)])
            if not removed.size:
                continue
            name = f"{s.module}.{s.param}" if s.module else s.param
            if name not in out:
                out[name] = getattr(mods[s.module], s.param).detach().clone()
            out[name].index_fill_(s.dim, torch.as_tensor(removed), 0.0)
    return out
