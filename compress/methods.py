"""The method registry behind the verbs.

A method is a `<Method>Config` dataclass plus a function registered against it:

    @register_method("prune", "channel", ChannelConfig)
    def channel(model: Model, config: ChannelConfig, ctx: Context) -> Result: ...

The verbs (`compress.api.prune`, `.quantize`, `.distill`, `.train`) and recipe
steps find the function by technique and method name (or by the config's type), so adding a method
never edits a verb.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from compress.errors import RecipeError
from compress.registry import Registry

TECHNIQUES = ("train", "distill", "prune", "quantize")


@dataclass(frozen=True)
class Method:
    technique: str
    name: str
    config: type
    fn: Callable[..., Result]
    needs_data: bool = True
    needs_teacher: bool = False


@dataclass
class Context:
    """What a method may use besides the model and its config.

    Attributes:
        data: the dataset bundle (train / val / calib splits), when the step has data.
        teacher: the teacher model, for distillation (or a method that distils while it fine-tunes).
        workdir: a folder for the method's files and training checkpoints; re-used on resume.
    """

    data: Any = None
    teacher: Any = None
    workdir: Path | None = None

    def checkpoint(self, name: str = "train") -> Path | None:
        """A training checkpoint path inside the workdir (None without a workdir)."""
        if self.workdir is None:
            return None
        self.workdir.mkdir(parents=True, exist_ok=True)
        return self.workdir / f"{name}.ckpt.pt"


@dataclass
class Result:
    """What a method returns.

    Attributes:
        model: the compressed PyTorch model (None if the method only produces ONNX).
        onnx: an ONNX file the method wrote itself (Q/DQ graphs, codebook graphs); otherwise the
            pipeline exports `model`.
        metrics: the method's own figures (sparsity, bits per weight, MACs kept, accuracy).
        files: extra artifacts by role, e.g. {"packed": path}.
        history: the steps applied to produce this result, oldest first (filled by the verbs).
    """

    model: Any = None
    onnx: Path | None = None
    metrics: dict[str, Any] = field(default_factory=dict)
    files: dict[str, Path] = field(default_factory=dict)
    history: list[dict[str, Any]] = field(default_factory=list)


_REGISTRIES: dict[str, Registry[Method]] = {t: Registry(f"{t} method", RecipeError) for t in TECHNIQUES}


def register_method(
    technique: str, name: str, config: type, *, needs_data: bool = True, needs_teacher: bool = False
) -> Callable[[Callable[..., Result]], Callable[..., Result]]:
    def decorator(fn: Callable[..., Result]) -> Callable[..., Result]:
        _registry(technique).register(name, Method(technique, name, config, fn, needs_data, needs_teacher))
        return fn

    return decorator


def _registry(technique: str) -> Registry[Method]:
    if technique not in _REGISTRIES:
        raise RecipeError(f"unknown technique '{technique}'; available: {', '.join(TECHNIQUES)}")
    return _REGISTRIES[technique]


def load_techniques() -> None:
    """Import the technique packages so their methods register."""
    import compress.distill  # noqa: F401
    import compress.prune  # noqa: F401
    import compress.quantize  # noqa: F401
    import compress.train.methods  # noqa: F401


def get_method(technique: str, name: str) -> Method:
    load_techniques()
    return _registry(technique).get(name)


def method_for_config(technique: str, config: Any) -> Method:
    load_techniques()
    for _, method in _registry(technique).items():
        if type(config) is method.config:
            return method
    raise RecipeError(f"no {technique} method takes a {type(config).__name__}")


def method_names(technique: str) -> list[str]:
    load_techniques()
    return _registry(technique).names()


def apply(technique: str, model: Any, config: Any, ctx: Context) -> Result:
    """Run the method that `config` belongs to."""
    method = method_for_config(technique, config)
    if method.needs_data and ctx.data is None:
        raise RecipeError(f"{technique} method '{method.name}' needs data (--data)")
    if method.needs_teacher and ctx.teacher is None:
        raise RecipeError(f"{technique} method '{method.name}' needs a teacher (--teacher)")
    return method.fn(model, config, ctx)
