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


def get_backend(name: str) -> Backend:
    return importlib.import_module(BACKENDS.get(name)).BACKEND


__all__ = ["BACKENDS", "Backend", "Session", "get_backend"]
