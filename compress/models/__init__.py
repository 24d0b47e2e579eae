"""Model sources, the Model handle, and the checkpoint format."""

from compress.models.checkpoint import load_checkpoint, save_model
from compress.models.model import Model
from compress.models.sources import load_model

__all__ = ["Model", "load_checkpoint", "load_model", "save_model"]
