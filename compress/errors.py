"""Typed errors. The CLI turns each into a one-line message and a non-zero exit."""


class CompressError(Exception):
    """Base class for every error a user can cause and fix."""


class RecipeError(CompressError):
    """A recipe or config is malformed: unknown key, wrong type, bad value."""


class ModelError(CompressError):
    """A model cannot be found, loaded, built or saved."""


class DataError(CompressError):
    """A dataset cannot be found or does not fit the model."""


class BackendError(CompressError):
    """A runtime backend failed: bad ONNX file, wrong input shape, failed parity check."""


class MissingDependencyError(CompressError):
    """An optional dependency is not installed; the message names the pip extra."""


class RunDirError(CompressError):
    """A run directory exists (needs --force), is incomplete, or has no manifest."""
