"""Which channels to remove: importance scores per removable unit, and allocation across groups.

A unit is a class of coupled channels from `DependencyGraph` (one channel of a residual stream across
all its layers, one block of a grouped conv). Scores are aggregated over every parameter slot the
unit owns, each slot normalised by its mean so that large and small layers weigh alike.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import torch

from compress.errors import DataError, RecipeError
from compress.prune.graph import DependencyGraph

IMPORTANCES = ("l1", "l2", "bn_scale", "taylor")


def _slot_tensor(graph: DependencyGraph, slot) -> torch.Tensor:
    owner = graph.modules[slot.module] if slot.module else graph.module
    return getattr(owner, slot.param)


def _per_index(t: torch.Tensor, dim: int, kind: str) -> np.ndarray:
    # in numpy: a few small reductions per slot, where each torch op would pay for its thread pool
    a = t.detach().cpu().float().numpy().astype(np.float64)
    other = tuple(d for d in range(a.ndim) if d != dim % a.ndim)
    if kind == "l1":
        return np.abs(a).sum(axis=other)
    if kind == "taylor":
        return np.abs(a.sum(axis=other))
    return np.sqrt(np.square(a).sum(axis=other))


def _accumulate(
    graph: DependencyGraph,
    kind: str,
    roles: tuple[str, ...],
    params: tuple[str, ...] | None,
    tensors: dict[int, torch.Tensor] | None = None,
    normalise: bool = True,
) -> tuple[np.ndarray, np.ndarray]:
    score = np.zeros(graph.num_classes)
    count = np.zeros(graph.num_classes)
    for i, (slot, sc) in enumerate(zip(graph.slots, graph.slot_classes, strict=True)):
        if slot.role not in roles or (params is not None and slot.param not in params):
            continue
        t = tensors[i] if tensors is not None else _slot_tensor(graph, slot)
        if t is None:
            continue
        vals = _per_index(t, slot.dim, kind)
        if normalise:
            mean = vals.mean()
            vals = vals / mean if mean > 0 else vals
        valid = sc >= 0
        np.add.at(score, sc[valid], vals[valid])
        np.add.at(count, sc[valid], 1.0)
    return score, count


def importance(
    graph: DependencyGraph, kind: str, *, data: Any = None, batches: int = 4, batch_size: int = 32
) -> np.ndarray:
    """A score per unit (higher: more important)."""
    if kind not in IMPORTANCES:
        raise RecipeError(f"unknown importance '{kind}'; available: {', '.join(IMPORTANCES)}")
    if kind in ("l1", "l2"):
        score, count = _accumulate(graph, kind, ("out", "in"), ("weight",))
    elif kind == "bn_scale":
        bn = {name for name, m in graph.modules.items() if isinstance(m, torch.nn.modules.batchnorm._BatchNorm)}
        score = np.zeros(graph.num_classes)
        count = np.zeros(graph.num_classes)
        for slot, sc in zip(graph.slots, graph.slot_classes, strict=True):
            if slot.module in bn and slot.param == "weight":
                vals = _slot_tensor(graph, slot).detach().abs().cpu().numpy().astype(np.float64)
                valid = sc >= 0
                np.add.at(score, sc[valid], vals[valid])
                np.add.at(count, sc[valid], 1.0)
        fallback, fcount = _accumulate(graph, "l2", ("out", "in"), ("weight",))
        missing = count == 0
        score[missing], count[missing] = fallback[missing], fcount[missing]
    else:
        score, count = _taylor(graph, data, batches, batch_size)
    return np.where(count > 0, score / np.maximum(count, 1), 0.0)


def _taylor(graph: DependencyGraph, data: Any, batches: int, batch_size: int) -> tuple[np.ndarray, np.ndarray]:
    """First-order Taylor |sum(w * dL/dw)| over each unit's slices (Molchanov et al., CVPR 2019)."""
    if data is None:
        raise DataError("importance 'taylor' needs data (--data)")
    from torch.utils.data import DataLoader

    from compress.tasks import get_task

    task = get_task(data.task)
    module = graph.module
    was = module.training
    module.eval()
    module.zero_grad(set_to_none=True)
    loader = DataLoader(data.calib if len(data.calib) else data.train, batch_size=batch_size, shuffle=False)
    for i, (x, y) in enumerate(loader):
        if i >= batches:
            break
        task.loss(module(x), y).backward()
    products: dict[int, torch.Tensor] = {}
    for i, slot in enumerate(graph.slots):
        t = _slot_tensor(graph, slot)
        if isinstance(t, torch.nn.Parameter) and t.grad is not None:
            products[i] = t.detach() * t.grad.detach()
        else:
            products[i] = None
    module.zero_grad(set_to_none=True)
    module.train(was)
    return _accumulate(graph, "taylor", ("out", "in", "norm", "param"), None, products, normalise=False)


def _group_normalised(graph: DependencyGraph, score: np.ndarray) -> np.ndarray:
    out = score.copy()
    for g in graph.groups:
        if g.prunable:
            m = score[g.prunable].mean()
            if m > 0:
                out[g.prunable] = score[g.prunable] / m
    return out


def _rounded_keep(graph: DependencyGraph, group, n_remove: int, round_to: int) -> int:
    """How many units of `group` to remove so that the kept channels are a multiple of `round_to`."""
    total = len(group.classes)
    n_remove = max(0, min(n_remove, len(group.prunable), total - 1))
    if round_to > 1 and n_remove > 0:
        per_unit = max(1, round(group.channels / total))
        step = max(1, round_to // per_unit) if round_to % per_unit == 0 else round_to
        keep = total - n_remove
        keep = min(total, int(math.ceil(keep / step) * step))
        n_remove = max(0, min(total - keep, len(group.prunable)))
    return n_remove


def keep_uniform(graph: DependencyGraph, score: np.ndarray, ratio: float, round_to: int = 1) -> np.ndarray:
    """Remove the `ratio` least important units of every prunable group."""
    keep = np.ones(graph.num_classes, dtype=bool)
    for g in graph.groups:
        if not g.prunable:
            continue
        n = _rounded_keep(graph, g, int(round(len(g.classes) * ratio)), round_to)
        if n:
            order = np.asarray(g.prunable)[np.argsort(score[g.prunable], kind="stable")]
            keep[order[:n]] = False
    return graph.repair(keep, score)


def _global_order(graph: DependencyGraph, score: np.ndarray, max_group_ratio: float) -> np.ndarray:
    """Prunable units from least to most important (group-normalised), each group capped."""
    norm = _group_normalised(graph, score)
    allowed = []
    for g in graph.groups:
        if not g.prunable:
            continue
        cap = min(len(g.prunable), int(len(g.classes) * max_group_ratio), len(g.classes) - 1)
        allowed.extend(np.asarray(g.prunable)[np.argsort(norm[g.prunable], kind="stable")][:cap].tolist())
    allowed = np.asarray(allowed, dtype=np.int64)
    return allowed[np.argsort(norm[allowed], kind="stable")]


def keep_global(
    graph: DependencyGraph, score: np.ndarray, n_remove: int, order: np.ndarray, round_to: int = 1
) -> np.ndarray:
    keep = np.ones(graph.num_classes, dtype=bool)
    keep[order[:n_remove]] = False
    if round_to > 1:
        for g in graph.groups:
            removed = [c for c in g.prunable if not keep[c]]
            n = _rounded_keep(graph, g, len(removed), round_to)
            if n < len(removed):  # give back the best of the removed units
                removed = sorted(removed, key=lambda c: score[c])
                keep[removed[n:]] = True
    return graph.repair(keep, score)


def choose_keep(
    graph: DependencyGraph,
    score: np.ndarray,
    *,
    ratio: float | None,
    target: float | None,
    target_kind: str,
    allocation: str,
    round_to: int,
    dense_macs: int,
    dense_params: int,
    max_group_ratio: float = 0.9,
) -> np.ndarray:
    """The units to keep, by channel `ratio` or to reach `target` x dense MACs / parameters."""
    if allocation not in ("uniform", "global"):
        raise RecipeError(f"unknown allocation '{allocation}'; available: uniform, global")
    order = _global_order(graph, score, max_group_ratio) if allocation == "global" else None

    def at(x: float) -> np.ndarray:
        if allocation == "uniform":
            return keep_uniform(graph, score, x, round_to)
        return keep_global(graph, score, int(round(x * len(order))), order, round_to)

    if target is None:
        return at(float(ratio if ratio is not None else 0.5))

    def cost(keep: np.ndarray) -> float:
        macs, params = graph.estimate(keep, dense_macs, dense_params)
        return (macs / max(dense_macs, 1)) if target_kind == "macs" else (params / max(dense_params, 1))

    lo, hi = 0.0, max_group_ratio if allocation == "uniform" else 1.0
    best = at(hi)
    if cost(best) > target:
        return best  # the closest we can get; the caller reports the reached figure
    for _ in range(18):
        mid = (lo + hi) / 2
        keep = at(mid)
        if cost(keep) <= target:
            hi, best = mid, keep
        else:
            lo = mid
    return best
