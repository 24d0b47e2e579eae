"""The task interface."""

from __future__ import annotations

from typing import Any

import torch


class Metric:
    """Accumulates a task's figures over batches."""

    def update(self, outputs: Any, targets: Any) -> None:
        raise NotImplementedError

    def compute(self) -> dict[str, float]:
        raise NotImplementedError


class Task:
    """A task: its loss, its metrics and which metric ranks models.

    Attributes:
        name: registry key.
        primary: the metric reports rank by ("accuracy", "psnr").
        higher_is_better: direction of `primary`.
    """

    name: str = ""
    primary: str = ""
    higher_is_better: bool = True

    def loss(self, outputs: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def metric(self) -> Metric:
        raise NotImplementedError


def as_tensor(x: Any) -> torch.Tensor:
    if isinstance(x, torch.Tensor):
        return x.detach().cpu()
    return torch.from_numpy(x)
