"""compress: distill, prune, quantize, export and measure PyTorch networks.

The public verbs live in `compress.api` (`from compress.api import prune, quantize, distill, train,
export, bench`): `compress.prune` etc. are the technique packages. Imports are lazy so that
`import compress` (and `compress --help`) stays fast.
"""

from __future__ import annotations

__version__ = "0.1.0"


def __getattr__(name: str):
    if name in ("load_model", "save_model", "Model"):
        from compress import models

        return getattr(models, name)
    if name in ("load_data", "DataConfig"):
        from compress import data

        return getattr(data, name)
    raise AttributeError(f"module 'compress' has no attribute '{name}'")


__all__ = ["DataConfig", "Model", "load_data", "load_model", "save_model"]
