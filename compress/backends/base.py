"""The backend interface: load an artifact into a session, run batches, describe itself."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from compress.errors import BackendError


@dataclass
class BackendOptions:
    """Runtime options shared by backends.

    Attributes:
        device: cpu or cuda.
        threads: intra-op threads (0: one per physical core).
        compile: torch-cuda: run the module through `torch.compile`.
        cuda_graph: torch-cuda / tensorrt: capture one call in a CUDA graph and time its replay.
        provider: onnxruntime on cuda: "cuda" (default) or "tensorrt" (the execution provider; checked).
        precision: torch-cuda: fp32 or fp16 weights and activations.
        sparse: torch-cuda: 2:4 semi-structured sparse Linear layers (`to_sparse_semi_structured`):
            off; all (every Linear whose weight really is 2:4 and fits the kernels); auto (each such
            layer timed dense vs sparse on the device, swapped only where sparse measured faster,
            `compress.sparsity.cuda.sparse_auto`; the session's info says which and by how much).
    """

    device: str = "cpu"
    threads: int = 0
    compile: bool = False
    cuda_graph: bool = False
    provider: str = ""
    precision: str = "fp32"
    sparse: str = "off"


class Session:
    """A loaded model ready to run. Public methods validate; `_run` does the work."""

    input_name: str = "input"
    input_shape: list[int | str | None] = []
    input_dtype: np.dtype = np.dtype(np.float32)

    def run(self, x: np.ndarray) -> np.ndarray:
        """Run one batch; checks the input's shape and dtype against the model's."""
        self.validate(x)
        return self._run(x)

    def validate(self, x: np.ndarray) -> None:
        if x.ndim != len(self.input_shape):
            raise BackendError(f"input has shape {tuple(x.shape)} but the model expects {_fmt(self.input_shape)}")
        for have, want in zip(x.shape, self.input_shape, strict=False):
            if isinstance(want, int) and want > 0 and have != want:
                raise BackendError(f"input has shape {tuple(x.shape)} but the model expects {_fmt(self.input_shape)}")

    def runner(self, x: np.ndarray):
        """A zero-argument callable running `x` with no per-call overhead (for timing loops)."""
        self.validate(x)
        return lambda: self._run(x)

    def _run(self, x: np.ndarray) -> np.ndarray:
        raise NotImplementedError

    def run_all(self, x: np.ndarray) -> dict[str, np.ndarray]:
        """Every output by name (backends with several outputs override this)."""
        return {"output": self.run(x)}

    def timer(self) -> Timer:
        """The clock the latency harness times this session's calls with."""
        return WallTimer()

    def info(self) -> dict[str, Any]:
        return {}


class Timer:
    """Times one call of a runner. The harness takes its timer from the session.

    `__call__(run)` returns the call's seconds; `series()` gives other series measured alongside
    (a CUDA-event timer also keeps the host's end-to-end wall time of each call).
    """

    name = "perf_counter"

    def __call__(self, run: Callable[[], object]) -> float:
        t0 = time.perf_counter()
        run()
        return time.perf_counter() - t0

    def reset(self) -> None:
        """Forget what was measured so far (the warm-up's calls)."""

    def series(self) -> dict[str, np.ndarray]:
        return {}


class WallTimer(Timer):
    """Host wall time (`time.perf_counter`): right for runtimes whose calls return when done (CPU)."""


class CudaEventTimer(Timer):
    """GPU compute time between two CUDA events on `stream` (torch's current stream by default),
    and, separately, the host's end-to-end wall time of the call up to the end event's completion."""

    name = "cuda_event"

    def __init__(self, stream: Any = None) -> None:
        import torch

        self._torch = torch
        self.stream = stream
        self.host_s: list[float] = []

    def __call__(self, run: Callable[[], object]) -> float:
        torch = self._torch
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        stream = self.stream or torch.cuda.current_stream()
        t0 = time.perf_counter()
        start.record(stream)
        run()
        end.record(stream)
        end.synchronize()
        self.host_s.append(time.perf_counter() - t0)
        return start.elapsed_time(end) / 1e3

    def reset(self) -> None:
        self.host_s.clear()

    def series(self) -> dict[str, np.ndarray]:
        return {"host": np.asarray(self.host_s)}


@dataclass
class Backend:
    name: str
    suffixes: tuple[str, ...] = field(default_factory=tuple)

    def load(self, path: str | Path, options: BackendOptions | None = None) -> Session:
        path = Path(path)
        if not path.is_file():
            raise BackendError(f"model file not found: {path}")
        return self._load(path, options or BackendOptions())

    def _load(self, path: Path, options: BackendOptions) -> Session:
        raise NotImplementedError


def _fmt(shape: list[Any]) -> str:
    return "[" + ", ".join("batch" if not isinstance(d, int) or d <= 0 else str(d) for d in shape) + "]"
