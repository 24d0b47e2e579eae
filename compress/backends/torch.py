"""PyTorch eager execution as a backend, for comparing the deployed model with its source."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from compress.backends.base import Backend, BackendOptions, Session


class TorchSession(Session):
    def __init__(self, path: Path, options: BackendOptions) -> None:
        import torch

        from compress.models.sources import load_model

        self.model = load_model(str(path))
        self.device = torch.device(options.device)
        self.module = self.model.module.to(self.device).eval()
        self.input_shape = [None, *self.model.input_shape]
        self.threads = options.threads or torch.get_num_threads()
        torch.set_num_threads(self.threads)

    def _run(self, x: np.ndarray) -> np.ndarray:
        import torch

        with torch.inference_mode():
            out = self.module(torch.from_numpy(x).to(self.device))
            if self.device.type == "cuda":
                torch.cuda.synchronize()
            return out.float().cpu().numpy()

    def info(self) -> dict[str, Any]:
        import torch

        return {
            "backend": "torch",
            "version": torch.__version__,
            "device": str(self.device),
            "intra_op_threads": self.threads,
        }


class TorchBackend(Backend):
    def _load(self, path: Path, options: BackendOptions) -> Session:
        return TorchSession(path, options)


BACKEND = TorchBackend("torch", (".pt",))
