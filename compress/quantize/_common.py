"""Helpers shared by the quantization methods: calibration batches, ORT evaluation, sizes."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from compress.errors import DataError, RecipeError


def calibration_batches(data: Any, size: int, batch_size: int = 32) -> list[torch.Tensor]:
    """Input batches from the calibration split (at most `size` samples)."""
    if data is None or data.calib is None or len(data.calib) == 0:
        raise DataError("quantization needs calibration data (--data with a non-empty calibration split)")
    n = min(size, len(data.calib))
    subset = torch.utils.data.Subset(data.calib, range(n))
    loader = torch.utils.data.DataLoader(subset, batch_size=batch_size, shuffle=False)
    return [x for x, _ in loader]


def ort_metrics(path: Path, data: Any, batch_size: int = 64, *, reference: Path | None = None) -> dict[str, float]:
    """The task metrics of an ONNX file, computed through ONNX Runtime on the validation split.

    Data without labels has no task metric: with a `reference` ONNX file (the float model), the
    figure is then the top-1 agreement with it (`metric_for`)."""
    from compress.backends import get_backend
    from compress.bench import evaluate_session

    session = get_backend("onnxruntime").load(path)
    if getattr(data, "labelled", True) or reference is None:
        return evaluate_session(session, data.val, data.task, batch_size)
    from compress.bench.fidelity import measure_fidelity, session_runner

    ref = session_runner(get_backend("onnxruntime").load(reference))
    figures = measure_fidelity(session_runner(session), ref, data.val, data.task, batch_size=batch_size)
    return {k: v for k, v in figures.items() if isinstance(v, (int, float)) and not isinstance(v, bool)}


def metric_for(task: str, data: Any) -> tuple[str, bool]:
    """The figure an accuracy budget watches: the task's metric, or top-1 agreement without labels."""
    if not getattr(data, "labelled", True):
        return ("top1_agreement", True) if task == "classification" else ("psnr", True)
    return primary(task)


def primary(task: str) -> tuple[str, bool]:
    from compress.tasks import get_task

    t = get_task(task)
    return t.primary, t.higher_is_better


def workdir(ctx: Any, name: str) -> Path:
    """The method's output folder (a temporary one when the context has none)."""
    if ctx.workdir is not None:
        path = Path(ctx.workdir)
    else:
        import tempfile

        path = Path(tempfile.mkdtemp(prefix=f"compress-{name}-"))
    path.mkdir(parents=True, exist_ok=True)
    return path


def quantizable_layers(module: nn.Module) -> list[tuple[str, nn.Module]]:
    """Conv and Linear layers (the ones whose weights the methods quantize)."""
    return [(n, m) for n, m in module.named_modules() if isinstance(m, (nn.Conv2d, nn.Conv1d, nn.Linear))]


def weight_layers(module: nn.Module, skip: list[str]) -> list[tuple[str, nn.Module]]:
    """The Conv2d / Linear layers a weight format (codebooks, trained bits) replaces: all but those whose
    name fully matches a `skip` pattern; a pattern that matches no such layer is an error."""
    import re

    layers = [(n, m) for n, m in quantizable_layers(module) if isinstance(m, (nn.Conv2d, nn.Linear))]
    for p in skip:
        if not any(re.fullmatch(p, n) for n, _ in layers):
            raise RecipeError(f"skip pattern {p!r} matches no Conv/Linear layer")
    return [(n, m) for n, m in layers if not any(re.fullmatch(p, n) for p in skip)]


def replace_module(root: nn.Module, path: str, new: nn.Module) -> None:
    """Put `new` where the submodule at dotted `path` was."""
    parent, _, name = path.rpartition(".")
    setattr(root.get_submodule(parent) if parent else root, name, new)


def float_weight_count(module: nn.Module) -> int:
    return sum(m.weight.numel() for _, m in quantizable_layers(module))


def file_size(path: Path) -> int:
    return os.path.getsize(path)


def set_seed(seed: int) -> None:
    torch.manual_seed(seed)
    np.random.seed(seed)


def runtime_metrics(onnx_path: Path, input_shape: tuple[int, ...], threads: int = 0) -> dict[str, Any]:
    """What ONNX Runtime CPU really runs for `onnx_path`: "int8_ops" ("49/49") and the compact report."""
    from compress.backends.onnxruntime import runtime_report

    report = runtime_report(onnx_path, input_shape=(1, *input_shape), threads=threads)
    compact = {k: v for k, v in report.items() if k not in ("node_times_us", "ops", "path")}
    compact["time_share"] = dict(list(report["time_share"].items())[:12])
    return {"int8_ops": f"{report['integer_compute_ops']}/{report['compute_ops']}", "runtime": compact}


SIZE_FORMAT_NOTE = (
    "a size format: weights are stored as low-bit integers and expanded to float on every call, so ONNX "
    "Runtime runs float kernels (int8 ops {int8_ops}); use --method int8 for integer kernels"
)
