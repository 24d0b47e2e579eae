"""Static figures of a model: parameters, MACs, size, and a per-layer table."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from torch import nn


def count_params(module: nn.Module) -> int:
    """Number of weights the network computes with.

    Plain layers count their parameter elements; compressed layers that store weights in another form
    (codebook indices, trainable bits) count the weights they stand for via `logical_params()`.
    """
    total = 0
    skip: set[int] = set()
    for m in module.modules():
        if id(m) in skip:
            continue
        if hasattr(m, "logical_params"):
            total += int(m.logical_params())
            skip.update(id(c) for c in m.modules())
        else:
            total += sum(p.numel() for p in m.parameters(recurse=False))
    return total


def count_macs(module: nn.Module, input_shape: tuple[int, ...], *, per_module: bool = False) -> Any:
    """Multiply-accumulates of one forward pass on one sample, counted by torch's FlopCounterMode.

    Returns the total, or (total, {module path: MACs}) with `per_module`.
    """
    import torch
    from torch.utils.flop_counter import FlopCounterMode

    was_training = module.training
    module.eval()
    counter = FlopCounterMode(display=False, depth=None)
    try:
        # grad mode on: with it off, nn.MultiheadAttention takes a fused fast path that the counter misses
        with torch.enable_grad(), counter:
            module(torch.zeros(1, *input_shape))
    except RuntimeError as e:
        from compress.errors import ModelError

        first = str(e).strip().splitlines()[0][:200] if str(e).strip() else type(e).__name__
        raise ModelError(f"the model does not accept inputs of shape {list(input_shape)} ({first})") from None
    finally:
        module.train(was_training)
    total = counter.get_total_flops() // 2
    if not per_module:
        return total
    flops = counter.get_flop_counts()
    table = {}
    for name, ops in flops.items():
        table[name] = sum(ops.values()) // 2
    return total, table


def layer_table(module: nn.Module, input_shape: tuple[int, ...]) -> list[dict[str, Any]]:
    """One row per leaf module: name, type, output shape, params, MACs."""
    import torch

    _, macs = count_macs(module, input_shape, per_module=True)
    root = type(module).__name__
    shapes: dict[str, list[int]] = {}
    hooks = []
    for name, m in module.named_modules():
        if name and not list(m.children()):

            def hook(_m, _i, out, name=name):
                if isinstance(out, torch.Tensor):
                    shapes[name] = list(out.shape[1:])

            hooks.append(m.register_forward_hook(hook))
    try:
        with torch.no_grad():
            module.eval()(torch.zeros(1, *input_shape))
    finally:
        for h in hooks:
            h.remove()
    rows = []
    for name, m in module.named_modules():
        if not name or list(m.children()):
            continue
        rows.append(
            {
                "name": name,
                "type": type(m).__name__,
                "output": shapes.get(name),
                "params": sum(p.numel() for p in m.parameters(recurse=False)),
                "macs": macs.get(f"{root}.{name}", 0),
            }
        )
    return rows


def model_summary(module: nn.Module, input_shape: tuple[int, ...]) -> dict[str, Any]:
    params = count_params(module)
    return {
        "params": params,
        "macs": count_macs(module, input_shape),
        "fp32_bytes": sum(p.numel() * p.element_size() for p in module.parameters())
        + sum(b.numel() * b.element_size() for b in module.buffers()),
        "input_shape": list(input_shape),
    }


def onnx_summary(path: str | Path) -> dict[str, Any]:
    """Parameters (initializer elements), op counts, opset and size of an ONNX file."""
    import collections

    import onnx

    from compress.errors import BackendError

    path = Path(path)
    try:
        model = onnx.load(str(path), load_external_data=False)
    except Exception as e:  # DecodeError and friends
        raise BackendError(
            f"{path}: not a readable ONNX file ({str(e).splitlines()[0][:200] if str(e) else type(e).__name__})"
        ) from None
    if not model.graph.node:
        raise BackendError(f"{path}: an ONNX file with no graph")
    params = 0
    dtypes: collections.Counter[str] = collections.Counter()
    for init in model.graph.initializer:
        n = 1
        for d in init.dims:
            n *= d
        params += n
        dtypes[onnx.TensorProto.DataType.Name(init.data_type)] += n
    ops = collections.Counter(node.op_type for node in model.graph.node)
    inputs = [
        {
            "name": i.name,
            "shape": [
                d.dim_value if d.HasField("dim_value") else d.dim_param or None for d in i.type.tensor_type.shape.dim
            ],
        }
        for i in model.graph.input
        if i.name not in {x.name for x in model.graph.initializer}
    ]
    return {
        "bytes": path.stat().st_size,
        "params": params,
        "initializer_dtypes": dict(dtypes),
        "ops": dict(ops.most_common()),
        "nodes": len(model.graph.node),
        "opset": max((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), default=None),
        "inputs": inputs,
    }
