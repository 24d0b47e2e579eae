"""Image classification: cross-entropy, top-1 / top-5 accuracy."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from compress.data import UNLABELLED
from compress.tasks.base import Metric, Task, as_tensor


class Accuracy(Metric):
    def __init__(self) -> None:
        self.correct1 = 0
        self.correct5 = 0
        self.total = 0
        self.loss_sum = 0.0

    def update(self, outputs, targets) -> None:
        logits, y = as_tensor(outputs).float(), as_tensor(targets).long()
        if logits.ndim != 2 or logits.shape[0] != y.shape[0] or (len(y) and int(y.max()) >= logits.shape[1]):
            from compress.errors import DataError

            raise DataError(
                f"the model's outputs {list(logits.shape)} do not fit classification labels "
                f"(up to class {int(y.max()) if len(y) else 0}); wrong model or wrong --task?"
            )
        known = y != UNLABELLED  # images without labels (`images:`) count towards no figure
        logits, y = logits[known], y[known]
        k = min(5, logits.shape[1])
        topk = logits.topk(k, dim=1).indices
        self.correct1 += int((topk[:, 0] == y).sum())
        self.correct5 += int((topk == y[:, None]).any(1).sum())
        self.loss_sum += float(F.cross_entropy(logits, y, reduction="sum"))
        self.total += len(y)

    def compute(self) -> dict[str, float]:
        if self.total == 0:
            return {"samples": 0}  # nothing labelled: no accuracy, rather than a false 0.0
        n = self.total
        return {
            "accuracy": self.correct1 / n,
            "top5": self.correct5 / n,
            "loss": self.loss_sum / n,
            "samples": self.total,
        }


class Classification(Task):
    name = "classification"
    primary = "accuracy"
    higher_is_better = True

    def loss(self, outputs: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        if targets.is_floating_point():  # class probabilities
            return F.cross_entropy(outputs, targets)
        # unlabelled samples add nothing (a batch of them gives 0, not NaN); otherwise the plain mean
        total = F.cross_entropy(outputs, targets, ignore_index=UNLABELLED, reduction="sum")
        return total / (targets != UNLABELLED).sum().clamp_min(1)

    def metric(self) -> Metric:
        return Accuracy()
