"""Image denoising, the dense image-to-image task: MSE loss, PSNR on [0, 1] images."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from compress.tasks.base import Metric, Task, as_tensor


class PSNR(Metric):
    """Mean per-image PSNR (dB) of outputs clipped to [0, 1]."""

    def __init__(self) -> None:
        self.psnr_sum = 0.0
        self.mse_sum = 0.0
        self.total = 0

    def update(self, outputs, targets) -> None:
        out, ref = as_tensor(outputs).float().clamp(0, 1), as_tensor(targets).float()
        if out.shape != ref.shape:
            from compress.errors import DataError

            raise DataError(
                f"the model's outputs {list(out.shape)} are not images like the targets {list(ref.shape)}; "
                "wrong model or wrong --task?"
            )
        mse = ((out - ref) ** 2).flatten(1).mean(1).clamp_min(1e-10)
        self.psnr_sum += float((10 * torch.log10(1.0 / mse)).sum())
        self.mse_sum += float(mse.sum())
        self.total += len(mse)

    def compute(self) -> dict[str, float]:
        n = max(self.total, 1)
        mse = self.mse_sum / n
        return {"psnr": self.psnr_sum / n, "mse": mse, "loss": mse, "samples": self.total}


class Denoising(Task):
    name = "denoising"
    primary = "psnr"
    higher_is_better = True

    def loss(self, outputs: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        return F.mse_loss(outputs, targets)

    def metric(self) -> Metric:
        return PSNR()
