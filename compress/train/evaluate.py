"""Evaluation of a torch module on a dataset with a task's metric."""

from __future__ import annotations

import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset

from compress.tasks import get_task


@torch.no_grad()
def evaluate(
    module: nn.Module,
    dataset: Dataset,
    task: str,
    *,
    batch_size: int = 256,
    device: str | torch.device = "cpu",
    workers: int = 0,
) -> dict[str, float]:
    """The task's metrics of `module` (put in eval mode, then restored) over `dataset`, read by
    `workers` DataLoader processes (0: in this one)."""
    metric = get_task(task).metric()
    was_training = module.training
    module.eval()
    try:
        for x, y in DataLoader(dataset, batch_size=batch_size, shuffle=False, num_workers=workers):
            metric.update(module(x.to(device)).float().cpu(), y)
    finally:
        module.train(was_training)
    return metric.compute()
