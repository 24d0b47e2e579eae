"""Which layers stay in float: module names <-> ONNX node scopes, the accuracy budget, and latency-aware choice.

Accuracy budget: while the drop of the task's primary metric exceeds the budget, the most sensitive
layers (ranked by the metric regained when that layer alone is kept in float) are put back into
float, one at a time.

Latency-aware mixed precision: ONNX Runtime's profiler times every kernel of the INT8 graph and of
the float graph; a layer whose INT8 kernels (with the Q/DQ conversions named after it) take longer
than its float kernel costs more than it saves and is a candidate to keep in float. Layers of one
structural kind (depthwise convs, grouped convs, linear layers) are tried together first: ORT's
integer kernel for a kind is slow or fast for every layer of it, and one layer's share of the whole
model's time is too small to measure (ORT 1.32 CPU, 2 threads: convnext_tiny all-INT8 1.11x float,
its 7x7 depthwise convs in float 1.39x; regnet_y_400mf 0.84x, its grouped convs in float 0.99x).
A candidate is kept in float only if the whole model then measures faster, interleaved, than the
best file so far.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from torch import nn


def onnx_scope(layer: str) -> str:
    """The node-name prefix the TorchScript exporter gives a module.

    features.1.conv.0 -> /features/features.1/conv/conv.0/ (an index joins its container's name).
    """
    parts, names = layer.split("."), []
    for p in parts:
        names.append(f"{names[-1]}.{p}" if p.isdigit() and names else p)
    return "/" + "/".join(names) + "/"


def legacy_scope(layer: str) -> str:
    return "/" + layer.replace(".", "/") + "/"


def nodes_of(layer: str, node_names: list[str]) -> list[str]:
    scopes = (onnx_scope(layer), legacy_scope(layer))
    return [n for n in node_names if n.startswith(scopes)]


def sensitivity_search(
    layer_names: list[str],
    fixed: list[str],
    build: Callable[[list[str]], dict[str, float]],
    drop_of: Callable[[dict[str, float]], float],
    budget: float,
    max_layers: int,
) -> tuple[list[str], dict[str, float]]:
    """Put back into float the most sensitive layers until `drop_of(metrics) <= budget`; returns them and the metrics.

    `build(float_layers)` re-quantizes with those layers in float and returns its metrics.
    """
    candidates = [n for n in layer_names if n not in fixed]
    ranking = []
    for name in candidates:  # sensitivity: what keeping this layer alone in float regains
        m = build([*fixed, name])
        ranking.append((-drop_of(m), -m.get("loss", 0.0) if "loss" in m else 0.0, name))
    ranking.sort(reverse=True)
    restored: list[str] = []
    metrics: dict[str, float] = {}
    for _, _, name in ranking[:max_layers]:
        restored.append(name)
        metrics = build([*fixed, *restored])
        if drop_of(metrics) <= budget:
            break
    return restored, metrics


def _scope_time(layers: list[str], report: dict[str, Any]) -> float:
    """Profiled microseconds of every node named within the scopes of `layers` in a `runtime_report`.

    A node ORT renamed when it fused a conv with what follows it counts under the conv it runs
    (`node_sources`): float Conv-BN-ReLU blocks are named after their ReLU.
    """
    times = report["node_times_us"]
    sources = report.get("node_sources", {})
    scopes = tuple(s for layer in layers for s in (onnx_scope(layer), legacy_scope(layer)))
    return sum(t for n, t in times.items() if n.startswith(scopes) or sources.get(n, "").startswith(scopes))


def latency_candidates(
    layer_names: list[str], int8_report: dict[str, Any], float_report: dict[str, Any], margin: float = 0.0
) -> list[dict[str, Any]]:
    """Layers whose INT8 kernels take longer than their float kernel, worst first.

    Times come from two `runtime_report`s (per-node medians of ORT's profiler); a layer's INT8 time is
    every node named within its scope in the INT8 graph (the integer kernel, or the float kernel plus
    the DequantizeLinear in front of it when ORT did not fuse it).
    """
    out = []
    for layer in layer_names:
        q, f = _scope_time([layer], int8_report), _scope_time([layer], float_report)
        if q > 0 and f > 0 and q > f * (1.0 + margin):
            out.append({"layer": layer, "int8_us": q, "float_us": f, "cost_us": q - f})
    out.sort(key=lambda r: -r["cost_us"])
    return out


def layer_kind(module: nn.Module) -> str | None:
    """The structural kind latency-aware mixed precision tries as one group; None for a plain conv."""
    if isinstance(module, nn.Linear):
        return "linear layers"
    groups = getattr(module, "groups", 1)
    if groups > 1:
        return "depthwise convs" if groups == module.in_channels else "grouped convs"
    return None


def latency_groups(
    kinds: dict[str, list[str]], int8_report: dict[str, Any], float_report: dict[str, Any], *, every: bool = False
) -> list[dict[str, Any]]:
    """Kinds of layer whose INT8 kernels, summed over the kind, take longer than their float kernels; worst first.

    `kinds` maps a kind to its layers (only those still in INT8). Each entry: {"label", "layers", "int8_us",
    "float_us", "cost_us"}, times summed as in `latency_candidates`. With `every`, all kinds, still worst
    first: the profiler times kernels, not the layout reorders and conversions around them, which is where
    a kind's INT8 cost can sit (regnet_y_400mf's grouped convs: faster as integer kernels by the profiler,
    yet the whole model 0.84x float with them in INT8, 0.99x with them in float).
    """
    out = []
    for kind, layers in kinds.items():
        if not layers:
            continue
        q, f = _scope_time(layers, int8_report), _scope_time(layers, float_report)
        if every or (q > 0 and f > 0 and q > f):
            out.append(
                {
                    "label": f"{kind} ({len(layers)})",
                    "layers": list(layers),
                    "int8_us": q,
                    "float_us": f,
                    "cost_us": q - f,
                }
            )
    out.sort(key=lambda r: -r["cost_us"])
    return out
