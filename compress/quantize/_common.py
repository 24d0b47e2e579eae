"""Helpers shared by the quantization methods: calibration batches, ORT evaluation, sizes."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from compress.errors import DataError


def calibration_batches(data: Any, size: int, batch_size: int = 32) -> list[torch.Tensor]:
    """Input batches from the calibration split (at most `size` samples)."""
    if data is None or data.calib is None or len(data.calib) == 0:
        raise DataError("quantization needs calibration data (--data with a non-empty calibration split)")
    n = min(size, len(data.calib))
    subset = torch.utils.data.Subset(data.calib, range(n))
    loader = torch.utils.data.DataLoader(subset, batch_size=batch_size, shuffle=False)
    return [x for x, _ in loader]


def ort_metrics(path: Path, data: Any, batch_size: int = 64) -> dict[str, float]:
    """The task metrics of an ONNX file, computed through ONNX Runtime on the validation split."""
    from compress.backends import get_backend
    from compress.bench import evaluate_session

    session = get_backend("onnxruntime").load(path)
    return evaluate_session(session, data.val, data.task, batch_size)


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


def float_weight_count(module: nn.Module) -> int:
    return sum(m.weight.numel() for _, m in quantizable_layers(module))


def file_size(path: Path) -> int:
    return os.path.getsize(path)


def set_seed(seed: int) -> None:
    torch.manual_seed(seed)
    np.random.seed(seed)
