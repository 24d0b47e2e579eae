"""The public verbs: each takes a model (or artifact) and one config, and returns a new artifact.

    from compress.api import prune
    result = prune(model, ChannelConfig(ratio=0.5), data=bundle)
    result.model        # the compressed Model (its history has the new step appended)

The method is found from the config's type, so adding a method never edits a verb.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from compress.config import to_dict
from compress.methods import Context, Result, apply, method_for_config


def _run(technique: str, model: Any, config: Any, ctx: Context) -> Result:
    method = method_for_config(technique, config)
    start = time.perf_counter()
    result = apply(technique, model, config, ctx)
    step = {
        "technique": technique,
        "method": method.name,
        "params": to_dict(config),
        "metrics": _plain(result.metrics),
        "seconds": round(time.perf_counter() - start, 3),
    }
    if ctx.teacher is not None:
        step["teacher"] = ctx.teacher.name
    result.history = [*model.history, step]
    if result.model is None and "macs" not in result.metrics:
        from compress.analysis import count_macs

        result.metrics["macs"] = count_macs(model.module, model.input_shape)  # ONNX-only result: same graph
    if result.model is not None:
        result.model.history = list(result.history)
    return result


def train(model, data, config=None, *, workdir: Path | None = None) -> Result:
    """Train or fine-tune `model` on `data` (default: `TrainConfig()`)."""
    from compress.train.loop import TrainConfig

    return _run("train", model, config or TrainConfig(), Context(data=data, workdir=workdir))


def prune(model, config, *, data=None, teacher=None, workdir: Path | None = None) -> Result:
    """Structurally prune `model`; the result is physically smaller."""
    from compress.prune.exported import prunable_model

    model = prunable_model(model)  # a torch.export program: its ATen layers rebuilt as modules
    return _run("prune", model, config, Context(data=data, teacher=teacher, workdir=workdir))


def quantize(model, config, *, data=None, workdir: Path | None = None) -> Result:
    """Quantize `model`; the result usually carries its own ONNX file."""
    return _run("quantize", model, config, Context(data=data, workdir=workdir))


def distill(student, teacher, config, *, data, workdir: Path | None = None) -> Result:
    """Train `student` to match `teacher`."""
    return _run("distill", student, config, Context(data=data, teacher=teacher, workdir=workdir))


def export(model, path, config=None) -> dict[str, Any]:
    """Export `model` to ONNX at `path` with checks; returns the export report."""
    from compress.export.onnx import export_onnx

    return export_onnx(model, path, config)


def bench(path, config=None, *, data=None) -> dict[str, Any]:
    """Latency (and task metrics with `data`) of a deployed model through its backend."""
    from compress.bench import bench as _bench

    return _bench(path, config, data=data)


def _plain(obj: Any) -> Any:
    if isinstance(obj, dict):
        return {str(k): _plain(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_plain(v) for v in obj]
    if isinstance(obj, (int, float, str, bool)) or obj is None:
        return obj
    if isinstance(obj, Path):
        return str(obj)
    try:
        return float(obj)
    except (TypeError, ValueError):
        return str(obj)
