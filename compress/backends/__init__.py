"""Runtime backends behind one interface.

`get_backend(name)` imports a backend module only when it is chosen, so the heavy runtimes
(onnxruntime, tensorrt) load only for the commands that use them.
"""

from __future__ import annotations

import importlib

from compress.backends.base import Backend, Session
from compress.errors import BackendError
from compress.registry import Registry

# name -> module path holding a `BACKEND` instance
BACKENDS: Registry[str] = Registry("backend", BackendError)
BACKENDS.register("onnxruntime", "compress.backends.onnxruntime")
BACKENDS.register("torch", "compress.backends.torch")
BACKENDS.register("torch-cuda", "compress.backends.torch_cuda")
BACKENDS.register("tensorrt", "compress.backends.tensorrt")

# the run-directory artifact each backend runs
ARTIFACT_ROLES = {"onnxruntime": "onnx", "torch": "torch", "torch-cuda": "torch", "tensorrt": "engine"}


def get_backend(name: str) -> Backend:
    return importlib.import_module(BACKENDS.get(name)).BACKEND


def artifact_role(name: str) -> str:
    """Which artifact of a run directory backend `name` loads (torch, onnx or engine)."""
    BACKENDS.get(name)  # an unknown name fails here, listing the available ones
    return ARTIFACT_ROLES.get(name, "onnx")


__all__ = ["ARTIFACT_ROLES", "BACKENDS", "Backend", "Session", "artifact_role", "get_backend"]
