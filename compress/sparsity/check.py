"""The one N:M pattern checker, for a torch model and an ONNX file.

`pattern_report(source, "2:4")` lists every compute layer with: does the pattern hold along its
input-channel axis, can it carry the pattern at all (and why not), is it eligible for sparse kernels
(and why not). `compress check --expect-sparsity` (through `compress.check.structure.nm_sparsity`),
`compress info --sparsity` and `prune --method nm` all read this report.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
from torch import nn

from compress.sparsity.masks import eligibility, holds, input_axis, parse_nm

_TORCH_KINDS = {
    nn.Conv1d: "conv",
    nn.Conv2d: "conv",
    nn.Conv3d: "conv",
    nn.ConvTranspose1d: "conv_transpose",
    nn.ConvTranspose2d: "conv_transpose",
    nn.ConvTranspose3d: "conv_transpose",
    nn.Linear: "linear",
}


def torch_kind(module: nn.Module) -> str | None:
    for cls, kind in _TORCH_KINDS.items():
        if isinstance(module, cls):
            return kind
    return None


def torch_layers(module: nn.Module) -> list[dict[str, Any]]:
    """Conv / ConvTranspose / Linear layers of a torch model: name, op, weight (numpy), axis, groups."""
    out = []
    for name, mod in module.named_modules():
        kind = torch_kind(mod)
        w = getattr(mod, "weight", None)
        if kind is None or w is None:
            continue
        out.append(
            {
                "name": name,
                "op": kind,
                "weight": w.detach().cpu().numpy(),
                "dtype": w.dtype,
                "axis": input_axis(kind, w.dim()),
                "groups": int(getattr(mod, "groups", 1)),
            }
        )
    return out


def onnx_layers(model: Any) -> list[dict[str, Any]]:
    """Compute nodes of an ONNX graph with their weights (through Q/DQ, Transpose, ...) and axes."""
    from compress.check.structure import load_onnx, weight_layers

    if isinstance(model, (str, Path)):
        model = load_onnx(model)
    groups = {n.name or n.output[0]: next((a.i for a in n.attribute if a.name == "group"), 1) for n in model.graph.node}
    out = []
    for lay in weight_layers(model):
        w = lay["weight"]
        axis = input_axis(lay["op"], w.ndim if w is not None else 2, lay["trans_b"])
        out.append(
            {
                "name": lay["name"],
                "op": lay["op"],
                "weight": w,
                "dtype": w.dtype if w is not None else None,
                "axis": axis,
                "groups": int(groups.get(lay["name"], 1)),
                "int8": lay["int8"],
            }
        )
    return out


def layer_rows(layers: list[dict[str, Any]], n: int, m: int, min_params: int = 0) -> list[dict[str, Any]]:
    rows = []
    for lay in layers:
        w = lay["weight"]
        row = {"name": lay["name"], "op": lay["op"], "int8": bool(lay.get("int8", False))}
        if w is None or w.ndim < 2:
            row.update(shape=None if w is None else list(w.shape), holds=None, can_carry=False)
            row.update(reason="weight not a constant" if w is None else "not a 2-D or conv weight")
            row.update(eligible=False, kernel_reason="no pattern", density=None)
            rows.append(row)
            continue
        can, why, kernel, kernel_why = eligibility(
            lay["op"], w.shape, m, groups=lay["groups"], dtype=lay["dtype"], min_params=min_params, axis=lay["axis"]
        )
        ok = holds(w, n, m, lay["axis"]) if can else None
        row.update(
            shape=list(w.shape),
            axis=lay["axis"],
            holds=ok,
            can_carry=can,
            reason=why,
            eligible=bool(can and kernel and ok),
            kernel_reason=kernel_why if can else why,
            density=float(np.count_nonzero(w)) / max(w.size, 1),
        )
        if can and ok is False:
            row["kernel_reason"] = f"pattern {n}:{m} does not hold"
        rows.append(row)
    return rows


def pattern_report(source: Any, pattern: str = "2:4", *, min_params: int = 0) -> dict[str, Any]:
    """Per-layer N:M report of a torch module, an ONNX ModelProto, or a path to an ONNX file.

    Keys: pattern, layers (rows as in `layer_rows`), eligible_layers (layers that can carry the
    pattern: input-channel axis a multiple of M), sparse_layers (those where it holds), sparse_names,
    kernel_eligible (pattern holds and sparse kernels could run them).
    """
    n, m = parse_nm(pattern)
    layers = torch_layers(source) if isinstance(source, nn.Module) else onnx_layers(source)
    rows = layer_rows(layers, n, m, min_params)
    return {
        "pattern": f"{n}:{m}",
        "layers": rows,
        "eligible_layers": sum(r["can_carry"] for r in rows),
        "sparse_layers": sum(bool(r["holds"]) for r in rows),
        "sparse_names": [r["name"] for r in rows if r["holds"]],
        "kernel_eligible": sum(r["eligible"] for r in rows),
    }


SPARSE_KERNEL_NOTE = (
    "no sparse kernels ran: this report reads weights only; on CPU (ONNX Runtime) zeros are computed densely, "
    "and 'eligible' means sparse tensor cores (TensorRT sparse weights, torch semi-structured on CUDA) could run "
    "the layer, to be confirmed by a timing on the device"
)
