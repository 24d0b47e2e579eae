"""PyTorch on a CUDA device: eager, `torch.compile`, CUDA graphs, fp16, 2:4 semi-structured Linear layers.

Timed with CUDA events (GPU compute) and, separately, the host's end-to-end wall time of each call.
The input stays on the device for timing; `run` copies in and out.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from compress.backends.base import Backend, BackendOptions, CudaEventTimer, Session
from compress.errors import BackendError

PRECISIONS = ("fp32", "fp16")


SPARSE = ("off", "all", "auto")


class TorchCudaSession(Session):
    def __init__(self, path: Path | None, options: BackendOptions, *, model: Any = None) -> None:
        """From the checkpoint at `path`, or from `model` (a `compress.models.Model` in memory)."""
        import torch

        from compress.backends.cuda import require_cuda
        from compress.models.sources import load_model

        require_cuda("the torch-cuda backend")
        if options.precision not in PRECISIONS:
            raise BackendError(f"unknown precision '{options.precision}' for torch-cuda; available: fp32, fp16")
        self.options = options
        self.model = model if model is not None else load_model(str(path))
        self.dtype = torch.float16 if options.precision == "fp16" else torch.float32
        module = self.model.module.to("cuda", self.dtype).eval()
        if options.sparse not in SPARSE:
            raise BackendError(f"unknown --sparse '{options.sparse}' for torch-cuda; available: {', '.join(SPARSE)}")
        self.sparse_report = None
        if options.sparse == "all":
            self.sparse_layers = semi_structured(module)
        elif options.sparse == "auto":
            from compress.sparsity.cuda import sparse_auto

            x = torch.zeros(1, *self.model.input_shape, device="cuda", dtype=self.dtype)
            self.sparse_report = sparse_auto(module, x, dtype=self.dtype)
            self.sparse_layers = list(self.sparse_report["swapped"])
        else:
            self.sparse_layers = []
        self.eager = module
        self.module = torch.compile(module) if options.compile else module
        self.input_shape = [None, *self.model.input_shape]
        self.stream = torch.cuda.Stream()  # a side stream: CUDA graphs cannot capture on the default one

    def _forward(self, xt):
        import torch

        with torch.inference_mode():
            return self.module(xt)

    def _run(self, x: np.ndarray) -> np.ndarray:
        import torch

        with torch.cuda.stream(self.stream):
            out = self._forward(torch.from_numpy(np.ascontiguousarray(x)).to("cuda", self.dtype))
        self.stream.synchronize()
        return out.float().cpu().numpy()

    def runner(self, x: np.ndarray):
        """Replays one call on device-resident input: a CUDA graph's replay with --cuda-graph."""
        import torch

        self.validate(x)
        static_x = torch.from_numpy(np.ascontiguousarray(x)).to("cuda", self.dtype)
        stream = self.stream
        stream.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(stream):
            for _ in range(3):  # warm-up before capture (and compile's first calls)
                self._forward(static_x)
        stream.synchronize()
        if not self.options.cuda_graph:

            def call():
                with torch.cuda.stream(stream):
                    self._forward(static_x)

            return call
        from compress.backends.cuda import graph_replay

        replay, self._static_out = graph_replay(lambda: self._forward(static_x), stream)
        return replay

    def timer(self) -> CudaEventTimer:
        return CudaEventTimer(self.stream)

    def info(self) -> dict[str, Any]:
        import torch

        from compress.backends.cuda import device_info

        mode = "torch.compile" if self.options.compile else "eager"
        return {
            "backend": "torch-cuda",
            "version": torch.__version__,
            "mode": mode + (" + cuda graph" if self.options.cuda_graph else ""),
            "precision": self.options.precision,
            "semi_structured_layers": len(self.sparse_layers),
            **({"sparse_auto": self.sparse_report} if self.sparse_report is not None else {}),
            "timer": "cuda_event",
            "device": device_info(torch.cuda.current_device()),
        }


def semi_structured(module) -> list[str]:
    """Swap the weight of every Linear layer that holds a 2:4 pattern for a semi-structured sparse tensor.

    Layers whose weights are not 2:4 along the input axis, or too small for the kernels, stay dense.
    Returns the names of the layers that were converted."""
    import torch

    from compress.sparsity.masks import TORCH_MIN_COLS, TORCH_MIN_ROWS, holds

    done = []
    for name, layer in module.named_modules():
        if not isinstance(layer, torch.nn.Linear):
            continue
        w = layer.weight.detach()
        rows, cols = w.shape
        if rows % TORCH_MIN_ROWS or cols % TORCH_MIN_COLS or not holds(w, 2, 4, axis=1):
            continue
        if w.dtype not in (torch.float16, torch.bfloat16):
            continue  # the kernels take half precision (and int8)
        layer.weight = torch.nn.Parameter(torch.sparse.to_sparse_semi_structured(w), requires_grad=False)
        done.append(name)
    return done


class TorchCudaBackend(Backend):
    def _load(self, path: Path, options: BackendOptions) -> Session:
        return TorchCudaSession(path, options)


BACKEND = TorchCudaBackend("torch-cuda", (".pt", ".pt2"))
