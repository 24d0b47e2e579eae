"""N:M fine-grained sparsity (NVIDIA ASP recipe): one-shot magnitude masks along the input-channel
axis, optional channel permutation, then fine-tuning with the mask enforced (or SR-STE).

Masks follow the hardware's rule (see `compress.sparsity.masks`): Conv [K, C, R, S] in groups of M
consecutive C for each (K, R, S); Linear [out, in] along `in`. Every layer that cannot carry the
pattern is listed with its reason. Fine-tuning modes:

- `fixed` (ASP): the mask is fixed after the one-shot prune; gradients are masked by a hook on each
  weight and the weights are re-masked after every optimizer step, so neither the gradient nor an
  optimizer's momentum / Adam moments can bring a pruned weight back.
- `srste` (Zhou et al., "Learning N:M Fine-grained Structured Sparse Neural Networks From Scratch",
  ICLR 2021): dense weights are kept, the forward pass uses the N:M-masked weight (mask recomputed
  from the current magnitudes), the gradient passes straight through, and a decay
  lambda * (1 - M) * W pulls pruned weights towards zero. The final mask is folded in.

Channel permutation (after Pool & Yu, "Channel Permutations for N:M Sparsity", NeurIPS 2021):
the input channels of a coupled channel group (a producer, its norms and every consumer, from the
pruning dependency graph) are reordered consistently, which leaves the network's function unchanged,
so that the N:M mask keeps more magnitude. The search here is greedy pairwise swaps between groups of
M (not the paper's bounded-regression search); the result is verified against the unpermuted network.

The saved model holds plain weights with the zeros in them (the masks are folded); INT8 post-training
quantization keeps the zeros (symmetric weights: 0 quantizes to 0), so the Q/DQ model keeps the pattern.
No sparse kernel runs on CPU: ONNX Runtime executes the zeros densely.
"""

from __future__ import annotations

import copy
import fnmatch
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np
import torch
from torch import nn
from torch.nn.utils import parametrize

from compress.config import to_dict
from compress.methods import Context, Result, register_method
from compress.models.model import Model
from compress.prune.common import input_shape_for, teacher_for, train_config, write_json
from compress.sparsity.check import pattern_report, torch_kind
from compress.sparsity.masks import eligibility, input_axis, nm_mask
from compress.train.loop import Objective, TaskObjective, TrainConfig, train

CPU_NOTE = (
    "no sparse kernels ran: on CPU (ONNX Runtime) the zeros are computed densely; N:M speedups need sparse "
    "tensor cores (TensorRT sparse weights, torch semi-structured on CUDA)"
)


@dataclass
class NMConfig:
    """N:M sparsity.

    Attributes:
        n, m: keep at most n nonzeros in every group of m consecutive input-channel weights (2:4 is what
            sparse tensor cores run).
        permute: search a channel permutation per coupled group that keeps more magnitude.
        permute_sweeps: passes of the greedy swap search over each group's channels.
        mode: fixed (mask fixed, weights and gradients masked every step) or srste (SR-STE).
        srste_decay: SR-STE's lambda on the pruned weights.
        min_params: layers with fewer weights are left dense (reported).
        ignore: module-name glob patterns left dense (reported).
        finetune_epochs: epochs of fine-tuning after the one-shot prune (overrides finetune.epochs).
        finetune: the shared training loop's settings.
        distill: fine-tune with logit distillation from the dense model (also when a teacher is given).
    """

    n: int = 2
    m: int = 4
    permute: bool = False
    permute_sweeps: int = 4
    mode: Literal["fixed", "srste"] = "fixed"
    srste_decay: float = 2e-4
    min_params: int = 0
    ignore: list[str] = field(default_factory=list)
    finetune_epochs: int | None = None
    finetune: TrainConfig = field(default_factory=lambda: TrainConfig(epochs=0))
    distill: bool = False
    distill_temperature: float = 4.0
    distill_alpha: float = 0.9

    def __post_init__(self) -> None:
        if not 0 < self.n < self.m:
            raise ValueError(f"N:M needs 0 < n < m, got {self.n}:{self.m}")
        if self.srste_decay < 0 or self.min_params < 0 or self.permute_sweeps < 0:
            raise ValueError("srste_decay, min_params and permute_sweeps must be >= 0")


# ------------------------------------------------------------------------------------------ layers
def nm_layers(
    module: nn.Module, m: int, *, ignore: list[str] | None = None, min_params: int = 0
) -> tuple[dict[str, nn.Module], list[dict[str, Any]]]:
    """({name: layer} that get a mask, [{name, op, shape, reason}] of the layers left dense)."""
    chosen: dict[str, nn.Module] = {}
    skipped: list[dict[str, Any]] = []
    for name, mod in module.named_modules():
        kind = torch_kind(mod)
        w = getattr(mod, "weight", None)
        if kind is None or not isinstance(w, torch.Tensor):
            continue
        row = {"name": name, "op": kind, "shape": list(w.shape)}
        pattern = next((p for p in ignore or [] if fnmatch.fnmatchcase(name, p)), None)
        if pattern is not None:
            skipped.append({**row, "reason": f"ignored ({pattern})"})
            continue
        can, why, _, _ = eligibility(
            kind, tuple(w.shape), m, groups=int(getattr(mod, "groups", 1)), dtype=w.dtype, min_params=min_params
        )
        if not can:
            skipped.append({**row, "reason": why})
            continue
        chosen[name] = mod
    return chosen, skipped


def layer_mask(mod: nn.Module, n: int, m: int, weight: torch.Tensor | None = None) -> torch.Tensor:
    w = mod.weight if weight is None else weight
    return nm_mask(w, n, m, input_axis(torch_kind(mod), w.dim()))


def kept_magnitude(layers: dict[str, nn.Module], n: int, m: int) -> float:
    """Share of the total |w| of the masked layers that an N:M mask keeps."""
    kept, total = 0.0, 0.0
    for mod in layers.values():
        w = mod.weight.detach().abs()
        kept += float((w * layer_mask(mod, n, m)).sum())
        total += float(w.sum())
    return kept / max(total, 1e-12)


# ------------------------------------------------------------------------------------- permutation
def _group_score(a: np.ndarray, n: int, m: int) -> np.ndarray:
    """a: [groups, m, rows] magnitudes -> kept magnitude per group (sum of the n largest of each m)."""
    if m > 8:
        return np.sort(a, axis=1)[:, m - n :, :].sum(axis=(1, 2))
    rows = [a[:, k] for k in range(m)]  # odd-even transposition sort across the m slices: elementwise, fast
    for r in range(m):
        for k in range(r % 2, m - 1, 2):
            lo, hi = np.minimum(rows[k], rows[k + 1]), np.maximum(rows[k], rows[k + 1])
            rows[k], rows[k + 1] = lo, hi
    return sum(rows[m - n :]).sum(axis=1)


def search_permutation(
    a: np.ndarray, n: int, m: int, sweeps: int = 4, candidates: int = 64, seed: int = 0
) -> np.ndarray:
    """A permutation of the C rows of `a` [C, rows] (magnitudes) so that N:M groups of consecutive rows keep
    more magnitude. Greedy: for each position, the best swap with a position of another group (among up to
    `candidates` random ones) is taken when it increases the kept sum; `sweeps` passes at most."""
    c = a.shape[0]
    perm = np.arange(c)
    if c <= m or sweeps <= 0:
        return perm
    rng = np.random.default_rng(seed)
    groups = c // m
    for _ in range(sweeps):
        improved = False
        for pos in range(c):
            gi, si = divmod(pos, m)
            others = np.flatnonzero(np.arange(c) // m != gi)
            if others.size > candidates:
                others = rng.choice(others, candidates, replace=False)
            cur = a[perm].reshape(groups, m, -1)
            base = _group_score(cur, n, m)
            new_i = np.repeat(cur[gi][None], others.size, axis=0)
            new_i[:, si] = a[perm[others]]
            gj, sj = np.divmod(others, m)
            new_j = cur[gj].copy()
            new_j[np.arange(others.size), sj] = a[perm[pos]]
            gain = _group_score(new_i, n, m) + _group_score(new_j, n, m) - base[gi] - base[gj]
            best = int(np.argmax(gain))
            if gain[best] > 1e-9 * max(float(base.sum()), 1.0):
                other = others[best]
                perm[pos], perm[other] = perm[other], perm[pos]
                improved = True
        if not improved:
            break
    return perm


def permute_channels(
    module: nn.Module, input_shape: tuple[int, ...], layers: dict[str, nn.Module], n: int, m: int, sweeps: int = 4
) -> dict[str, Any]:
    """Reorder the channels of every coupled group read by masked layers (function-preserving).

    Returns {"groups": permuted group count, "skipped": [reasons], "kept_before", "kept_after"}.
    """
    from compress.prune.graph import analyze

    kept_before = kept_magnitude(layers, n, m)
    graph = analyze(module, input_shape)
    reference = copy.deepcopy(module).eval()
    mods = dict(module.named_modules())
    by_group: dict[int, list[int]] = {}
    for si, sc in enumerate(graph.slot_classes):
        valid = sc[sc >= 0]
        if valid.size:
            by_group.setdefault(int(graph.class_group[valid[0]]), []).append(si)
    done, skipped = 0, []
    for gi, slot_ids in sorted(by_group.items()):
        consumers = [si for si in slot_ids if graph.slots[si].role == "in" and graph.slots[si].module in layers]
        if not consumers:
            continue
        group = graph.groups[gi]
        classes = set(group.classes)
        why = None
        if any(graph.class_fixed[c] for c in classes):
            why = f"group {group.name}: some channels are fixed ({'; '.join(group.reasons) or 'network boundary'})"
        for si in slot_ids:
            sc = graph.slot_classes[si]
            if why is None and ((sc < 0).any() or len(set(sc.tolist())) != sc.size or set(sc.tolist()) != classes):
                why = f"group {group.name}: {graph.slots[si].module} reads its channels with repeats or extra entries"
        if why is not None:
            skipped.append(why)
            continue
        ref_order = graph.slot_classes[consumers[0]]
        mats = []
        for si in consumers:
            s = graph.slots[si]
            pos = {int(c): k for k, c in enumerate(graph.slot_classes[si])}
            w = mods[s.module].weight.detach().abs().movedim(s.dim, 0).reshape(len(pos), -1).numpy()
            mats.append(w[[pos[int(c)] for c in ref_order]])
        perm = search_permutation(np.concatenate(mats, axis=1), n, m, sweeps, seed=gi)
        if (perm == np.arange(perm.size)).all():
            continue
        new_order = ref_order[perm]
        for si in slot_ids:
            s = graph.slots[si]
            owner = mods[s.module] if s.module else module
            t = getattr(owner, s.param)
            pos = {int(c): k for k, c in enumerate(graph.slot_classes[si])}
            idx = torch.as_tensor([pos[int(c)] for c in new_order], dtype=torch.long)
            with torch.no_grad():
                t.data = t.data.index_select(s.dim, idx).contiguous()
        done += 1
    x = torch.randn(4, *input_shape, generator=torch.Generator().manual_seed(0))
    was = module.training
    module.eval()
    with torch.no_grad():
        y, yr = module(x), reference(x)
    module.train(was)
    if float((y - yr).abs().max()) > 1e-4 * (float(yr.abs().max()) + 1e-6) + 1e-5:
        module.load_state_dict(reference.state_dict())
        return {"groups": 0, "skipped": ["permutation changed the network's output; reverted"], **_kept(kept_before)}
    return {"groups": done, "skipped": skipped, **_kept(kept_before, kept_magnitude(layers, n, m))}


def _kept(before: float, after: float | None = None) -> dict[str, float]:
    return {"kept_before": round(before, 6), "kept_after": round(before if after is None else after, 6)}


# ------------------------------------------------------------------------------------ fine-tuning
class _SRSTE(nn.Module):
    """weight -> N:M-masked weight in the forward pass, identity gradient (straight through)."""

    def __init__(self, n: int, m: int, axis: int) -> None:
        super().__init__()
        self.n, self.m, self.axis = n, m, axis

    def forward(self, w: torch.Tensor) -> torch.Tensor:
        mask = nm_mask(w, self.n, self.m, self.axis)
        return w + (w * mask - w).detach()


class NMObjective(Objective):
    """Wraps a training objective so N:M masks hold through fine-tuning.

    fixed: gradient hooks zero the pruned entries' gradients and `after_step` re-masks the weights, so
    neither weight decay nor optimizer state can move a pruned weight. srste: see the module docstring.
    """

    def __init__(self, inner: Objective, layers: dict[str, nn.Module], n: int, m: int, mode: str, decay: float):
        self.inner = inner
        self.names = list(layers)
        self.n, self.m, self.mode, self.decay = n, m, mode, decay
        self.masks: dict[str, torch.Tensor] = {k: layer_mask(v, n, m) for k, v in layers.items()}
        self._hooks: list[Any] = []
        self._layers: dict[str, nn.Module] = {}
        self.recalibrate_bn = inner.recalibrate_bn

    def modules(self):
        return self.inner.modules()

    def setup(self, model: nn.Module, device: torch.device) -> None:
        self.inner.setup(model, device)
        mods = dict(model.named_modules())
        self._layers = {k: mods[k] for k in self.names}
        for h in self._hooks:
            h.remove()
        self._hooks = []
        for k, mod in self._layers.items():
            if self.mode == "srste":
                if not parametrize.is_parametrized(mod, "weight"):
                    axis = input_axis(torch_kind(mod), mod.weight.dim())
                    parametrize.register_parametrization(mod, "weight", _SRSTE(self.n, self.m, axis))
                continue
            mask = self.masks[k].to(device)
            self.masks[k] = mask
            with torch.no_grad():
                mod.weight.mul_(mask)
            self._hooks.append(mod.weight.register_hook(lambda g, _m=mask: g * _m))

    def loss(self, model, aux, batch, ctx):
        loss, logs = self.inner.loss(model, aux, batch, ctx)
        if self.mode == "srste" and self.decay > 0:
            reg = loss.new_zeros(())
            for mod in self._layers.values():
                w = mod.parametrizations.weight.original
                axis = input_axis(torch_kind(mod), w.dim())
                pruned = ~nm_mask(w, self.n, self.m, axis)
                reg = reg + (w[pruned] ** 2).sum()
            loss = loss + 0.5 * self.decay * reg
        return loss, logs

    def after_step(self, model: nn.Module, ctx) -> None:
        self.inner.after_step(model, ctx)
        if self.mode == "fixed":
            with torch.no_grad():
                for k, mod in self._layers.items():
                    mod.weight.mul_(self.masks[k])

    def finish(self) -> None:
        """Remove the hooks and fold the masks into plain weights."""
        for h in self._hooks:
            h.remove()
        self._hooks = []
        for mod in self._layers.values():
            if parametrize.is_parametrized(mod, "weight"):
                parametrize.remove_parametrizations(mod, "weight", leave_parametrized=True)

    def state_dict(self):
        return self.inner.state_dict()

    def load_state_dict(self, state):
        self.inner.load_state_dict(state)


def apply_masks(layers: dict[str, nn.Module], n: int, m: int) -> None:
    """One-shot magnitude prune in place."""
    with torch.no_grad():
        for mod in layers.values():
            mod.weight.mul_(layer_mask(mod, n, m))


def prune_nm(model: Model, config: NMConfig, ctx: Context | None = None) -> tuple[Model, dict[str, Any]]:
    """Prune a copy of `model` to N:M as `config` says; returns it and its figures (incl. the layer report)."""
    from compress.train.evaluate import evaluate

    out = model.copy()
    shape = input_shape_for(model, ctx)
    out.input_shape = shape
    n, m = config.n, config.m
    layers, skipped = nm_layers(out.module, m, ignore=config.ignore, min_params=config.min_params)
    metrics: dict[str, Any] = {"pattern": f"{n}:{m}", "mode": config.mode}
    metrics["kept_magnitude"] = kept_magnitude(layers, n, m)
    if config.permute and layers:
        perm = permute_channels(out.module, shape, layers, n, m, config.permute_sweeps)
        metrics["permutation"] = perm
        metrics["kept_magnitude"] = perm["kept_after"]
    apply_masks(layers, n, m)
    data = ctx.data if ctx is not None else None
    if data is not None:
        metrics.update(
            {f"oneshot_{k}": v for k, v in evaluate(out.module, data.val, data.task).items() if k != "samples"}
        )
    ft = train_config(config.finetune, config.finetune_epochs)
    if ft.epochs > 0:
        if data is None:
            from compress.errors import RecipeError

            raise RecipeError("fine-tuning after N:M pruning needs data (--data)")
        teacher = teacher_for(model.module, ctx, config.distill)
        inner: Objective = TaskObjective(data.task)
        if teacher is not None:
            from compress.distill.kd import KDConfig, KDObjective

            inner = KDObjective(
                copy.deepcopy(teacher).eval(),
                data.task,
                KDConfig(temperature=config.distill_temperature, alpha=config.distill_alpha, train=ft),
            )
        objective = NMObjective(inner, layers, n, m, config.mode, config.srste_decay)
        try:
            result = train(out.module, data, ft, objective=objective, checkpoint=ctx.checkpoint("nm"), description="nm")
        finally:
            objective.finish()
        layers = {k: dict(out.module.named_modules())[k] for k in layers}
        if config.mode == "srste":
            apply_masks(layers, n, m)  # already N:M; a no-op safeguard against ties
        metrics.update({f"val_{k}": float(v) for k, v in result.metrics.items() if k != "samples"})
        if config.mode == "srste" and data is not None:
            metrics.update(
                {f"val_{k}": v for k, v in evaluate(out.module, data.val, data.task).items() if k != "samples"}
            )
    report = pattern_report(out.module, f"{n}:{m}")
    total = sum(int(mod.weight.numel()) for mod in layers.values())
    all_w = sum(int(mod.weight.numel()) for _, mod in out.module.named_modules() if torch_kind(mod))
    metrics.update(
        {
            "sparse_layers": len(layers),
            "dense_layers": len(skipped),
            "pattern_holds": all(r["holds"] for r in report["layers"] if r["name"] in layers),
            "kernel_eligible_layers": report["kernel_eligible"],
            "sparse_weight_share": total / max(all_w, 1),
            "weight_sparsity": (total * (1 - n / m)) / max(all_w, 1),
            "ineligible": skipped,
            "sparse_kernels": CPU_NOTE,
        }
    )
    return out, {**metrics, "report": report}


@register_method("prune", "nm", NMConfig, needs_data=False)
def nm(model: Model, config: NMConfig, ctx: Context) -> Result:
    """One-shot N:M magnitude masks along the input channels, then mask-preserving fine-tuning."""
    out, metrics = prune_nm(model, config, ctx)
    report = metrics.pop("report")
    files = write_json(ctx, "nm_report.json", {"config": to_dict(config), "metrics": metrics, "layers": report})
    return Result(model=out, metrics=metrics, files=files)
