"""Rewrites of a Q/DQ ONNX graph that keep what it computes and change how a runtime can run it.

Each function edits an `onnx.ModelProto` in place and returns how many places it changed. Which of
them a target needs is decided by that target's rules (`compress.quantize.targets`), not here.

- `activations_to_uint8`: an int8 activation Q/DQ pair becomes uint8 with the zero-point moved by
  128 (bit-exact: the same grid of real values). ONNX Runtime fuses DQ -> Conv -> Q into QLinearConv
  only when the input and output activations have one integer type; NNCF mixes int8 (signed
  tensors) and uint8 (after ReLU), which left most MobileNet convolutions in float.
- `absorb_activations`: Relu and Clip(0, hi) in front of a QuantizeLinear are folded into the
  quantization range (uint8, zero-point 0, top of the range at most `hi`), and removed, so the Conv
  feeds its QuantizeLinear directly.
- `to_signed_int8`: symmetric uint8 pairs become signed int8 (TensorRT accepts only int8).
- `fold_weight_quantizers`: `float weight -> QuantizeLinear` becomes the integer weight it computes.
- `share_pool_grid`: the QuantizeLinear after a MaxPool takes the grid of the DequantizeLinear before it
  (a max of grid values is a grid value: requantizing on the same grid is exact), so ONNX Runtime drops
  the pair and pools the integers instead of dequantizing, pooling in float and quantizing again.
- `integer_activations`: HardSwish / SiLU between quantized tensors as QLinearAdd or QLinearSigmoid
  plus QLinearMul (ORT has no integer HardSwish or SiLU).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from compress.errors import CompressError


def constants_to_initializers(graph: Any) -> int:
    """Move single-tensor Constant nodes into initializers (the TorchScript exporter writes scales as Constants)."""
    import onnx

    moved = 0
    for node in [n for n in graph.node if n.op_type == "Constant"]:
        if len(node.attribute) == 1 and node.attribute[0].name == "value":
            t = onnx.TensorProto()
            t.CopyFrom(node.attribute[0].t)
            t.name = node.output[0]
            graph.initializer.append(t)
            graph.node.remove(node)
            moved += 1
    return moved


def _consumers(graph: Any) -> dict[str, list[Any]]:
    out: dict[str, list[Any]] = {}
    for n in graph.node:
        for name in n.input:
            out.setdefault(name, []).append(n)
    return out


def _activation_quantizers(graph: Any, inits: dict[str, Any]) -> list[Any]:
    """QuantizeLinear nodes of activations (their input is computed, not an initializer)."""
    return [n for n in graph.node if n.op_type == "QuantizeLinear" and n.input[0] not in inits and len(n.input) >= 3]


def _all_names(graph: Any) -> set[str]:
    """Every tensor name of the graph: initializers, inputs, node outputs."""
    names = {t.name for t in graph.initializer} | {i.name for i in graph.input}
    return names | {o for n in graph.node for o in n.output}


def _fresh_name(taken: set[str], stem: str, suffixes: tuple[str, ...] = ("",)) -> str:
    """`stem`, or `stem_1`, `stem_2`, ...: the first for which no `name + suffix` is in `taken` (they join it)."""
    name, k = stem, 0
    while any(name + s in taken for s in suffixes):
        k += 1
        name = f"{stem}_{k}"
    taken.update(name + s for s in suffixes)
    return name


def duplicate_initializers(graph: Any) -> list[str]:
    """Initializer names written more than once. ONNX Runtime keeps the last copy and treats the name as a
    graph input (not a constant), so no DequantizeLinear reading it joins an integer kernel."""
    seen: set[str] = set()
    dup: list[str] = []
    for t in graph.initializer:
        if t.name in seen and t.name not in dup:
            dup.append(t.name)
        seen.add(t.name)
    return dup


def _drop_unused(graph: Any) -> None:
    used = {i for n in graph.node for i in n.input} | {o.name for o in graph.output}
    for t in list(graph.initializer):
        if t.name not in used:
            graph.initializer.remove(t)
    del graph.value_info[:]  # stale integer types; ONNX Runtime re-infers them


def activations_to_uint8(model: Any) -> int:
    """int8 activation Q/DQ pairs -> uint8 with zero-point + 128 (the same values, bit for bit)."""
    from onnx import numpy_helper

    graph = model.graph
    constants_to_initializers(graph)
    inits = {t.name: t for t in graph.initializer}
    consumers = _consumers(graph)
    renamed: dict[str, str] = {}
    count = 0
    for q in _activation_quantizers(graph, inits):
        z_name = q.input[2]
        if z_name not in inits:
            continue
        zp = numpy_helper.to_array(inits[z_name])
        if zp.dtype != np.int8:
            continue
        if z_name not in renamed:
            new = f"{z_name}_u8"
            graph.initializer.append(numpy_helper.from_array((zp.astype(np.int16) + 128).astype(np.uint8), new))
            renamed[z_name] = new
        q.input[2] = renamed[z_name]
        for dq in consumers.get(q.output[0], []):
            if dq.op_type == "DequantizeLinear" and len(dq.input) > 2:
                dq.input[2] = renamed[z_name]
        count += 1
    if count:
        _drop_unused(graph)
    return count


def absorb_activations(model: Any, ops: tuple[str, ...] = ("Relu", "Clip")) -> int:
    """Fold Relu / Clip(0, hi) into the uint8 range of the QuantizeLinear nodes that consume it.

    A Q with uint8 zero-point 0 clamps below at 0 (the Relu) and above at 255 * scale; choosing
    scale = min(current top of range, hi) / 255 makes the clamp at hi redundant too, so the
    activation node is removed. Applies only where every consumer of the activation is a per-tensor
    QuantizeLinear and the activation is not a graph output.
    """
    from onnx import numpy_helper

    graph = model.graph
    constants_to_initializers(graph)
    inits = {t.name: t for t in graph.initializer}
    consumers = _consumers(graph)
    outputs = {o.name for o in graph.output}

    def const(name: str) -> np.ndarray | None:
        return numpy_helper.to_array(inits[name]) if name in inits else None

    removed = []
    for node in graph.node:
        if node.op_type not in ops or node.output[0] in outputs:
            continue
        bounds = _clip_bounds(node, const) if node.op_type == "Clip" else (0.0, float("inf"))
        if bounds is None:
            continue
        lo, hi = bounds
        if lo != 0.0 or not hi > 0:
            continue
        qs = consumers.get(node.output[0], [])
        if not qs or any(q.op_type != "QuantizeLinear" or len(q.input) < 3 for q in qs):
            continue
        scales = [const(q.input[1]) for q in qs]
        zps = [const(q.input[2]) for q in qs]
        if any(s is None or s.size != 1 for s in scales) or any(z is None or z.size != 1 for z in zps):
            continue
        for q, s, z in zip(qs, scales, zps, strict=True):
            top = (int(np.iinfo(z.dtype).max) - int(z.reshape(-1)[0])) * float(s.reshape(-1)[0])
            new_scale = np.asarray(min(top, hi) / 255.0, dtype=np.float32)
            s_name, z_name = f"{q.output[0]}_absorbed_scale", f"{q.output[0]}_absorbed_zp"
            graph.initializer.append(numpy_helper.from_array(new_scale, s_name))
            graph.initializer.append(numpy_helper.from_array(np.asarray(0, dtype=np.uint8), z_name))
            q.input[0], q.input[1], q.input[2] = node.input[0], s_name, z_name
            for dq in consumers.get(q.output[0], []):
                if dq.op_type == "DequantizeLinear":
                    dq.input[1] = s_name
                    if len(dq.input) > 2:
                        dq.input[2] = z_name
                    else:
                        dq.input.append(z_name)
        removed.append(node)
    for node in removed:
        graph.node.remove(node)
    if removed:
        _drop_unused(graph)
    return len(removed)


def _clip_bounds(node: Any, const: Any) -> tuple[float, float] | None:
    """A Clip's (min, max), None when a bound is computed at run time. Opset >= 11: inputs; before: attributes."""
    if len(node.input) == 1 and node.attribute:
        attrs = {a.name: a.f for a in node.attribute}
        return attrs.get("min", float("-inf")), attrs.get("max", float("inf"))
    out = []
    for i, default in ((1, float("-inf")), (2, float("inf"))):
        name = node.input[i] if len(node.input) > i else ""
        if not name:
            out.append(default)
            continue
        value = const(name)
        if value is None or value.size != 1:
            return None
        out.append(float(value.reshape(-1)[0]))
    return out[0], out[1]


def to_signed_int8(path: Path) -> int:
    """Rewrite symmetric UINT8 Q/DQ pairs (zero-point 0, e.g. after ReLU) as signed INT8 for TensorRT.

    A uint8 range [0, 255*s] becomes int8 [-128*s', 127*s'] with s' = 255/127 * s, i.e. one bit of
    resolution is given up on non-negative activations, which is what TensorRT's signed INT8 costs
    anyway. (NNCF's `signedness_to_force` conflicts with its own hardware config for the ANY device.)
    Returns the number of Q/DQ nodes rewritten.
    """
    import onnx
    from onnx import numpy_helper

    model = onnx.load(str(path))
    graph = model.graph
    constants_to_initializers(graph)
    inits = {t.name: t for t in graph.initializer}
    done: dict[tuple[str, str], tuple[str, str]] = {}
    count = 0
    for node in graph.node:
        if node.op_type not in ("QuantizeLinear", "DequantizeLinear") or len(node.input) < 3:
            continue
        s_name, z_name = node.input[1], node.input[2]
        if z_name not in inits or s_name not in inits:
            continue
        zp = numpy_helper.to_array(inits[z_name])
        if zp.dtype != np.uint8:
            continue
        if np.any(zp != 0):
            raise CompressError(f"{node.name}: asymmetric uint8 quantization cannot be made TensorRT-valid")
        if (s_name, z_name) not in done:
            scale = numpy_helper.to_array(inits[s_name]).astype(np.float32) * np.float32(255.0 / 127.0)
            new_s, new_z = f"{s_name}_s8", f"{z_name}_s8"
            graph.initializer.append(numpy_helper.from_array(scale, new_s))
            graph.initializer.append(numpy_helper.from_array(np.zeros_like(zp, dtype=np.int8), new_z))
            done[(s_name, z_name)] = (new_s, new_z)
        node.input[1], node.input[2] = done[(s_name, z_name)]
        count += 1
    _drop_unused(graph)
    onnx.save(model, str(path))
    return count


def fold_weight_quantizers(path: Path) -> int:
    """Replace `float initializer -> QuantizeLinear` by the integer initializer it computes.

    The TorchScript exporter writes fake-quantized weights as float weights followed by Q/DQ; storing
    the integers instead makes the file ~4x smaller and gives the same DQ output bit for bit.
    Returns the number of weights folded.
    """
    import onnx
    from onnx import numpy_helper

    model = onnx.load(str(path))
    graph = model.graph
    inits = {t.name: t for t in graph.initializer}
    consts = {}
    for node in graph.node:
        if node.op_type == "Constant":
            consts[node.output[0]] = numpy_helper.to_array(node.attribute[0].t)
    uses: dict[str, int] = {}
    for node in graph.node:
        for name in node.input:
            uses[name] = uses.get(name, 0) + 1

    alias = {n.output[0]: n.input[0] for n in graph.node if n.op_type == "Identity"}

    def const(name: str):
        while name in alias:
            name = alias[name]
        return numpy_helper.to_array(inits[name]) if name in inits else consts.get(name)

    folded, keep = 0, []
    for node in graph.node:
        if node.op_type == "QuantizeLinear" and node.input[0] in inits and uses.get(node.input[0]) == 1:
            w, scale = const(node.input[0]), const(node.input[1])
            zp = const(node.input[2]) if len(node.input) > 2 else None
            if scale is not None and zp is not None:
                axis = next((a.i for a in node.attribute if a.name == "axis"), 1)
                shape = [1] * w.ndim
                if scale.size > 1:
                    shape[axis % w.ndim] = scale.size
                info = np.iinfo(zp.dtype)
                q = np.clip(np.rint(w / scale.reshape(shape)) + zp.reshape(shape).astype(np.int32), info.min, info.max)
                graph.initializer.remove(inits[node.input[0]])
                graph.initializer.append(numpy_helper.from_array(q.astype(zp.dtype), node.output[0]))
                folded += 1
                continue
        keep.append(node)
    if folded:
        del graph.node[:]
        graph.node.extend(keep)
        onnx.save(model, str(path))
    return folded


def apply_rewrites(
    path: Path, names: tuple[str, ...], calib: list[Any] | None = None, range_estimator: str = "mse"
) -> dict[str, int]:
    """Run the named rewrites on the file at `path` (in order) and save it; counts per rewrite.

    `quantize_outputs` observes its ranges on `calib` (input batches) through the file itself, with
    `range_estimator` (see `tensor_ranges`).
    """
    import onnx

    fns = {
        "activations_to_uint8": activations_to_uint8,
        "absorb_activations": absorb_activations,
        "dequantize_after_shape_ops": dequantize_after_shape_ops,
        "quantize_biases": quantize_biases,
        "integer_activations": integer_activations,
        "share_pool_grid": share_pool_grid,
    }
    unknown = [n for n in names if n not in fns and n != "quantize_outputs"]
    if unknown:
        raise CompressError(f"unknown Q/DQ rewrite '{unknown[0]}'; available: {', '.join(fns)}, quantize_outputs")
    counts = {}
    model = onnx.load(str(path))
    inherited = set(duplicate_initializers(model.graph))
    for name in names:
        if name == "quantize_outputs":
            tensors = unquantized_outputs(model)
            tensors += [t for t in unquantized_operands(model) if t not in tensors]
            tensors += [t for t in unquantized_pools(model) if t not in tensors]
            if tensors and calib:
                onnx.save(model, str(path))
                ranges = tensor_ranges(path, tensors, calib, range_estimator)
                counts[name] = quantize_outputs(model, ranges)
            else:
                counts[name] = 0
        else:
            counts[name] = fns[name](model)
        dup = [d for d in duplicate_initializers(model.graph) if d not in inherited]
        if dup:
            raise CompressError(f"Q/DQ rewrite '{name}' wrote initializer '{dup[0]}' twice ({len(dup)} names)")
    if any(counts.values()):
        onnx.save(model, str(path))
    return counts


COMPUTE_OPS = ("Conv", "ConvTranspose", "Gemm", "MatMul")


def _dq_fed(name: str, producer: dict[str, Any]) -> bool:
    src = producer.get(name)
    return src is not None and src.op_type == "DequantizeLinear"


def unquantized_outputs(model: Any) -> list[str]:
    """Outputs of quantized compute nodes (data and weight from DequantizeLinear) read by a non-Q node.

    ONNX Runtime fuses `DQ -> Conv -> Q` only; a Conv whose output feeds, say, HardSwish or SiLU in
    float stays a float Conv behind its DequantizeLinear nodes.
    """
    return _read_in_float(
        model,
        lambda n, fed: n.op_type in COMPUTE_OPS and len(n.input) >= 2 and fed(n.input[0]) and fed(n.input[1]),
    )


def _read_in_float(model: Any, select: Any) -> list[str]:
    """First outputs of the nodes `select(node, dq_fed)` picks that something other than a QuantizeLinear reads."""
    graph = model.graph
    producer = {o: n for n in graph.node for o in n.output}
    consumers = _consumers(graph)
    outputs = {o.name for o in graph.output}
    out = []
    for n in graph.node:
        if not select(n, lambda name: _dq_fed(name, producer)) or n.output[0] in outputs:
            continue
        users = consumers.get(n.output[0], [])
        if users and any(u.op_type != "QuantizeLinear" for u in users):
            out.append(n.output[0])
    return out


def unquantized_operands(model: Any, ops: tuple[str, ...] = ("Mul", "Add")) -> list[str]:
    """Float operands of a Mul/Add whose other operand comes from a DequantizeLinear and whose output is quantized.

    Squeeze-excitation scales x by sigmoid(fc(x)); NNCF quantizes x but not the sigmoid, so the Mul
    (on the full feature map) runs in float between a DequantizeLinear and a QuantizeLinear. With both
    operands quantized ORT runs it as QLinearMul.
    """
    graph = model.graph
    producer = {o: n for n in graph.node for o in n.output}
    consumers = _consumers(graph)
    inits = {t.name for t in graph.initializer}
    out = []
    for n in graph.node:
        if n.op_type not in ops or len(n.input) != 2:
            continue
        users = consumers.get(n.output[0], [])
        if not users or any(u.op_type != "QuantizeLinear" for u in users):
            continue
        fed = [_dq_fed(i, producer) for i in n.input]
        if any(fed) and not all(fed):
            for name, is_q in zip(n.input, fed, strict=True):
                if not is_q and name not in inits and name in producer and name not in out:
                    out.append(name)
    return out


def unquantized_pools(model: Any) -> list[str]:
    """Outputs of GlobalAveragePool nodes that read a DequantizeLinear and are read in float.

    Squeeze-excitation pools the full feature map into a vector for its small float convolutions;
    with the pooled vector quantized, ORT runs `DQ -> GlobalAveragePool -> Q` as
    QLinearGlobalAveragePool on the uint8 map (in its channels-last layout) instead of a layout
    Transpose, a DequantizeLinear and a float pool over the full map: only the vector is dequantized.
    """
    return _read_in_float(model, lambda n, fed: n.op_type == "GlobalAveragePool" and fed(n.input[0]))


def quantize_outputs(model: Any, ranges: dict[str, tuple[float, float]]) -> int:
    """Put a uint8 Q/DQ pair (asymmetric, from the observed `ranges`) on each named tensor; every reader
    of the tensor then reads the DequantizeLinear. Where a per-tensor QuantizeLinear already reads the
    tensor, its parameters are reused instead (no new range needed)."""
    from onnx import helper, numpy_helper

    graph = model.graph
    constants_to_initializers(graph)
    inits = {t.name: t for t in graph.initializer}
    consumers = _consumers(graph)
    done = 0
    for name in list(ranges):
        users = consumers.get(name, [])
        existing = [u for u in users if u.op_type == "QuantizeLinear" and len(u.input) >= 3 and u.input[1] in inits]
        if existing and numpy_helper.to_array(inits[existing[0].input[1]]).size == 1:
            s_name, z_name = existing[0].input[1], existing[0].input[2]
            q_out = existing[0].output[0]
        else:
            lo, hi = min(float(ranges[name][0]), 0.0), max(float(ranges[name][1]), 0.0)
            scale = max(hi - lo, 1e-8) / 255.0
            zp = int(np.clip(np.rint(-lo / scale), 0, 255))
            s_name, z_name, q_out = f"{name}_out_scale", f"{name}_out_zp", f"{name}_out_q"
            graph.initializer.append(numpy_helper.from_array(np.asarray(scale, dtype=np.float32), s_name))
            graph.initializer.append(numpy_helper.from_array(np.asarray(zp, dtype=np.uint8), z_name))
            graph.node.append(helper.make_node("QuantizeLinear", [name, s_name, z_name], [q_out], name=f"{name}_out_Q"))
        dq_out = f"{name}_out_dq"
        graph.node.append(
            helper.make_node("DequantizeLinear", [q_out, s_name, z_name], [dq_out], name=f"{name}_out_DQ")
        )
        for u in users:
            if u.op_type == "QuantizeLinear":
                continue
            for i, v in enumerate(u.input):
                if v == name:
                    u.input[i] = dq_out
        done += 1
    if done:
        _settle(graph)
    return done


def _settle(graph: Any) -> None:
    """After inserting nodes: restore topological order and drop stale type annotations."""
    _topological_sort(graph)
    del graph.value_info[:]


def _topological_sort(graph: Any) -> None:
    """Reorder nodes so every input is produced before it is read (appended nodes sit at the end)."""
    known = {i.name for i in graph.input} | {t.name for t in graph.initializer} | {""}
    pending, ordered = list(graph.node), []
    while pending:
        rest = []
        for n in pending:
            if all(i in known for i in n.input):
                ordered.append(n)
                known.update(n.output)
            else:
                rest.append(n)
        if len(rest) == len(pending):
            raise CompressError(f"Q/DQ rewrite left a cycle or a dangling input at {rest[0].name}")
        pending = rest
    del graph.node[:]
    graph.node.extend(ordered)


RANGE_ESTIMATORS = ("mse", "percentile", "mean_minmax")
RANGE_SAMPLES = 65536  # values kept per tensor and batch for the mse / percentile estimators
RANGE_QUANTILE = 1e-4  # the percentile estimator's tail: the 0.01% and 99.99% points


def tensor_ranges(
    path: Path, names: list[str], batches: list[Any], estimator: str = "mse"
) -> dict[str, tuple[float, float]]:
    """Quantization range of the named tensors of the ONNX model at `path` over calibration `batches`
    (ORT, unoptimised).

    The tensors this module quantizes are conv / matmul outputs read by float ops (GELU, SiLU, a bias
    Add), squeeze-excitation operands and pooled vectors. Estimators:
    - `mse` (default): of the ranges a * (min, max) over the calibration values, a in [0.2, 1], the one
      whose uint8 grid reproduces a seeded sample of the values (at most `RANGE_SAMPLES` per batch)
      with the least squared error: it clips a long tail only where that buys a finer grid for the rest.
    - `percentile`: the 0.01% and 99.99% points of that sample.
    - `mean_minmax`: the mean over samples of each sample's min and max, NNCF's estimator for
      per-tensor activations (MEAN_MINMAX).
    Top-1 agreement with float on 128 held-out photo crops (random-init networks, BN re-estimated,
    224 px; calibration seeds: convnext 1, the others 2), mean_minmax / mse / percentile:
    convnext_tiny 89.1 / 94.5 / 95.3% (95.3% with those tensors left in float, which costs 16 of 59
    integer kernels); efficientnet_b0 58.6 / 61.3 / 50.8%; mobilenet_v3_large 57.0 / 58.2 / 55.9%;
    regnet_y_400mf 49.2 / 51.2 / 50.4%. The percentile clips SiLU pre-activations whose rare large
    values matter.
    """
    import tempfile

    import onnx
    import onnxruntime as ort
    from onnx import TensorProto, helper

    if estimator not in RANGE_ESTIMATORS:
        raise CompressError(f"unknown range estimator '{estimator}'; available: {', '.join(RANGE_ESTIMATORS)}")
    model = onnx.load(str(path))
    for name in names:
        model.graph.output.append(helper.make_tensor_value_info(name, TensorProto.FLOAT, None))
    rng = np.random.default_rng(0)
    lows: dict[str, list[np.ndarray]] = {n: [] for n in names}
    highs: dict[str, list[np.ndarray]] = {n: [] for n in names}
    samples: dict[str, list[np.ndarray]] = {n: [] for n in names}
    with tempfile.TemporaryDirectory() as tmp:
        probe = Path(tmp) / "probe.onnx"
        onnx.save(model, str(probe))
        so = ort.SessionOptions()
        so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
        so.log_severity_level = 3
        sess = ort.InferenceSession(str(probe), so, providers=["CPUExecutionProvider"])
        input_name = sess.get_inputs()[0].name
        for x in batches:
            x = np.asarray(x, dtype=np.float32)
            values = sess.run(names, {input_name: x})
            for n, v in zip(names, values, strict=True):
                per_sample = v.reshape(len(x), -1) if v.ndim and v.shape[0] == len(x) else v.reshape(1, -1)
                lows[n].append(per_sample.min(axis=1))
                highs[n].append(per_sample.max(axis=1))
                if estimator != "mean_minmax":
                    flat = v.reshape(-1)
                    keep = flat if flat.size <= RANGE_SAMPLES else flat[rng.integers(0, flat.size, RANGE_SAMPLES)]
                    samples[n].append(keep.astype(np.float32, copy=True))
    out = {}
    for n in names:
        lo, hi = np.concatenate(lows[n]), np.concatenate(highs[n])
        if estimator == "mean_minmax":
            out[n] = (float(lo.mean()), float(hi.mean()))
        elif estimator == "percentile":
            s = np.concatenate(samples[n])
            out[n] = (float(np.quantile(s, RANGE_QUANTILE)), float(np.quantile(s, 1.0 - RANGE_QUANTILE)))
        else:
            out[n] = _mse_range(np.concatenate(samples[n]), float(lo.min()), float(hi.max()))
    return out


def _mse_range(values: np.ndarray, lo: float, hi: float) -> tuple[float, float]:
    """The range a * (lo, hi), a in [0.2, 1], whose asymmetric uint8 grid reproduces `values` best."""
    lo, hi = min(lo, 0.0), max(hi, 0.0)
    best = (np.inf, lo, hi)
    for a in np.linspace(0.2, 1.0, 33):
        scale = max(a * (hi - lo), 1e-8) / 255.0
        zp = np.clip(np.rint(-a * lo / scale), 0, 255)
        err = float(np.mean(((np.clip(np.rint(values / scale) + zp, 0, 255) - zp) * scale - values) ** 2))
        if err < best[0]:
            best = (err, a * lo, a * hi)
    return best[1], best[2]


SHAPE_OPS = ("Flatten", "Reshape", "Squeeze", "Unsqueeze")


def dequantize_after_shape_ops(model: Any) -> int:
    """`DQ -> Flatten/Reshape -> op` becomes `Flatten/Reshape -> DQ -> op` (per-tensor DQ; the same values).

    ONNX Runtime fuses a DequantizeLinear into QGemm / QLinearMatMul only when it feeds the op directly.
    Also writes negative `axis` attributes of Q/DQ nodes as positive ones (ORT's selectors compare them).
    """
    from onnx import helper, numpy_helper

    graph = model.graph
    constants_to_initializers(graph)
    inits = {t.name: t for t in graph.initializer}
    producer = {o: n for n in graph.node for o in n.output}
    consumers = _consumers(graph)
    count = 0
    for node in list(graph.node):
        if node.op_type not in SHAPE_OPS:
            continue
        dq = producer.get(node.input[0])
        if dq is None or dq.op_type != "DequantizeLinear" or len(consumers.get(dq.output[0], [])) != 1:
            continue
        if dq.input[1] not in inits or numpy_helper.to_array(inits[dq.input[1]]).size != 1:
            continue
        moved = f"{node.output[0]}_int"
        node.input[0] = dq.input[0]
        old_out = node.output[0]
        node.output[0] = moved
        graph.node.remove(dq)
        graph.node.append(helper.make_node("DequantizeLinear", [moved, *dq.input[1:]], [old_out], name=dq.name))
        count += 1
    weight_ranks = {t.name: len(t.dims) for t in graph.initializer}
    for node in graph.node:
        if node.op_type in ("QuantizeLinear", "DequantizeLinear"):
            for a in node.attribute:
                if a.name == "axis" and a.i < 0 and node.input[0] in weight_ranks:
                    a.i += weight_ranks[node.input[0]]
                    count += 1
    if count:
        _settle(graph)
    return count


GRID_PRESERVING_OPS = ("MaxPool",)


def share_pool_grid(model: Any) -> int:
    """`DQ(s1) -> MaxPool -> Q(s2) -> DQ(s2)` becomes the same with s1 for s2 (per-tensor scales and zero-points).

    ORT drops a DQ/Q pair around MaxPool (and runs it on uint8) only when both carry one scale and
    zero-point; NNCF calibrates the two separately. The max of values on the grid of s1 is on that grid,
    so quantizing it with s1 again is exact: the model computes what it did without the second rounding.
    """
    from onnx import numpy_helper

    graph = model.graph
    constants_to_initializers(graph)
    inits = {t.name: t for t in graph.initializer}
    producer = {o: n for n in graph.node for o in n.output}
    consumers = _consumers(graph)

    def per_tensor(node: Any) -> bool:
        return len(node.input) >= 3 and all(
            name in inits and numpy_helper.to_array(inits[name]).size == 1 for name in node.input[1:3]
        )

    count = 0
    for node in graph.node:
        if node.op_type not in GRID_PRESERVING_OPS or len(node.output) != 1:
            continue
        dq = producer.get(node.input[0])
        after = consumers.get(node.output[0], [])
        if dq is None or dq.op_type != "DequantizeLinear" or len(after) != 1 or after[0].op_type != "QuantizeLinear":
            continue
        q = after[0]
        readers = consumers.get(q.output[0], [])
        if not readers or any(r.op_type != "DequantizeLinear" for r in readers):
            continue
        if not per_tensor(dq) or not all(per_tensor(n) for n in (q, *readers)):
            continue
        if inits[dq.input[2]].data_type != inits[q.input[2]].data_type:
            continue
        if list(q.input[1:3]) == list(dq.input[1:3]):
            continue
        for n in (q, *readers):
            n.input[1], n.input[2] = dq.input[1], dq.input[2]
        count += 1
    if count:
        _drop_unused(graph)
    return count


def quantize_biases(model: Any) -> int:
    """A float bias of a quantized Conv/Gemm becomes int32 with scale input_scale * weight_scale, behind a DQ.

    ONNX Runtime fuses `DQ -> Gemm` into QGemm only when every input, the bias included, comes from a
    DequantizeLinear (NNCF leaves the bias in float). The int32 grid is ~2^-24 of the bias range.
    """
    from onnx import helper, numpy_helper

    graph = model.graph
    constants_to_initializers(graph)
    inits = {t.name: t for t in graph.initializer}
    producer = {o: n for n in graph.node for o in n.output}
    taken = _all_names(graph)
    count = 0
    for node in list(graph.node):
        if node.op_type not in ("Conv", "Gemm") or len(node.input) < 3 or node.input[2] not in inits:
            continue
        dq_x, dq_w = producer.get(node.input[0]), producer.get(node.input[1])
        if any(d is None or d.op_type != "DequantizeLinear" for d in (dq_x, dq_w)):
            continue
        if dq_x.input[1] not in inits or dq_w.input[1] not in inits:
            continue
        if node.op_type == "Gemm" and any(a.name == "transA" and a.i for a in node.attribute):
            continue
        s_x = numpy_helper.to_array(inits[dq_x.input[1]]).astype(np.float64).reshape(-1)
        s_w = numpy_helper.to_array(inits[dq_w.input[1]]).astype(np.float64).reshape(-1)
        bias = numpy_helper.to_array(inits[node.input[2]]).astype(np.float64)
        if s_x.size != 1 or bias.ndim != 1 or s_w.size not in (1, bias.size):
            continue
        scale = (s_x[0] * s_w).astype(np.float32)
        scale_full = np.broadcast_to(scale, bias.shape).astype(np.float32)
        q = np.clip(np.rint(bias / scale_full.astype(np.float64)), -(2**31), 2**31 - 1).astype(np.int32)
        # one name per conv: the exporter shares one bias tensor between convs with equal biases (all the
        # zero biases of a random-init BatchNorm fold), and each conv's int32 bias has its own scale
        base = _fresh_name(taken, f"{node.input[2]}_int32", ("", "_scale", "_zp", "_dq"))
        graph.initializer.append(numpy_helper.from_array(q, base))
        graph.initializer.append(numpy_helper.from_array(scale_full, f"{base}_scale"))
        graph.initializer.append(numpy_helper.from_array(np.zeros_like(q), f"{base}_zp"))
        graph.node.append(
            helper.make_node(
                "DequantizeLinear",
                [base, f"{base}_scale", f"{base}_zp"],
                [f"{base}_dq"],
                name=f"{node.name or base}_bias_DQ",
                axis=0,
            )
        )
        node.input[2] = f"{base}_dq"
        count += 1
    if count:
        _topological_sort(graph)
        _drop_unused(graph)
    return count


def integer_activations(model: Any) -> int:
    """HardSwish and SiLU between quantized tensors become integer ops (QLinearAdd / QLinearSigmoid + QLinearMul).

    ONNX Runtime has no integer HardSwish or SiLU: `DQ -> HardSigmoid/Sigmoid, Mul -> Q` runs in float
    on the full feature map (two DequantizeLinear, two float passes, a QuantizeLinear), while the
    float model runs them inside its convolutions. Written as ops ORT does fuse:
    - x * sigmoid(x): a uint8 Q/DQ pair (scale 1/255, zero-point 0) on the sigmoid, so
      `DQ -> Sigmoid -> Q` runs as QLinearSigmoid and the Mul as QLinearMul;
    - x * hardsigmoid(x) (HardSwish, or NNCF's inlined HardSigmoid + Mul): hardsigmoid(x) =
      clip(alpha * x + beta, 0, 1) is an Add of alpha * x (the same integers read with scale
      alpha * s_x) and the constant beta, quantized to uint8 with scale 1/255 and zero-point 0, whose
      saturation is the clip: `DQ, DQ -> Add -> Q` runs as QLinearAdd, the Mul as QLinearMul.
    The gate is rounded to 1/255 (at most 0.2% of x). Applies where x comes from a per-tensor uint8
    DequantizeLinear and every reader of the product is a per-tensor QuantizeLinear.
    """
    from onnx import helper, numpy_helper

    graph = model.graph
    constants_to_initializers(graph)
    inits = {t.name: t for t in graph.initializer}
    producer = {o: n for n in graph.node for o in n.output}
    consumers = _consumers(graph)
    outputs = {o.name for o in graph.output}

    def per_tensor_uint8_dq(name: str) -> Any:
        dq = producer.get(name)
        if dq is None or dq.op_type != "DequantizeLinear" or len(dq.input) < 3:
            return None
        s, z = inits.get(dq.input[1]), inits.get(dq.input[2])
        if s is None or z is None or numpy_helper.to_array(s).size != 1 or z.data_type != 2:  # 2: UINT8
            return None
        return dq

    def quantized_only(name: str) -> bool:
        users = consumers.get(name, [])
        return bool(users) and name not in outputs and all(u.op_type == "QuantizeLinear" for u in users)

    def const(value: float, dtype: Any, name: str) -> str:
        if name not in inits:
            inits[name] = numpy_helper.from_array(np.asarray(value, dtype=dtype), name)
            graph.initializer.append(inits[name])
        return name

    for hs in [n for n in graph.node if n.op_type == "HardSwish"]:  # x * HardSigmoid(x; 1/6, 1/2)
        if per_tensor_uint8_dq(hs.input[0]) is None or not quantized_only(hs.output[0]):
            continue
        gate_out = f"{hs.name or hs.output[0]}_gate"
        at = list(graph.node).index(hs)
        gate = helper.make_node("HardSigmoid", [hs.input[0]], [gate_out], name=gate_out, alpha=1.0 / 6.0, beta=0.5)
        mul = helper.make_node("Mul", [hs.input[0], gate_out], [hs.output[0]], name=f"{hs.name}_mul")
        graph.node.remove(hs)
        graph.node.insert(at, mul)
        graph.node.insert(at, gate)
        producer[gate_out], producer[hs.output[0]] = gate, mul
        consumers.setdefault(hs.input[0], []).extend([gate, mul])
        consumers[gate_out] = [mul]
    unit_s = const(1.0 / 255.0, np.float32, "integer_activations_gate_scale")
    zero = const(0, np.uint8, "integer_activations_gate_zp")
    new_nodes: list[Any] = []
    removed: list[Any] = []
    count = 0
    for mul in list(graph.node):
        if mul.op_type != "Mul" or len(mul.input) != 2 or not quantized_only(mul.output[0]):
            continue
        for gate_i in (0, 1):
            gate = producer.get(mul.input[gate_i])
            x_name = mul.input[1 - gate_i]
            if gate is None or gate.op_type not in ("Sigmoid", "HardSigmoid") or gate.input[0] != x_name:
                continue
            dq = per_tensor_uint8_dq(x_name)
            if dq is None or consumers.get(gate.output[0], []) != [mul]:
                continue
            tag = f"{gate.name or gate.output[0]}_int"
            gate_q, gate_dq = f"{tag}_q", f"{tag}_dq"
            if gate.op_type == "Sigmoid":
                new_nodes.append(
                    helper.make_node("QuantizeLinear", [gate.output[0], unit_s, zero], [gate_q], name=f"{tag}_Q")
                )
            else:
                attrs = {a.name: a.f for a in gate.attribute}
                alpha, beta = attrs.get("alpha", 0.2), attrs.get("beta", 0.5)
                s_x = float(numpy_helper.to_array(inits[dq.input[1]]).reshape(-1)[0])
                a_scale = const(alpha * s_x, np.float32, f"{tag}_alpha_scale")
                b_scale = const(beta, np.float32, f"{tag}_beta_scale")
                one = const(1, np.uint8, "integer_activations_one")
                new_nodes += [
                    helper.make_node(
                        "DequantizeLinear", [dq.input[0], a_scale, dq.input[2]], [f"{tag}_ax"], name=f"{tag}_ax_DQ"
                    ),
                    helper.make_node("DequantizeLinear", [one, b_scale, zero], [f"{tag}_beta"], name=f"{tag}_beta_DQ"),
                    helper.make_node("Add", [f"{tag}_ax", f"{tag}_beta"], [f"{tag}_pre"], name=f"{tag}_Add"),
                    helper.make_node("QuantizeLinear", [f"{tag}_pre", unit_s, zero], [gate_q], name=f"{tag}_Q"),
                ]
                removed.append(gate)
            new_nodes.append(helper.make_node("DequantizeLinear", [gate_q, unit_s, zero], [gate_dq], name=f"{tag}_DQ"))
            mul.input[gate_i] = gate_dq
            count += 1
            break
    for node in removed:
        graph.node.remove(node)
    if count:
        graph.node.extend(new_nodes)
        _settle(graph)
    _drop_unused(graph)  # the shared constants above, when nothing used them
    return count
