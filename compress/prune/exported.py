"""Structured pruning of `torch.export` programs (`.pt2`): the ATen graph with its layers as modules.

An exported program calls ATen operators and reads its parameters as graph attributes, while the
pruner slices and rebuilds layers. `rebuild_layers` turns every `aten.conv*d` / `aten.convolution`,
`aten.batch_norm` (and `_native_batch_norm_legit_no_training`), `aten.linear`, `aten.layer_norm`,
`aten.group_norm`, `aten.prelu` and `aten.dropout` call whose parameters are attributes used by
that call alone into the `nn` module that computes the same thing, named after the layer that owned
the weight (so report rows and `--ignore` patterns read like the original network). Every other call
stays an ATen call; `compress.prune.ops.aten` says how channels flow through the ones it knows, and
the analysis keeps whole whatever it does not know (the masked-dense check still runs after removal).

Before it is used, the rebuilt module is compared with the program on the program's own input, and
checked to treat every sample of a batch alike: a program exported at batch 1 often has that batch
size written into its reshapes, which are given the input's batch size instead.
"""

from __future__ import annotations

import copy
import operator
from typing import Any

import torch
from torch import fx, nn
from torch.fx.operator_schemas import normalize_function
from torch.utils import _pytree as pytree

from compress.errors import ModelError

_BATCH_SIZED = ("view", "reshape", "_unsafe_view", "expand")  # ATen ops whose size list may hold the batch


def is_exported(module: nn.Module) -> bool:
    from compress.models.pt2 import ExportedModule

    return isinstance(module, ExportedModule)


def prunable_model(model: Any) -> Any:
    """`model` with an exported program's graph rebuilt for pruning (`model` itself otherwise)."""
    if not is_exported(model.module):
        return model
    out = copy.copy(model)
    out.module = prunable_module(model.module, tuple(model.input_shape))
    return out


def prunable_module(module: nn.Module, input_shape: tuple[int, ...] = ()) -> nn.Module:
    """The pruner's form of an `ExportedModule` (a GraphModule with real layers); others unchanged."""
    if not is_exported(module):
        return module
    rebuilt = rebuild_layers(module.graph)
    _check_rebuilt(module, rebuilt, input_shape)
    return rebuilt.train(module.training)


# ------------------------------------------------------------------------------------------ rebuild
def rebuild_layers(gm: fx.GraphModule) -> fx.GraphModule:
    """A GraphModule computing what the unlifted program `gm` computes, with layers as modules."""
    return _Rebuild(gm).run()


class _Rebuild:
    def __init__(self, gm: fx.GraphModule) -> None:
        self.gm = gm
        self.root = nn.Module()
        self.graph = fx.Graph()
        self.env: dict[fx.Node, Any] = {}
        self.attrs: dict[str, fx.Node] = {}  # materialised tensors by original target
        self.leaves: set[str] = set()  # paths of modules and tensors installed on the root
        self.containers: set[str] = set()
        self.batch = _batch_size(gm)
        self.readers: dict[str, int] = {}  # get_attr nodes per target
        for node in gm.graph.nodes:
            if node.op == "get_attr":
                self.readers[node.target] = self.readers.get(node.target, 0) + 1
        self.absorbed: set[fx.Node] = set()  # nodes computed inside a rebuilt layer (a weight's transpose)
        self.plan: dict[fx.Node, tuple[nn.Module, fx.Node, str]] = {}

    def run(self) -> fx.GraphModule:
        for node in self.gm.graph.nodes:  # first decide which calls become layers
            if node.op == "call_function":
                layer = _layer(self, node)
                if layer is not None:
                    self.plan[node] = layer
        for node in self.gm.graph.nodes:
            if node in self.absorbed:
                continue
            if node.op == "placeholder":
                new = self.graph.placeholder(node.name)
                new.meta = _meta(node)
                self.env[node] = new
            elif node.op == "get_attr":
                continue  # installed when a kept node reads it
            elif node.op == "call_module":
                if node.target.startswith("_guards"):  # the program's input-shape asserts
                    continue
                path = self._install(node.target, copy.deepcopy(self.gm.get_submodule(node.target)))
                self.env[node] = self.graph.call_module(path, *self._map((node.args, node.kwargs)))
            elif node.op == "call_function":
                self.env[node] = self._call(node)
            elif node.op == "output":
                flat = self._map(node.args[0])
                spec = getattr(self.gm, "_out_spec", None)
                result = pytree.tree_unflatten(list(flat), spec) if spec is not None else flat
                self.graph.output(result)
        self.graph.lint()
        return fx.GraphModule(self.root, self.graph, class_name="RebuiltProgram")

    # ----------------------------------------------------------------------------------------- nodes
    def _call(self, node: fx.Node) -> Any:
        if node.target is _getitem and isinstance(node.args[0], fx.Node) and node.args[0] in self.env:
            src = self.env[node.args[0]]
            if isinstance(src, _First):  # batch norm rebuilt from a (out, mean, invstd) call
                return src.node
        layer = self.plan.get(node)
        if layer is not None:
            module, x, owner = layer
            path = self._install(owner, module)
            new = self.graph.call_module(path, (self._map(x),))
            new.meta = _meta(node)
            if node.target is torch.ops.aten._native_batch_norm_legit_no_training.default:
                return _First(new)
            return new
        args, kwargs = self._map((node.args, node.kwargs))
        if self.batch is not None and _overload_name(node) in _BATCH_SIZED:
            args = self._batch_from_input(node, args)
        new = self.graph.call_function(node.target, tuple(args), kwargs)
        new.meta = _meta(node)
        return new

    def _batch_from_input(self, node: fx.Node, args: tuple) -> tuple:
        """`view(x, [1, 512])` in a program exported at batch 1: the 1 is the input's batch size."""
        x, sizes = node.args[0], args[1] if len(args) > 1 else None
        val = x.meta.get("val") if isinstance(x, fx.Node) else None
        if not isinstance(sizes, (list, tuple)) or not sizes or sizes[0] != self.batch or val is None:
            return args
        if val.dim() == 0 or val.shape[0] != self.batch:
            return args
        size = self.graph.call_function(torch.ops.aten.sym_size.int, (args[0], 0))
        return (args[0], [size, *sizes[1:]], *args[2:])

    def _map(self, value: Any) -> Any:
        def one(n: fx.Node) -> Any:
            if n.op == "get_attr":
                return self._tensor(n.target)
            if n not in self.env:
                raise ModelError(f"cannot rebuild the exported graph: '{n.name}' is used before it is computed")
            v = self.env[n]
            if isinstance(v, _First):
                raise ModelError(f"cannot rebuild the exported graph: '{n.name}' is a batch norm's tuple")
            return v

        return fx.node.map_arg(value, one)

    def _tensor(self, target: str) -> fx.Node:
        if target not in self.attrs:
            value = _get(self.gm, target)
            path = self._free_path(target)
            parent_path, _, name = path.rpartition(".")
            parent = self._container(parent_path)
            if isinstance(value, nn.Parameter):
                parent.register_parameter(name, nn.Parameter(value.detach().clone(), value.requires_grad))
            elif isinstance(value, torch.Tensor):
                parent.register_buffer(name, value.detach().clone())
            else:
                setattr(parent, name, copy.deepcopy(value))
            self.leaves.add(path)
            self.attrs[target] = self.graph.get_attr(path)
        return self.attrs[target]

    # ------------------------------------------------------------------------------------- naming
    def _install(self, want: str, module: nn.Module) -> str:
        path = self._free_path(want or type(module).__name__.lower())
        parent_path, _, name = path.rpartition(".")
        self._container(parent_path).add_module(name, module)
        self.leaves.add(path)
        return path

    def _free_path(self, want: str) -> str:
        """`want` if it neither holds nor sits inside something installed, else a flat unique name."""
        if self._path_ok(want):
            return want
        base = want.replace(".", "_")
        for i in range(10_000):
            cand = base if i == 0 else f"{base}_{i}"
            if self._path_ok(cand):
                return cand
        raise ModelError("cannot rebuild the exported graph: too many layers of one name")

    def _path_ok(self, path: str) -> bool:
        if not path or path in self.leaves or path in self.containers:
            return False
        parts = path.split(".")
        if not all(p.isidentifier() or p.isdigit() for p in parts):
            return False
        return not any(".".join(parts[:i]) in self.leaves for i in range(1, len(parts)))

    def _container(self, path: str) -> nn.Module:
        mod = self.root
        if not path:
            return mod
        parts = path.split(".")
        for i, part in enumerate(parts):
            self.containers.add(".".join(parts[: i + 1]))
            child = mod._modules.get(part)
            if child is None:
                child = nn.Module()
                mod.add_module(part, child)
            mod = child
        return mod


class _First:
    """A rebuilt batch norm standing for element 0 of the tuple the ATen call returned."""

    def __init__(self, node: fx.Node) -> None:
        self.node = node


class _NotRebuilt(Exception):
    pass


_getitem = operator.getitem


def _overload_name(node: fx.Node) -> str:
    packet = getattr(node.target, "overloadpacket", None)
    return getattr(packet, "__name__", "") if packet is not None else ""


def _meta(node: fx.Node) -> dict[str, Any]:
    """A node's metadata without the module stack (it names modules that the rebuilt root lacks)."""
    return {k: v for k, v in node.meta.items() if k != "nn_module_stack"}


def _get(gm: nn.Module, target: str) -> Any:
    owner, _, name = target.rpartition(".")
    return getattr(gm.get_submodule(owner) if owner else gm, name)


def _batch_size(gm: fx.GraphModule) -> int | None:
    for node in gm.graph.nodes:
        if node.op == "placeholder":
            val = node.meta.get("val")
            if isinstance(val, torch.Tensor) and val.dim() > 0 and isinstance(val.shape[0], int):
                return int(val.shape[0])
            return None
    return None


# ------------------------------------------------------------------------------------------- layers
def _layer(rb: _Rebuild, node: fx.Node) -> tuple[nn.Module, fx.Node, str] | None:
    """(module, its input node, the owner path) for an ATen layer call that can become a module."""
    build = _BUILDERS.get(_overload_name(node))
    if build is None:
        return None
    try:
        norm = normalize_function(node.target, node.args, node.kwargs, normalize_to_only_use_kwargs=True)
    except Exception:  # noqa: BLE001 - an argument list the schema does not bind: leave the call
        norm = None
    if norm is None:
        return None
    kw = dict(norm.kwargs)
    x = kw.get("mat1", kw.get("input", kw.get("self")))
    if not isinstance(x, fx.Node) or not isinstance(x.meta.get("val"), torch.Tensor):
        return None
    try:
        return build(rb, node, x, kw)
    except _NotRebuilt:
        return None


def _param(rb: _Rebuild, node: fx.Node, arg: Any, *, param: bool = True) -> tuple[Any, str] | None:
    """(tensor, owner path) of a get_attr argument read by `node` alone; raises when it is not one."""
    if arg is None:
        return None
    if not isinstance(arg, fx.Node) or arg.op != "get_attr" or len(arg.users) != 1 or rb.readers[arg.target] != 1:
        raise _NotRebuilt
    value = _get(rb.gm, arg.target)
    if not isinstance(value, torch.Tensor) or isinstance(value, nn.Parameter) != param:
        raise _NotRebuilt
    return value, arg.target.rpartition(".")[0]


def _copy(dst: nn.Module, **tensors: tuple[torch.Tensor, str] | None) -> None:
    with torch.no_grad():
        for name, found in tensors.items():
            t = getattr(dst, name)
            if found is None or t is None:
                continue
            if tuple(t.shape) != tuple(found[0].shape):
                raise _NotRebuilt
            t.copy_(found[0])
            if isinstance(t, nn.Parameter):
                t.requires_grad_(found[0].requires_grad)


def _conv(rb: _Rebuild, node: fx.Node, x: fx.Node, kw: dict) -> tuple[nn.Module, fx.Node, str]:
    if kw.get("transposed") or any(kw.get("output_padding") or ()):
        raise _NotRebuilt
    w, b = _param(rb, node, kw.get("weight")), _param(rb, node, kw.get("bias"))
    rank = w[0].dim() - 2
    if rank not in (1, 2, 3) or x.meta["val"].dim() != rank + 2:
        raise _NotRebuilt
    groups = int(kw.get("groups", 1))
    padding = kw.get("padding", 0)
    padding = padding if isinstance(padding, str) else _tuple(padding, rank)
    cls = (nn.Conv1d, nn.Conv2d, nn.Conv3d)[rank - 1]
    try:
        m = cls(
            int(w[0].shape[1]) * groups,
            int(w[0].shape[0]),
            tuple(int(k) for k in w[0].shape[2:]),
            stride=_tuple(kw.get("stride", 1), rank),
            padding=padding,
            dilation=_tuple(kw.get("dilation", 1), rank),
            groups=groups,
            bias=b is not None,
        )
    except (ValueError, TypeError):
        raise _NotRebuilt from None
    _copy(m, weight=w, bias=b)
    return m, x, w[1]


def _tuple(v: Any, n: int) -> tuple[int, ...]:
    if isinstance(v, int):
        return (v,) * n
    v = tuple(int(e) for e in v)
    if len(v) == 1:
        return v * n
    if len(v) != n:
        raise _NotRebuilt
    return v


def _batch_norm(rb: _Rebuild, node: fx.Node, x: fx.Node, kw: dict) -> tuple[nn.Module, fx.Node, str]:
    w, b = _param(rb, node, kw.get("weight")), _param(rb, node, kw.get("bias"))
    mean = _param(rb, node, kw.get("running_mean"), param=False)
    var = _param(rb, node, kw.get("running_var"), param=False)
    if mean is None or var is None or (w is None) != (b is None):
        raise _NotRebuilt
    legit = node.target is torch.ops.aten._native_batch_norm_legit_no_training.default
    if legit and any(u.target is not _getitem or u.args[1] != 0 for u in node.users):
        raise _NotRebuilt
    rank = x.meta["val"].dim()
    cls = {2: nn.BatchNorm1d, 3: nn.BatchNorm1d, 4: nn.BatchNorm2d, 5: nn.BatchNorm3d}.get(rank)
    if cls is None:
        raise _NotRebuilt
    m = cls(int(mean[0].shape[0]), eps=float(kw.get("eps", 1e-5)), momentum=float(kw.get("momentum", 0.1)))
    m.affine = w is not None
    if w is None:
        m.weight, m.bias = None, None
    _copy(m, weight=w, bias=b, running_mean=mean, running_var=var)
    owner = mean[1]
    tracked = getattr(rb.gm.get_submodule(owner) if owner else rb.gm, "num_batches_tracked", None)
    if isinstance(tracked, torch.Tensor) and tracked.numel() == 1:
        m.num_batches_tracked.copy_(tracked)
    return m, x, owner


def _linear(rb: _Rebuild, node: fx.Node, x: fx.Node, kw: dict) -> tuple[nn.Module, fx.Node, str]:
    w, b = _param(rb, node, kw.get("weight")), _param(rb, node, kw.get("bias"))
    if w[0].dim() != 2:
        raise _NotRebuilt
    m = nn.Linear(int(w[0].shape[1]), int(w[0].shape[0]), bias=b is not None)
    _copy(m, weight=w, bias=b)
    return m, x, w[1]


def _addmm(rb: _Rebuild, node: fx.Node, x: fx.Node, kw: dict) -> tuple[nn.Module, fx.Node, str]:
    """`addmm(b, x, w.t())` / `mm(x, w.t())`, how a decomposed program spells a linear layer."""
    wt = kw.get("mat2")
    if kw.get("beta", 1) != 1 or kw.get("alpha", 1) != 1 or x.meta["val"].dim() != 2:
        raise _NotRebuilt
    if not isinstance(wt, fx.Node) or wt.op != "call_function" or len(wt.users) != 1 or not _transposes(wt):
        raise _NotRebuilt
    w, b = _param(rb, wt, wt.args[0]), _param(rb, node, kw.get("input", kw.get("self")))  # schema's `self`
    if w is None or w[0].dim() != 2 or (b is not None and tuple(b[0].shape) != (w[0].shape[0],)):
        raise _NotRebuilt
    m = nn.Linear(int(w[0].shape[1]), int(w[0].shape[0]), bias=b is not None)
    _copy(m, weight=w, bias=b)
    rb.absorbed.add(wt)
    return m, x, w[1]


def _transposes(node: fx.Node) -> bool:
    """A 2-D transpose: `t(w)`, `permute(w, [1, 0])`, `transpose(w, 0, 1)`."""
    name = _overload_name(node)
    if name == "t":
        return True
    if name == "permute":
        return [int(d) % 2 for d in node.args[1]] == [1, 0]
    if name == "transpose":
        return sorted(int(d) % 2 for d in node.args[1:3]) == [0, 1]
    return False


def _layer_norm(rb: _Rebuild, node: fx.Node, x: fx.Node, kw: dict) -> tuple[nn.Module, fx.Node, str]:
    w, b = _param(rb, node, kw.get("weight")), _param(rb, node, kw.get("bias"))
    shape = tuple(int(s) for s in kw["normalized_shape"])
    if w is None and b is not None:
        raise _NotRebuilt
    m = nn.LayerNorm(shape, eps=float(kw.get("eps", 1e-5)), elementwise_affine=w is not None, bias=b is not None)
    _copy(m, weight=w, bias=b)
    return m, x, (w or b or (None, _stack_owner(node)))[1]


def _group_norm(rb: _Rebuild, node: fx.Node, x: fx.Node, kw: dict) -> tuple[nn.Module, fx.Node, str]:
    w, b = _param(rb, node, kw.get("weight")), _param(rb, node, kw.get("bias"))
    if (w is None) != (b is None):
        raise _NotRebuilt
    channels = int(x.meta["val"].shape[1])
    m = nn.GroupNorm(int(kw["num_groups"]), channels, eps=float(kw.get("eps", 1e-5)), affine=w is not None)
    _copy(m, weight=w, bias=b)
    return m, x, (w or (None, _stack_owner(node)))[1]


def _prelu(rb: _Rebuild, node: fx.Node, x: fx.Node, kw: dict) -> tuple[nn.Module, fx.Node, str]:
    w = _param(rb, node, kw.get("weight"))
    if w is None or w[0].dim() != 1:
        raise _NotRebuilt
    m = nn.PReLU(int(w[0].numel()))
    _copy(m, weight=w)
    return m, x, w[1]


def _dropout(rb: _Rebuild, node: fx.Node, x: fx.Node, kw: dict) -> tuple[nn.Module, fx.Node, str]:
    inplace = _overload_name(node).endswith("_")
    return nn.Dropout(float(kw.get("p", 0.5)), inplace=inplace), x, _stack_owner(node) or "dropout"


def _stack_owner(node: fx.Node) -> str:
    stack = node.meta.get("nn_module_stack") or {}
    return str(list(stack.values())[-1][0]) if stack else ""


_BUILDERS = {
    "conv1d": _conv,
    "conv2d": _conv,
    "conv3d": _conv,
    "convolution": _conv,
    "batch_norm": _batch_norm,
    "_native_batch_norm_legit_no_training": _batch_norm,
    "linear": _linear,
    "addmm": _addmm,
    "mm": _addmm,
    "layer_norm": _layer_norm,
    "group_norm": _group_norm,
    "prelu": _prelu,
    "dropout": _dropout,
    "dropout_": _dropout,
}


# -------------------------------------------------------------------------------------------- check
def _check_rebuilt(program: nn.Module, rebuilt: nn.Module, input_shape: tuple[int, ...]) -> None:
    """The rebuilt module must compute what the program computes, and treat samples independently:
    on two batches of the program's own size, run together, it must give the program's outputs."""
    batch = _batch_size(program.graph) or 1
    shape = tuple(input_shape) or _input_shape(program.graph)
    if not shape:
        raise ModelError("cannot prune this exported program: its input shape is unknown (give --input-shape)")
    x = torch.randn(2 * batch, *shape, generator=torch.Generator().manual_seed(0))
    was = program.training
    program.eval()
    rebuilt.eval()
    try:
        with torch.no_grad():
            try:
                want = [program(x[:batch]), program(x[batch:])]
            except Exception:  # noqa: BLE001 - the program refuses this shape: compare the rebuilt one with itself
                want = None
            try:
                got = rebuilt(x)
                if want is None:
                    want = [rebuilt(x[:batch]), rebuilt(x[batch:])]
                same = all(_close(_rows(got, i * batch, (i + 1) * batch), w) for i, w in enumerate(want))
                alone = same or _close(rebuilt(x[:batch]), want[0])  # only to say what went wrong
            except Exception as e:  # noqa: BLE001 - report any failure of the rebuilt graph as ours
                first = (str(e).strip().splitlines() or [type(e).__name__])[0][:160]
                raise ModelError(
                    f"cannot prune this exported program: its graph does not run on a batch of {2 * batch} "
                    f"({first}); export it with a dynamic batch axis (torch.export.Dim)"
                ) from None
    finally:
        program.train(was)
    if not alone:
        raise ModelError("internal error: the exported program's rebuilt layers disagree with the program")
    if not same:
        raise ModelError(
            "cannot prune this exported program: its graph mixes the samples of a batch (a batch size "
            "fixed at export); export it with a dynamic batch axis (torch.export.Dim)"
        )


def _input_shape(gm: fx.GraphModule) -> tuple[int, ...]:
    for node in gm.graph.nodes:
        if node.op == "placeholder" and isinstance(node.meta.get("val"), torch.Tensor):
            return tuple(int(s) for s in node.meta["val"].shape[1:])
    return ()


def _rows(y: Any, start: int, stop: int) -> Any:
    return pytree.tree_map(lambda t: t[start:stop] if isinstance(t, torch.Tensor) else t, y)


def _close(a: Any, b: Any) -> bool:
    la, lb = pytree.tree_leaves(a), pytree.tree_leaves(b)
    if len(la) != len(lb):
        return False
    for u, v in zip(la, lb, strict=True):
        if isinstance(u, torch.Tensor) != isinstance(v, torch.Tensor):
            return False
        if isinstance(u, torch.Tensor):
            if u.shape != v.shape:
                return False
            scale = float(v.abs().max()) if v.numel() else 0.0
            if u.numel() and float((u - v).abs().max()) > 1e-4 * scale + 1e-5:
                return False
    return True
