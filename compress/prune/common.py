"""Shared steps of the pruning methods: measure, prune one shot with verification, fine-tune."""

from __future__ import annotations

import contextlib
import copy
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
import torch.utils._python_dispatch
from torch import nn

from compress.config import from_dict
from compress.errors import ModelError, RecipeError
from compress.prune.graph import DependencyGraph, analyze, masked_params, masked_reference
from compress.train.loop import TrainConfig, train


def measure(module: nn.Module, input_shape: tuple[int, ...]) -> tuple[int, int]:
    """(MACs of one sample, parameter count), counted with torch's FlopCounterMode formulas.

    The same per-op formulas as `compress.analysis.count_macs`, without its per-module bookkeeping and
    autograd; nn.MultiheadAttention (whose fused path only shows with autograd on) goes through it.
    """
    from compress.analysis import count_macs, count_params

    if any(isinstance(m, nn.MultiheadAttention) for m in module.modules()):
        return int(count_macs(module, tuple(input_shape))), int(count_params(module))
    counter = MacCounter()
    was = module.training
    module.eval()
    try:
        with torch.no_grad(), counter:
            module(torch.zeros(1, *input_shape))
    except RuntimeError as e:
        first = str(e).strip().splitlines()[0][:200] if str(e).strip() else type(e).__name__
        raise ModelError(f"the model does not accept inputs of shape {list(input_shape)} ({first})") from None
    finally:
        module.train(was)
    return counter.macs(1), int(count_params(module))


class MacCounter(torch.utils._python_dispatch.TorchDispatchMode):
    """Sum of torch.utils.flop_counter's formulas over the aten ops run under it."""

    def __init__(self) -> None:
        super().__init__()
        from torch.utils.flop_counter import flop_registry

        self.registry = flop_registry
        self.flops = 0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        out = func(*args, **kwargs)
        formula = self.registry.get(func._overloadpacket)
        if formula is not None:
            self.flops += formula(*args, **kwargs, out_val=out)
        return out

    def macs(self, batch: int) -> int:
        """Multiply-accumulates of one sample of a forward pass on `batch` samples."""
        return int(self.flops // 2 // batch)


@dataclass
class PruneInfo:
    """What one pruning pass did (`macs_before` / `macs_after`: MACs of one sample, when measured)."""

    graph: DependencyGraph
    keep: np.ndarray
    verified: str
    removed_units: int
    report: dict[str, Any] = field(default_factory=dict)
    macs_before: int | None = None
    macs_after: int | None = None


def _forward(module: nn.Module, x: torch.Tensor, *, params: dict[str, torch.Tensor] | None = None, count: bool = False):
    """`module(x)` in eval mode without autograd, with `params` (by name) in place of its own; with
    `count`, also the MACs of that forward per sample (None where the counter cannot see them)."""
    visible = not any(isinstance(m, nn.MultiheadAttention) for m in module.modules())  # see `measure`
    counter = MacCounter() if count and visible else None
    was = module.training
    module.eval()
    try:
        with torch.no_grad(), counter if counter is not None else contextlib.nullcontext():
            y = torch.func.functional_call(module, params, (x,)) if params else module(x)
    finally:
        module.train(was)
    return y, (counter.macs(x.shape[0]) if counter is not None else None)


def _check_output(y: Any, dense_out_shape: tuple[int, ...] | None) -> None:
    if not isinstance(y, torch.Tensor) or (dense_out_shape is not None and tuple(y.shape[1:]) != dense_out_shape):
        raise ModelError(f"internal error: pruning changed the output shape to {getattr(y, 'shape', None)}")


def _check_equal(y: torch.Tensor, expected: torch.Tensor) -> None:
    scale = float(expected.abs().max()) + 1e-6
    if y.shape != expected.shape or float((y - expected).abs().max()) > 1e-3 * scale + 1e-5:
        raise ModelError("internal error: the pruned model disagrees with the masked unpruned model")


def prune_once(
    module: nn.Module,
    input_shape: tuple[int, ...],
    score_fn,
    keep_fn,
    *,
    ignore: list[str] | None = None,
    verify: bool = True,
    refit=None,
    count_macs: bool = False,
) -> PruneInfo:
    """Analyse `module`, pick units with `keep_fn(graph, scores)`, remove them in place, verify."""
    graph = analyze(module, input_shape, ignore=ignore)
    scores = score_fn(graph)
    keep = keep_fn(graph, scores)
    return remove_units(graph, keep, scores, input_shape, verify=verify, refit=refit, count_macs=count_macs)


def remove_units(
    graph: DependencyGraph,
    keep: np.ndarray,
    scores: np.ndarray,
    input_shape: tuple[int, ...],
    *,
    verify: bool = True,
    refit=None,
    count_macs: bool = False,
) -> PruneInfo:
    """Remove the units of `graph` where `keep` is False from its module (in place) and verify.

    Verification runs one sample through the pruned network (it must run and keep the output shape)
    and, where no removed channel is normalised together with kept ones, through the unpruned network
    with the removed channels' consumers zeroed (`masked_params`), which it must match exactly.
    `count_macs` also fills the MACs before and after, counted on those forwards where they run.
    `refit(masked, unpruned)`, when given, changes the masked copy (`masked_reference`) towards the
    unpruned network before the removal; its result is returned in the report.
    """
    module = graph.module
    keep = graph.repair(keep, scores)
    removed = int((~keep).sum())
    exact = verify and removed > 0 and not bool((graph.class_normed & ~keep).any())
    x = torch.randn(1, *input_shape, generator=torch.Generator().manual_seed(0))
    refit_info, expected, macs_before = None, None, None
    if refit is not None and removed:
        reference = masked_reference(module, graph, keep)
        refit_info = refit(reference, module)  # reads the unpruned module, changes only the masked copy
        with torch.no_grad():
            module.load_state_dict(reference.state_dict())
        if exact:  # the masked (re-fitted) weights are loaded
            expected, macs_before = _forward(module, x, count=count_macs)
    elif exact:  # masking changes no shape: the MACs of the unpruned network
        expected, macs_before = _forward(module, x, params=masked_params(module, graph, keep), count=count_macs)
    if count_macs and macs_before is None:
        macs_before = measure(module, input_shape)[0]
    graph.apply(keep)
    verified, macs_after = "skipped", None
    if verify:
        try:
            y, macs_after = _forward(module, x, count=count_macs)
        except Exception as e:  # noqa: BLE001 - report any failure of the pruned forward pass as ours
            msg = str(e).splitlines()[0][:200] if str(e) else type(e).__name__
            raise ModelError(f"internal error: the pruned model no longer runs ({msg})") from None
        _check_output(y, graph.output_shape)
        if expected is not None:
            _check_equal(y, expected)
        verified = "exact" if expected is not None else "shape"
    if count_macs and macs_after is None:
        macs_after = measure(module, input_shape)[0]
    report = graph.report()
    if refit_info is not None:
        report["reconstruction"] = refit_info
    return PruneInfo(graph, keep, verified, removed, report, macs_before, macs_after)


def train_config(base: TrainConfig, epochs: int | None) -> TrainConfig:
    cfg = copy.deepcopy(base)
    if epochs is not None:
        cfg.epochs = epochs
    return cfg


def finetune(
    module: nn.Module,
    ctx,
    config: TrainConfig,
    *,
    teacher: nn.Module | None = None,
    name: str = "finetune",
    temperature: float = 4.0,
    alpha: float = 0.9,
    method: str | None = None,
    params: dict[str, Any] | None = None,
    model=None,
) -> dict[str, float]:
    """Fine-tune `module` in place through the shared loop.

    With a teacher, the loss is logit distillation (`method` None or "kd"), or `method` names any
    registered distillation method, which then trains `module` with its own objective and schedule
    (`params` are its config; its epochs are `config.epochs`). `model` is the pruned model's handle,
    needed by such a method (its preprocessing and task).
    """
    if config.epochs <= 0:
        return {}
    if ctx is None or ctx.data is None:
        raise RecipeError("fine-tuning after pruning needs data (--data)")
    if teacher is not None and method not in (None, "kd"):
        return _distill_with(module, ctx, config, teacher, name, method, params or {}, model)
    objective = None
    if teacher is not None:
        if ctx.data.task != "classification":
            raise RecipeError("distillation during pruning matches class logits; it needs a classification task")
        from compress.distill.kd import KDConfig, KDObjective

        kd = {"temperature": temperature, "alpha": alpha, **(params or {})}
        kd_config = from_dict(KDConfig, kd, where="distill_params (kd)")
        kd_config.train = config
        objective = KDObjective(copy.deepcopy(teacher).eval(), ctx.data.task, kd_config)
    result = train(module, ctx.data, config, objective=objective, checkpoint=ctx.checkpoint(name), description=name)
    return {f"val_{k}": float(v) for k, v in result.metrics.items() if k != "samples"}


def _distill_with(module, ctx, config: TrainConfig, teacher: nn.Module, name: str, method: str, params, model):
    """Train `module` (in place) with the distillation method `method`, the unpruned model teaching."""
    import dataclasses

    from compress.methods import Context, get_method
    from compress.models.model import Model

    spec = get_method("distill", method)
    cfg = from_dict(spec.config, params, where=f"distill_params ({method})")
    if hasattr(cfg, "train") and "epochs" not in (params.get("train") or {}):
        cfg = dataclasses.replace(cfg, train=dataclasses.replace(cfg.train, epochs=config.epochs))
    base = model if model is not None else Model(module, {"source": "pruned", "name": name}, ctx.data.input_shape)
    shape = tuple(ctx.data.input_shape)
    student = Model(module, dict(base.arch), shape, base.task, list(base.history), dict(base.preprocessing))
    teacher_model = Model(teacher, dict(base.arch), shape, base.task, [], dict(base.preprocessing))
    workdir = ctx.workdir / name if ctx.workdir is not None else None
    result = spec.fn(student, cfg, Context(data=ctx.data, teacher=teacher_model, workdir=workdir))
    with torch.no_grad():
        module.load_state_dict(result.model.module.state_dict())
    return {
        f"val_{k}" if not k.startswith("val_") else k: float(v)
        for k, v in result.metrics.items()
        if isinstance(v, (int, float)) and not isinstance(v, bool) and k != "samples"
    }


def teacher_for(model_module: nn.Module, ctx, distill) -> nn.Module | None:
    """The teacher for fine-tuning: ctx.teacher, else the unpruned model when `distill` is set."""
    if ctx is not None and ctx.teacher is not None:
        t = ctx.teacher
        return t.module if hasattr(t, "module") else t
    if distill:
        return copy.deepcopy(model_module).eval()
    return None


def input_shape_for(model, ctx) -> tuple[int, ...]:
    if ctx is not None and ctx.data is not None:
        return tuple(ctx.data.input_shape)
    if not model.input_shape:
        raise ModelError(f"{model.name}: unknown input shape; pass --data or a model with an input shape")
    return tuple(model.input_shape)


def write_json(ctx, name: str, payload: Any) -> dict[str, Any]:
    """Write `payload` into the method's workdir (if any); returns {role: path} for Result.files."""
    if ctx is None or ctx.workdir is None:
        return {}
    import json

    ctx.workdir.mkdir(parents=True, exist_ok=True)
    path = ctx.workdir / name
    path.write_text(json.dumps(payload, indent=1, default=str))
    return {name.rsplit(".", 1)[0]: path}
