"""A checker of QuantizeLinear / DequantizeLinear graphs, for ONNX Runtime and TensorRT.

It reads the ONNX file only (runs on any CPU) and reports how the graph is quantized: Q/DQ counts,
integer dtypes, zero-points, per-channel axes, which Conv/Gemm/MatMul run quantized, and every
violation of the target's rules. TensorRT's explicit-quantization rules (see
`shared/docs/deployment.md`): symmetric (zero-point 0), signed INT8 (no UINT8), weights per-channel
on the output-channel axis, activations per-tensor, Q/DQ on the inputs of Conv/Gemm/MatMul (not on
their outputs). ONNX Runtime accepts asymmetric and UINT8 graphs; for it only the structural rules
are checked (positive finite scales, zero-point shape and axis consistent with the scale).
"""

from __future__ import annotations

from collections import Counter
from pathlib import Path
from typing import Any, Literal

import numpy as np

from compress.errors import BackendError, ModelError

COMPUTE_OPS = ("Conv", "ConvTranspose", "Gemm", "MatMul")
# shape-only ops a Q/DQ pair may sit behind without changing what the compute node receives
_PASS_THROUGH = ("Transpose", "Reshape", "Identity", "Flatten", "Squeeze", "Unsqueeze")
TARGETS = ("tensorrt", "onnxruntime")
# an ONNX QuantizeLinear without zero-point (and without output_dtype) produces uint8
_DEFAULT_QTYPE = "uint8"


def check_qdq(path: str | Path, target: Literal["tensorrt", "onnxruntime"] = "tensorrt") -> dict[str, Any]:
    """Inspect the Q/DQ nodes of the ONNX model at `path` against `target`'s rules.

    Returns a dict with `quantize_linear`, `dequantize_linear` (counts), `dtypes` (count per integer
    type), `symmetric`, `weights` / `activations` (per-channel / per-tensor counts, axes),
    `compute_nodes` / `quantized_compute_nodes` / `float_compute_nodes`, `violations` (strings, each
    naming the node), `warnings`, and `valid` (no violations and at least one Q/DQ node).
    """
    import onnx

    if target not in TARGETS:
        raise ModelError(f"unknown Q/DQ target '{target}'; available: {', '.join(TARGETS)}")
    path = Path(path)
    if not path.is_file():
        raise ModelError(f"ONNX file not found: {path}")
    try:
        model = onnx.load(str(path))
    except Exception as e:  # DecodeError and friends
        raise BackendError(f"{path}: not a readable ONNX file ({str(e).strip()[:200]})") from None
    report = check_qdq_model(model, target)
    report["path"] = str(path)
    return report


def check_qdq_model(model: Any, target: str = "tensorrt") -> dict[str, Any]:
    """`check_qdq` on an in-memory `onnx.ModelProto`."""
    from onnx import numpy_helper

    graph = model.graph
    consts: dict[str, np.ndarray] = {t.name: numpy_helper.to_array(t) for t in graph.initializer}
    for node in graph.node:
        if node.op_type == "Constant":
            for a in node.attribute:
                if a.name == "value":
                    consts[node.output[0]] = numpy_helper.to_array(a.t)
    producer = {o: n for n in graph.node for o in n.output}
    consumers: dict[str, list[Any]] = {}
    for n in graph.node:
        for i, name in enumerate(n.input):
            consumers.setdefault(name, []).append((n, i))

    violations: list[str] = []
    warnings: list[str] = []
    dtypes: Counter[str] = Counter()
    weights = {"per_channel": 0, "per_tensor": 0, "axes": Counter()}
    acts = {"per_channel": 0, "per_tensor": 0}
    symmetric = True
    counts = Counter(n.op_type for n in graph.node)
    trt = target == "tensorrt"

    def name_of(n) -> str:
        return n.name or f"{n.op_type}({n.output[0]})"

    for node in graph.node:
        if node.op_type not in ("QuantizeLinear", "DequantizeLinear"):
            continue
        label = name_of(node)
        attrs = {a.name: onnx_attr(a) for a in node.attribute}
        scale = consts.get(node.input[1]) if len(node.input) > 1 else None
        zp = consts.get(node.input[2]) if len(node.input) > 2 and node.input[2] else None
        qtype = _qtype(node, zp, consts, attrs)
        dtypes[qtype] += 1
        if scale is None:
            warnings.append(f"{label}: scale is computed at run time (not a constant); not checked")
            continue
        if not np.all(np.isfinite(scale)) or np.any(scale <= 0):
            violations.append(f"{label}: scale must be positive and finite")
        if zp is not None and zp.shape != scale.shape:
            violations.append(f"{label}: zero-point shape {zp.shape} differs from scale shape {scale.shape}")
        if zp is not None and np.any(zp != 0):
            symmetric = False
            if trt:
                violations.append(f"{label}: asymmetric (zero-point {_fmt_zp(zp)}); TensorRT needs zero-point 0")
        if trt and qtype != "int8":
            violations.append(f"{label}: {qtype} quantization; TensorRT needs signed int8")
        if "block_size" in attrs and attrs["block_size"]:
            warnings.append(f"{label}: blocked quantization (block_size {attrs['block_size']})")
        per_channel = scale.size > 1
        is_weight, use = _weight_use(node, consts, producer, consumers)
        axis = int(attrs.get("axis", 1))
        if is_weight:
            rank = _weight_rank(node, consts, producer)
            if per_channel:
                weights["per_channel"] += 1
                ax = axis % rank if rank else axis
                weights["axes"][ax] += 1
                want = _output_axis(use, rank)
                if trt and want is not None and ax != want:
                    violations.append(
                        f"{label}: weight of {name_of(use[0])} quantized per channel on axis {ax}; "
                        f"TensorRT needs the output-channel axis {want}"
                    )
            else:
                weights["per_tensor"] += 1
                if trt and node.op_type == "DequantizeLinear" and use and use[0].op_type in COMPUTE_OPS:
                    out_ch = _out_channels(use, consts, producer, node)
                    if out_ch is None or out_ch > 1:
                        violations.append(
                            f"{label}: weight of {name_of(use[0])} quantized per tensor; TensorRT needs per-channel"
                        )
        elif node.op_type == "QuantizeLinear" or _op(producer.get(node.input[0])) != "QuantizeLinear":
            if per_channel:
                acts["per_channel"] += 1
                if trt:
                    violations.append(f"{label}: activation quantized per channel; TensorRT needs per-tensor")
            else:
                acts["per_tensor"] += 1
        if trt and node.op_type == "QuantizeLinear":
            src = producer.get(node.input[0])
            if src is not None and src.op_type in COMPUTE_OPS:
                outs = [c for dq in consumers.get(node.output[0], []) for c in consumers.get(dq[0].output[0], [])]
                if not any(c[0].op_type in (*COMPUTE_OPS, "Add", "Concat") for c in outs):
                    violations.append(
                        f"{label}: quantizes the output of {name_of(src)} and feeds no Conv/Gemm/MatMul/Add; "
                        "TensorRT wants Q/DQ on compute inputs"
                    )

    compute = [n for n in graph.node if n.op_type in COMPUTE_OPS]
    quantized, floating = [], []
    for n in compute:
        data_q = _from_dq(n.input[0], producer)
        weight_q = len(n.input) > 1 and _from_dq(n.input[1], producer)
        (quantized if data_q and weight_q else floating).append(name_of(n))
        if trt and (data_q != weight_q) and counts["QuantizeLinear"] + counts["DequantizeLinear"]:
            which = "data" if data_q else "weight"
            violations.append(f"{name_of(n)}: only its {which} input is quantized; TensorRT fuses Q/DQ on both")
    n_q, n_dq = counts["QuantizeLinear"], counts["DequantizeLinear"]
    if n_q + n_dq == 0:
        warnings.append("no QuantizeLinear/DequantizeLinear nodes: the model is not quantized")
    elif floating:
        warnings.append(f"{len(floating)} of {len(compute)} Conv/Gemm/MatMul nodes run in float")
    return {
        "target": target,
        "quantize_linear": n_q,
        "dequantize_linear": n_dq,
        "dtypes": dict(dtypes),
        "symmetric": symmetric,
        "weights": {
            "per_channel": weights["per_channel"],
            "per_tensor": weights["per_tensor"],
            "axes": {str(k): v for k, v in sorted(weights["axes"].items())},
        },
        "activations": dict(acts),
        "compute_nodes": len(compute),
        "quantized_compute_nodes": len(quantized),
        "float_compute_nodes": floating,
        "violations": violations,
        "warnings": warnings,
        "valid": not violations and n_q + n_dq > 0,
    }


def _op(node: Any) -> str:
    return node.op_type if node is not None else ""


def onnx_attr(a: Any) -> Any:
    from onnx import helper

    return helper.get_attribute_value(a)


_ONNX_TYPES = {
    2: "uint8",
    3: "int8",
    4: "uint16",
    5: "int16",
    6: "int32",
    21: "uint4",
    22: "int4",
    17: "float8e4m3fn",
    18: "float8e4m3fnuz",
    19: "float8e5m2",
    20: "float8e5m2fnuz",
}


def _qtype(node, zp, consts, attrs) -> str:
    if zp is not None:
        return str(zp.dtype)
    if node.op_type == "QuantizeLinear":
        return _ONNX_TYPES.get(int(attrs.get("output_dtype", 0) or 0), _DEFAULT_QTYPE)
    data = consts.get(node.input[0])
    return str(data.dtype) if data is not None else _DEFAULT_QTYPE


def _fmt_zp(zp: np.ndarray) -> str:
    flat = zp.reshape(-1)
    return str(int(flat[0])) if flat.size == 1 else f"[{', '.join(str(int(v)) for v in flat[:3])}, ...]"


def _input_is_constant(node, consts, producer) -> bool:
    name = node.input[0]
    if name in consts:
        return True
    src = producer.get(name)
    # a weight may reach a DQ through a Q (float weight -> Q -> DQ) or a Reshape/Transpose of a constant
    while src is not None and src.op_type in ("QuantizeLinear", "Transpose", "Reshape", "Identity"):
        if src.input[0] in consts:
            return True
        src = producer.get(src.input[0])
    return False


def _weight_use(node, consts, producer, consumers) -> tuple[bool, list]:
    """Whether `node` quantizes a weight, and the (compute node, input index) it feeds."""
    if not _input_is_constant(node, consts, producer):
        return False, []
    out = node.output[0]
    frontier = [out]
    if node.op_type == "QuantizeLinear":
        frontier = [c[0].output[0] for c in consumers.get(out, []) if c[0].op_type == "DequantizeLinear"]
    for name in frontier:
        for c, idx in consumers.get(name, []):
            hops = 0
            while c.op_type in _PASS_THROUGH and hops < 3:
                nxt = consumers.get(c.output[0], [])
                if not nxt:
                    break
                c, idx = nxt[0]
                hops += 1
            if c.op_type in COMPUTE_OPS and idx == 1:
                return True, [c, idx]
    return True, []


def _weight_rank(node, consts, producer) -> int:
    name = node.input[0]
    while name not in consts:
        src = producer.get(name)
        if src is None:
            return 0
        name = src.input[0]
    return int(consts[name].ndim)


def _output_axis(use: list, rank: int) -> int | None:
    if not use:
        return None
    op = use[0]
    if op.op_type == "Conv":
        return 0
    if op.op_type == "ConvTranspose":
        return 1
    if op.op_type == "Gemm":
        trans_b = next((onnx_attr(a) for a in op.attribute if a.name == "transB"), 0)
        return 0 if trans_b else 1
    if op.op_type == "MatMul":
        return rank - 1 if rank else None
    return None


def _out_channels(use, consts, producer, node) -> int | None:
    name = node.input[0]
    while name not in consts:
        src = producer.get(name)
        if src is None:
            return None
        name = src.input[0]
    shape = consts[name].shape
    axis = _output_axis(use, len(shape))
    return int(shape[axis]) if axis is not None and shape else None


def _from_dq(name: str, producer) -> bool:
    src = producer.get(name)
    hops = 0
    # MaxPool commutes with quantization: DQ -> MaxPool -> Conv still runs the Conv quantized
    while src is not None and src.op_type in (*_PASS_THROUGH, "MaxPool") and hops < 3:
        src = producer.get(src.input[0])
        hops += 1
    return src is not None and src.op_type == "DequantizeLinear"
