"""The backend interface: load an artifact into a session, run batches, describe itself."""

from __future__ import annotations

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
    """

    device: str = "cpu"
    threads: int = 0


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

    def info(self) -> dict[str, Any]:
        return {}


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
