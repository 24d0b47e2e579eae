"""ATen operators, as they appear in a `torch.export` program's graph, on the existing handlers.

The layers of an exported program are rebuilt as modules (`compress.prune.exported`); what is left
is ATen calls. Most take their arguments in the order of the torch function they come from
(`aten.mean.dim(x, dim, keepdim)` is `torch.mean(x, dim, keepdim)`), so they are registered on that
function's handler; the few that differ (`permute`, `transpose`, `t`, `split`, `slice`, `select`,
`sym_size`, the pads) get a small adapter here. In-place variants (`relu_`, `add_`) move labels the
same way. ATen layer calls that could not be rebuilt are left unregistered: the analysis keeps
their channels whole. Asserts that the exporter inserts are no-ops for the labels.
"""

from __future__ import annotations

from typing import Any

import torch

from compress.prune.labels import L, Unsupported, tensor_arg, value_of
from compress.prune.ops import attention, elementwise, index, reduce, shape
from compress.prune.ops.registry import register_function

aten = torch.ops.aten


def _ops(*names: str, inplace: bool = False, only: tuple[str, ...] = ()) -> list[Any]:
    """Every overload of the named ATen ops (and of their `_` in-place forms), or only `only` ones."""
    found = []
    for name in names:
        for n in (name, name + "_") if inplace else (name,):
            packet = getattr(aten, n, None)
            if packet is None:
                continue
            for overload in packet.overloads():
                if overload == "out" or overload.endswith("_out") or (only and overload not in only):
                    continue
                found.append(getattr(packet, overload))
    return found


_UNARY = (
    "relu", "hardtanh", "gelu", "silu", "hardswish", "hardsigmoid", "sigmoid", "tanh", "leaky_relu", "elu",
    "selu", "celu", "mish", "softplus", "exp", "log", "abs", "sqrt", "rsqrt", "erf", "neg", "reciprocal",
    "clamp", "clamp_min", "clamp_max", "dropout", "feature_dropout", "alpha_dropout",
)  # fmt: skip
_COPIES = ("clone", "alias", "detach", "contiguous", "_to_copy", "to", "type_as", "lift_fresh_copy")

register_function(*_ops(*_UNARY, inplace=True), *_ops(*_COPIES))(elementwise.passthrough)
register_function(*_ops("pow", only=("Tensor_Scalar",), inplace=True))(elementwise.passthrough)
register_function(
    *_ops("add", "sub", "mul", "div", inplace=True),
    *_ops("pow", only=("Tensor_Tensor",), inplace=True),
    *_ops("maximum", "minimum"),
)(elementwise.binary_function)

register_function(*_ops("mean", "sum", "amax", "amin", only=("default", "dim", "dim_IntList")))(reduce.reduce_function)
register_function(
    *_ops(
        "adaptive_avg_pool1d",
        "adaptive_avg_pool2d",
        "adaptive_avg_pool3d",
        "_adaptive_avg_pool2d",
        "avg_pool1d",
        "avg_pool2d",
        "avg_pool3d",
        "max_pool1d",
        "max_pool2d",
        "max_pool3d",
        "upsample_nearest1d",
        "upsample_nearest2d",
        "upsample_nearest3d",
        "upsample_bilinear2d",
        "upsample_bicubic2d",
        "upsample_linear1d",
        "upsample_trilinear3d",
    )
)(reduce.pool_function)
register_function(*_ops("softmax", "_softmax", "log_softmax", "_log_softmax"))(reduce.softmax_function)

register_function(*_ops("view", "reshape", "_unsafe_view", only=("default",)))(shape.reshape_function)
register_function(*_ops("flatten", "squeeze", "unsqueeze"))(shape.flatten_function)
register_function(*_ops("expand", only=("default",)))(shape.expand_method)
register_function(*_ops("cat", "concat", "concatenate"))(index.cat)
register_function(*_ops("matmul", "bmm", "mm"))(attention.matmul_function)
register_function(*_ops("scaled_dot_product_attention"))(attention.sdpa)


@register_function(*_ops("_assert_tensor_metadata", "_assert_async", "_assert_scalar", "sym_constrain_range"))
def assertion(g, node, args: list, kwargs: dict) -> None:
    """Checks the exporter inserted: no value, no channel flow."""
    return None


@register_function(*_ops("permute", only=("default",)))
def permute(g, node, args: list, kwargs: dict) -> L:
    return shape.permute(g, node, tensor_arg(node, args[0]), "permute", [kwargs.get("dims", args[1])])


@register_function(*_ops("transpose", only=("int",)))
def transpose(g, node, args: list, kwargs: dict) -> L:
    return shape.permute(g, node, tensor_arg(node, args[0]), "transpose", [args[1], args[2]])


@register_function(*_ops("t", only=("default",)))
def t(g, node, args: list, kwargs: dict) -> L:
    x = tensor_arg(node, args[0])
    if len(x.shape) != 2:
        return x  # t() of a vector is the vector
    return shape.permute(g, node, x, "transpose", [0, 1])


@register_function(*_ops("sym_size", only=("int",)))
def sym_size(g, node, args: list, kwargs: dict) -> Any:
    x = args[0]
    if not isinstance(x, L):
        return None
    return shape._shape(g, x, node.args[0]).size(int(args[1]))


@register_function(*_ops("split", only=("Tensor",)), *_ops("split_with_sizes", only=("default",)))
def split(g, node, args: list, kwargs: dict) -> tuple:
    spec = args[1] if len(args) > 1 else kwargs.get("split_size", kwargs.get("split_sizes"))
    return index.split(g, node, tensor_arg(node, args[0]), "split", spec, index._dim(args, kwargs, 2))


@register_function(*_ops("chunk", only=("default",)))
def chunk(g, node, args: list, kwargs: dict) -> tuple:
    spec = args[1] if len(args) > 1 else kwargs.get("chunks")
    return index.split(g, node, tensor_arg(node, args[0]), "chunk", spec, index._dim(args, kwargs, 2))


@register_function(*_ops("unbind", only=("int",)))
def unbind(g, node, args: list, kwargs: dict) -> tuple:
    return index.unbind(g, node, tensor_arg(node, args[0]), index._dim(args, kwargs, 1))


@register_function(*_ops("slice", only=("Tensor",)))
def slice_(g, node, args: list, kwargs: dict) -> L:
    """`x[..., a:b:c]` along one axis: `aten.slice(x, dim, start, end, step)`."""
    x = tensor_arg(node, args[0])
    dim, start, end, step = (list(args[1:]) + [0, None, None, 1][len(args) - 1 :])[:4]
    dim = int(value_of(dim)) % len(x.shape)
    return index.index_tensor(g, node, x, (slice(None),) * dim + (slice(start, end, step),))


@register_function(*_ops("select", only=("int",)))
def select(g, node, args: list, kwargs: dict) -> L:
    """`x[..., i]` along one axis: `aten.select(x, dim, index)`."""
    x = tensor_arg(node, args[0])
    dim = int(value_of(args[1])) % len(x.shape)
    return index.index_tensor(g, node, x, (slice(None),) * dim + (int(value_of(args[2])),))


@register_function(*_ops("constant_pad_nd", "reflection_pad1d", "reflection_pad2d", "replication_pad2d"))
def pad(g, node, args: list, kwargs: dict) -> L:
    """Padding (`aten.constant_pad_nd(x, pad, value)`): fine unless it pads coupled channels."""
    if not isinstance(args[0], L):
        raise Unsupported(f"{node.name}: input is not a tensor")
    return reduce.shift(g, node, args[:2], {})
