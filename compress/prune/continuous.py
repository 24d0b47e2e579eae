"""Structured continuous sparsification (Yuan, Savarese and Maire, "Growing Efficient Deep Networks by
Structured Continuous Sparsification", ICLR 2021).

Every removable channel unit of the dependency graph gets a gate m = sigmoid(beta * s) / sigmoid(s0),
applied to every layer input that reads the unit (so a closed gate is exactly a removed channel).
The network and the gates train together through the shared loop on task loss + lambda * MACs(m) /
dense MACs, where MACs(m) is the bilinear out x in count of every conv / linear with the gates as soft
channel counts (so the penalty is FLOPs-weighted). beta grows geometrically to `beta_final` so the
gates harden, and lambda is steered multiplicatively by the gap between the hard-mask MACs and the
target. The final mask is s > 0; the final gate values are folded into the weights and the closed
units are removed physically.

Choices where the paper is not followed or not specified: gates are deterministic (no Bernoulli
sampling), only channel units are gated (no per-residual-block gates: removing a block changes the
traced graph, which the dependency machinery does not yet rewrite), the gates take their own plain
SGD steps (`gate_lr`) while the weights use the shared optimizer, the penalty is a hinge
lambda * max(0, MACs(m) / dense - target) so the gates cannot collapse far below the budget, and when the
hard mask misses the budget the lowest-s units are removed until it is met (`enforce_target`).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from torch import nn

from compress.config import to_dict
from compress.errors import RecipeError
from compress.methods import Context, Result, register_method
from compress.models.model import Model
from compress.prune.common import finetune, input_shape_for, measure, remove_units, teacher_for, write_json
from compress.prune.graph import DependencyGraph, analyze
from compress.tasks import get_task
from compress.train.loop import Objective, TrainConfig, train


@dataclass
class ContinuousConfig:
    """Structured continuous sparsification.

    Attributes:
        target_macs: keep this fraction of the dense MACs.
        train: the joint training of weights and gates (shared loop settings).
        beta_final: final gate temperature (beta grows geometrically from 1).
        s_init: initial gate logit s0 (every gate starts at m = 1).
        gate_speed: the gate logit is gate_speed x its parameter.
        gate_lr: learning rate of the gates' own plain SGD step (Adam's per-parameter normalisation
            would move every gate at the same rate and lose their ranking).
        lambda_init: initial weight of the MACs penalty.
        lambda_lr: multiplicative step of lambda per training step, scaled by the relative MACs gap.
        enforce_target: after training, remove the lowest-s units until the MACs target is met.
        ignore: module-name glob patterns left whole.
        finetune_epochs: optional fine-tuning after removal (0: none, as in the paper).
        finetune: its training settings.
        distill: distil from the unpruned model during training (also when a teacher is given).
        verify: check the pruned model against the masked one after removal.
    """

    target_macs: float = 0.5
    train: TrainConfig = field(default_factory=lambda: TrainConfig(epochs=5))
    beta_final: float = 200.0
    s_init: float = 0.5
    gate_speed: float = 1.0
    gate_lr: float = 30.0
    lambda_init: float = 1.0
    lambda_lr: float = 0.3
    enforce_target: bool = True
    ignore: list[str] = field(default_factory=list)
    finetune_epochs: int = 0
    finetune: TrainConfig = field(default_factory=lambda: TrainConfig(epochs=0))
    distill: bool = False
    distill_temperature: float = 4.0
    distill_alpha: float = 0.9
    verify: bool = True

    def __post_init__(self) -> None:
        if not 0.0 < self.target_macs <= 1.0:
            raise ValueError(f"target_macs is the fraction of MACs to keep, in (0, 1]; got {self.target_macs}")
        if self.beta_final < 1.0 or self.gate_speed <= 0 or self.lambda_init < 0:
            raise ValueError("beta_final must be >= 1, gate_speed > 0 and lambda_init >= 0")


class Gates(nn.Module):
    """One gate logit per removable unit: m = sigmoid(beta * s) / sigmoid(s0)."""

    def __init__(self, n: int, s_init: float, speed: float) -> None:
        super().__init__()
        self.speed = speed
        self.s0 = s_init
        self.raw = nn.Parameter(torch.full((n,), s_init / speed))

    @property
    def s(self) -> torch.Tensor:
        return self.raw * self.speed

    def mask(self, beta: float) -> torch.Tensor:
        return torch.sigmoid(beta * self.s) * (1.0 + math.exp(-self.s0))  # / sigmoid(s0)


class _SlotGate:
    """Index of each entry of a slot in [gates..., 1]: fixed / untracked entries read the constant 1."""

    def __init__(self, classes: np.ndarray, gate_of_class: np.ndarray, n_gates: int) -> None:
        idx = np.full(classes.shape, n_gates, dtype=np.int64)
        valid = classes >= 0
        g = gate_of_class[np.maximum(classes, 0)]
        idx[valid & (g >= 0)] = g[valid & (g >= 0)]
        self.index = torch.as_tensor(idx)
        self.constant = int((idx == n_gates).sum())


class ContinuousObjective(Objective):
    """Task (or distillation) loss + lambda * soft MACs / dense MACs; gates applied by input hooks."""

    def __init__(
        self,
        graph: DependencyGraph,
        gates: Gates,
        gate_of_class: np.ndarray,
        task: str,
        config: ContinuousConfig,
        dense_macs: int,
        teacher: nn.Module | None = None,
    ) -> None:
        self.graph = graph
        self.gates = gates
        self.config = config
        self.task = get_task(task)
        self.teacher = teacher
        self.dense_macs = dense_macs
        self.lam = config.lambda_init
        self.beta = 1.0
        n = gates.raw.numel()
        self.units = np.flatnonzero(gate_of_class >= 0)
        self.slot_gates = [_SlotGate(sc, gate_of_class, n) for sc in graph.slot_classes]
        self.fixed_macs = dense_macs - graph._layer_macs(np.ones(graph.num_classes, dtype=bool))
        self._mask: torch.Tensor | None = None
        self._hooks: list[Any] = []
        self.last_ratio = 1.0

    def modules(self) -> dict[str, nn.Module]:
        return {}  # the gates take their own plain SGD steps (see after_step), not the shared optimizer's

    def _full(self) -> torch.Tensor:
        m = self._mask if self._mask is not None else self.gates.mask(self.beta)
        return torch.cat([m, m.new_ones(1)])

    def setup(self, model: nn.Module, device: torch.device) -> None:
        self.remove_hooks()
        mods = dict(model.named_modules())
        for s, sg in zip(self.graph.slots, self.slot_gates, strict=True):
            if s.role != "in" or sg.constant == sg.index.numel():
                continue
            dim = 1 if isinstance(mods[s.module], (nn.Conv1d, nn.Conv2d, nn.Conv3d)) else -1
            index = sg.index.to(device)

            def hook(_m, args, _index=index, _dim=dim):
                x = args[0]
                g = self._full()[_index]
                shape = [1] * x.dim()
                shape[_dim] = -1
                return (x * g.view(shape),) + tuple(args[1:])

            self._hooks.append(mods[s.module].register_forward_pre_hook(hook))
        if self.teacher is not None:
            self.teacher.to(device).eval()

    def remove_hooks(self) -> None:
        for h in self._hooks:
            h.remove()
        self._hooks = []

    def soft_macs(self, full: torch.Tensor) -> torch.Tensor:
        total = full.new_zeros(())
        for layer in self.graph.layers:
            out = full[self.slot_gates[layer.out_slot].index.to(full.device)].sum()
            inp = (
                full[self.slot_gates[layer.in_slot].index.to(full.device)].sum()
                if layer.in_slot is not None
                else full.new_tensor(float(layer.in_per_group))
            )
            total = total + out * inp * layer.factor
        return total + self.fixed_macs

    def hard_ratio(self) -> float:
        keep = self.keep()
        macs, _ = self.graph.estimate(keep, self.dense_macs, 0)
        return macs / max(self.dense_macs, 1)

    def keep(self) -> np.ndarray:
        s = self.gates.s.detach().cpu().numpy()
        keep = np.ones(self.graph.num_classes, dtype=bool)
        keep[self.units] = s > 0
        return keep

    def loss(self, model, aux, batch, ctx):
        x, y = batch
        self.beta = self.config.beta_final ** min(1.0, ctx.step / max(1, ctx.total_steps - 1))
        self.gates.to(x.device)
        self._mask = self.gates.mask(self.beta)
        out = model(x)
        if self.teacher is not None:
            from compress.distill.losses import kd_loss

            with torch.no_grad():
                zt = self.teacher(x)
            a = self.config.distill_alpha
            base = a * kd_loss(out, zt, self.config.distill_temperature) + (1 - a) * self.task.loss(out, y)
        else:
            base = self.task.loss(out, y)
        soft = torch.sigmoid(self.beta * self.gates.s)  # the cost counts gates in [0, 1]
        macs = self.soft_macs(torch.cat([soft, soft.new_ones(1)])) / self.dense_macs
        # hinge on the budget: below it the gates answer to the task loss alone, so they cannot collapse
        loss = base + self.lam * torch.relu(macs - self.config.target_macs)
        return loss, {"macs": float(macs.detach()), "lam": self.lam, "beta": self.beta}

    def after_step(self, model, ctx):
        self._mask = None
        raw = self.gates.raw
        if raw.grad is not None:
            grad = raw.grad
            if ctx.world_size > 1:
                import torch.distributed as dist

                dist.all_reduce(grad)
                grad /= ctx.world_size
            with torch.no_grad():
                raw -= self.config.gate_lr * grad
            raw.grad = None
        ratio = self.hard_ratio()
        self.last_ratio = ratio
        gap = (ratio - self.config.target_macs) / self.config.target_macs
        self.lam = float(min(1e4, max(1e-4, self.lam * math.exp(self.config.lambda_lr * gap))))

    def state_dict(self) -> dict[str, Any]:
        return {"lam": self.lam, "gates": self.gates.raw.detach().cpu().clone()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.lam = float(state.get("lam", self.lam))
        if "gates" in state:
            with torch.no_grad():
                self.gates.raw.copy_(state["gates"])


def _fold(graph: DependencyGraph, objective: ContinuousObjective, beta: float) -> None:
    """Multiply every gated input column by its final gate value, so that hooks can be removed."""
    gates = objective.gates.mask(beta).detach().cpu()
    full = torch.cat([gates, torch.ones(1)])
    with torch.no_grad():
        for s, sg in zip(graph.slots, objective.slot_gates, strict=True):
            if s.role != "in" or sg.constant == sg.index.numel():
                continue
            w = getattr(graph.modules[s.module], s.param)
            shape = [1] * w.dim()
            shape[s.dim] = -1
            w.mul_(full[sg.index].view(shape))


def _meet_target(
    graph: DependencyGraph, keep: np.ndarray, s: np.ndarray, units: np.ndarray, target: float, dense_macs: int
) -> np.ndarray:
    """Close the lowest-s open units until the MACs estimate meets `target` (bisection on the count)."""

    def ratio(k: np.ndarray) -> float:
        return graph.estimate(k, dense_macs, 0)[0] / max(dense_macs, 1)

    if ratio(keep) <= target:
        return keep
    open_units = units[keep[units]]
    order = open_units[np.argsort(s[np.searchsorted(units, open_units)], kind="stable")]
    lo, hi = 0, len(order)
    while lo < hi:
        mid = (lo + hi) // 2
        k = keep.copy()
        k[order[:mid]] = False
        if ratio(graph.repair(k, np.zeros(graph.num_classes))) <= target:
            hi = mid
        else:
            lo = mid + 1
    k = keep.copy()
    k[order[:lo]] = False
    return k


@register_method("prune", "continuous", ContinuousConfig, needs_data=True)
def continuous(model: Model, config: ContinuousConfig, ctx: Context) -> Result:
    """Learn channel gates under a MACs budget with the weights, then remove the closed channels."""
    if ctx.data is None:
        raise RecipeError("prune method 'continuous' trains gates and needs data (--data)")
    out = model.copy()
    shape = input_shape_for(model, ctx)
    out.input_shape = shape
    dense_macs, dense_params = measure(out.module, shape)
    graph = analyze(out.module, shape, ignore=config.ignore)
    units = graph.prunable_classes()
    if units.size == 0:
        raise RecipeError(f"{model.name}: no channel can be removed safely (see `compress info --prunable`)")
    gate_of_class = np.full(graph.num_classes, -1, dtype=np.int64)
    gate_of_class[units] = np.arange(units.size)
    gates = Gates(units.size, config.s_init, config.gate_speed)
    teacher = teacher_for(model.module, ctx, config.distill)
    objective = ContinuousObjective(graph, gates, gate_of_class, ctx.data.task, config, dense_macs, teacher)
    try:
        result = train(
            out.module,
            ctx.data,
            config.train,
            objective=objective,
            checkpoint=ctx.checkpoint("continuous"),
            description="continuous",
        )
    finally:
        objective.remove_hooks()
    s = gates.s.detach().cpu().numpy()
    keep = objective.keep()
    if config.enforce_target:
        keep = _meet_target(graph, keep, s, units, config.target_macs, dense_macs)
    scores = np.zeros(graph.num_classes)
    scores[units] = s
    _fold(graph, objective, config.beta_final)
    info = remove_units(graph, keep, scores, shape, verify=config.verify)
    macs, params = measure(out.module, shape)
    metrics: dict[str, Any] = {
        "macs_before": dense_macs,
        "macs_after": macs,
        "macs_ratio": macs / max(dense_macs, 1),
        "params_before": dense_params,
        "params_after": params,
        "params_ratio": params / max(dense_params, 1),
        "units": int(units.size),
        "units_removed": info.removed_units,
        "closed_by_gates": int((s <= 0).sum()),
        "lambda_final": objective.lam,
        "verified": info.verified,
        "trained": {f"val_{k}": v for k, v in result.metrics.items() if k != "samples"},
    }
    from compress.prune.common import train_config

    ft = train_config(config.finetune, config.finetune_epochs)
    metrics.update(
        finetune(
            out.module,
            ctx,
            ft,
            teacher=teacher,
            name="finetune",
            temperature=config.distill_temperature,
            alpha=config.distill_alpha,
        )
    )
    if ft.epochs <= 0:
        from compress.train.evaluate import evaluate

        metrics.update(
            {f"val_{k}": v for k, v in evaluate(out.module, ctx.data.val, ctx.data.task).items() if k != "samples"}
        )
    files = write_json(ctx, "prune_report.json", {"config": to_dict(config), "metrics": metrics, "graph": info.report})
    return Result(model=out, metrics=metrics, files=files)
