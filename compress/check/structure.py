"""Deterministic figures of an ONNX graph: MACs by shape inference, INT8 (Q/DQ) layers, N:M sparsity.

These never fluctuate between runs, so a CI gate can hold them to hard thresholds.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import numpy as np

from compress.errors import BackendError

COMPUTE_OPS = {
    "Conv",
    "ConvTranspose",
    "Gemm",
    "MatMul",
    "QLinearConv",
    "QLinearMatMul",
    "ConvInteger",
    "MatMulInteger",
}
_INTEGER_OPS = {"QLinearConv", "QLinearMatMul", "ConvInteger", "MatMulInteger"}
_PASS_THROUGH = {"Transpose", "Reshape", "Identity", "Cast", "Squeeze", "Unsqueeze", "Flatten"}
# index of the weight input of each compute op
_WEIGHT_INDEX = {
    "Conv": 1,
    "ConvTranspose": 1,
    "Gemm": 1,
    "MatMul": 1,
    "QLinearConv": 3,
    "QLinearMatMul": 3,
    "ConvInteger": 1,
    "MatMulInteger": 1,
}


def load_onnx(path: str | Path):
    """The ONNX model at `path` with its weights, or a BackendError naming the file."""
    import onnx

    path = Path(path)
    if not path.is_file():
        raise BackendError(f"model file not found: {path}")
    try:
        return onnx.load(str(path))
    except Exception as e:  # DecodeError and friends
        msg = str(e).splitlines()[0][:200] if str(e) else type(e).__name__
        raise BackendError(f"{path}: not a readable ONNX file ({msg})") from None


def onnx_macs(model: Any, input_shape: list[int] | tuple[int, ...] | None = None) -> dict[str, Any]:
    """Multiply-accumulates of one sample through Conv, ConvTranspose, Gemm and MatMul nodes.

    Shapes come from ONNX shape inference after fixing a symbolic batch axis to 1 (and the other input
    axes to `input_shape` when given). Nodes whose shapes cannot be inferred are counted in `unknown`;
    `macs` is None when any compute node is unknown, so a gate never compares a partial count.

    Returns {"macs", "by_op", "unknown", "batch"}.
    """
    import onnx

    if isinstance(model, (str, Path)):
        model = load_onnx(model)
    model = onnx.ModelProto.FromString(model.SerializeToString())  # never touch the caller's graph
    inits = {i.name for i in model.graph.initializer}
    batch = 1
    for inp in model.graph.input:
        if inp.name in inits:
            continue
        dims = inp.type.tensor_type.shape.dim
        for k, d in enumerate(dims):
            if k == 0:
                if d.HasField("dim_value") and d.dim_value > 0:
                    batch = d.dim_value
                else:
                    d.dim_value = 1
            elif not (d.HasField("dim_value") and d.dim_value > 0) and input_shape and k - 1 < len(input_shape):
                d.dim_value = int(input_shape[k - 1])
    try:
        inferred = onnx.shape_inference.infer_shapes(model, data_prop=True)
    except Exception as e:  # InferenceError on malformed graphs
        raise BackendError(f"ONNX shape inference failed: {str(e).splitlines()[0][:200]}") from None
    shapes = _shapes(inferred)
    total, unknown = 0, 0
    by_op: dict[str, int] = {}
    for node in inferred.graph.node:
        if node.op_type not in COMPUTE_OPS:
            continue
        macs = _node_macs(node, shapes)
        if macs is None:
            unknown += 1
            continue
        total += macs
        by_op[node.op_type] = by_op.get(node.op_type, 0) + macs
    return {
        "macs": None if unknown else total // batch,
        "by_op": {k: v // batch for k, v in by_op.items()},
        "unknown": unknown,
        "batch": batch,
    }


def _shapes(model) -> dict[str, list[int | None]]:
    out: dict[str, list[int | None]] = {}
    g = model.graph
    for vi in list(g.input) + list(g.value_info) + list(g.output):
        t = vi.type.tensor_type
        if t.HasField("shape"):
            out[vi.name] = [d.dim_value if d.HasField("dim_value") and d.dim_value > 0 else None for d in t.shape.dim]
    for init in g.initializer:
        out[init.name] = list(init.dims)
    for node in g.node:
        if node.op_type == "Constant":
            for a in node.attribute:
                if a.name == "value":
                    out[node.output[0]] = list(a.t.dims)
    return out


def _known(shape: list[int | None] | None) -> bool:
    return shape is not None and all(isinstance(d, int) for d in shape)


def _node_macs(node, shapes: dict[str, list[int | None]]) -> int | None:
    op = node.op_type
    widx = _WEIGHT_INDEX[op]
    if len(node.input) <= widx:
        return None
    w = shapes.get(node.input[widx])
    out = shapes.get(node.output[0])
    x = shapes.get(node.input[0])
    if op in ("Conv", "QLinearConv", "ConvInteger"):
        if not (_known(w) and _known(out)):
            return None
        return math.prod(out) * math.prod(w[1:])
    if op == "ConvTranspose":
        if not (_known(w) and _known(x)):
            return None
        return math.prod(x) * math.prod(w[1:])
    if op == "Gemm":
        if not (_known(x) and _known(out)) or len(x) != 2:
            return None
        trans_a = next((a.i for a in node.attribute if a.name == "transA"), 0)
        k = x[0] if trans_a else x[1]
        return math.prod(out) * k
    # MatMul family: out [..., M, N], K = last axis of A
    if not (_known(x) and _known(out)) or not x:
        return None
    return math.prod(out) * x[-1]


def weight_layers(model: Any) -> list[dict[str, Any]]:
    """Every compute node with its weight: name, op, weight source, int8-ness and the weight array.

    A layer counts as INT8 when it is an integer op (QLinearConv, ConvInteger, ...) or its weight comes
    (through Transpose/Reshape/...) from a DequantizeLinear; `act_int8` says whether its activation
    input comes from a DequantizeLinear too.
    """
    from onnx import numpy_helper

    if isinstance(model, (str, Path)):
        model = load_onnx(model)
    g = model.graph
    inits = {i.name: i for i in g.initializer}
    producer = {o: n for n in g.node for o in n.output}
    for n in g.node:
        if n.op_type == "Constant":
            for a in n.attribute:
                if a.name == "value":
                    inits.setdefault(n.output[0], a.t)
    layers = []
    for node in g.node:
        if node.op_type not in COMPUTE_OPS:
            continue
        widx = _WEIGHT_INDEX[node.op_type]
        if len(node.input) <= widx:
            continue
        name = node.input[widx]
        transposes: list[list[int] | None] = []
        int8 = node.op_type in _INTEGER_OPS
        array = None
        zero_point = None
        while True:
            if name in inits:
                array = numpy_helper.to_array(inits[name])
                break
            src = producer.get(name)
            if src is None:
                break
            if src.op_type == "DequantizeLinear":
                int8 = True
                if len(src.input) > 2 and src.input[2] in inits:
                    zero_point = numpy_helper.to_array(inits[src.input[2]])
                name = src.input[0]
                continue
            if src.op_type == "QuantizeLinear":
                name = src.input[0]
                zero_point = None
                continue
            if src.op_type in _PASS_THROUGH:
                if src.op_type == "Transpose":
                    perm = next((list(a.ints) for a in src.attribute if a.name == "perm"), None)
                    transposes.append(perm)
                elif src.op_type != "Identity" and src.op_type != "Cast":
                    array = None
                    name = None
                    break
                name = src.input[0]
                continue
            break
        if array is not None:
            if zero_point is not None and zero_point.size == 1:
                array = array.astype(np.int64) - int(zero_point.reshape(-1)[0])
            for perm in reversed(transposes):
                array = np.transpose(array, perm) if perm else array.T
        act_src = producer.get(node.input[0])
        act_int8 = node.op_type in _INTEGER_OPS or (act_src is not None and act_src.op_type == "DequantizeLinear")
        trans_b = next((a.i for a in node.attribute if a.name == "transB"), 0)
        layers.append(
            {
                "name": node.name or node.output[0],
                "op": node.op_type,
                "int8": int8,
                "act_int8": act_int8,
                "weight": array,
                "trans_b": trans_b,
            }
        )
    return layers


def quantized_layers(model: Any) -> dict[str, Any]:
    """How many compute layers run on INT8 weights (and activations)."""
    layers = weight_layers(model)
    return {
        "layers": len(layers),
        "int8_weights": sum(lay["int8"] for lay in layers),
        "int8_weights_and_activations": sum(lay["int8"] and lay["act_int8"] for lay in layers),
    }


def parse_nm(pattern: str) -> tuple[int, int]:
    """'2:4' -> (2, 4): at most N nonzeros in every group of M (see `compress.sparsity.masks`)."""
    from compress.sparsity.masks import parse_nm as _parse

    return _parse(pattern)


def is_nm_sparse(weight: np.ndarray, axis: int, n: int, m: int) -> bool | None:
    """Whether every group of `m` consecutive entries along `axis` has at most `n` nonzeros.

    None when the axis length is not a multiple of `m` (the layer cannot carry the pattern).
    """
    from compress.sparsity.masks import holds

    return holds(weight, n, m, axis)


def nm_sparsity(model: Any, pattern: str = "2:4") -> dict[str, Any]:
    """Which compute layers are N:M sparse along their input-channel axis: the one checker,
    `compress.sparsity.check.pattern_report` (also used on torch models and by `info --sparsity`).

    The input-channel axis is 1 for Conv weights [Cout, Cin/g, kh, kw] and Gemm with transB,
    0 for Gemm without transB, ConvTranspose and MatMul weights [K, N] (second to last when batched).
    """
    from compress.sparsity.check import pattern_report

    return pattern_report(model, pattern)
