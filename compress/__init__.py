"""compress: distill, prune, quantize, export and measure PyTorch networks.

The verbs are imported lazily so `import compress` (and `compress --help`) stays fast.
"""

from __future__ import annotations

__version__ = "0.1.0"

_VERBS = ("train", "prune", "quantize", "distill", "export", "bench")


def __getattr__(name: str):
    if name in _VERBS:
        from compress import verbs

        return getattr(verbs, name)
    if name in ("load_model", "save_model"):
        from compress import models

        return getattr(models, name)
    if name in ("load_data", "DataConfig"):
        from compress import data

        return getattr(data, name)
    raise AttributeError(f"module 'compress' has no attribute '{name}'")


__all__ = ["DataConfig", "bench", "distill", "export", "load_data", "load_model", "prune", "quantize", "save_model",
           "train"]
