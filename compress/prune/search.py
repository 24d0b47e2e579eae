"""Pruning-space search (He et al., "Network Pruning Spaces", arXiv 2304.09453): sample per-stage width
configurations at a MACs budget, fine-tune each briefly, keep the best.

A stage is the set of coupled channel groups whose first layer works at the same output resolution
(same spatial size or token count), i.e. the network's stages. Each sample draws a removal weight
u_s ~ U(0, 1) per stage; the removal ratio of stage s is min(alpha * u_s, max_group_ratio), with one
alpha per sample found by bisection so that the pruned model meets the MACs budget. Within a group the
least important channels (magnitude) go. Every sample (widths, MACs, parameters, accuracy) is recorded.
The paper's FLOPs-to-parameter "bucket" refinement is not implemented (its definition is unknown);
samples are ranked by validation accuracy after the short fine-tune.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np

from compress.config import to_dict
from compress.errors import RecipeError
from compress.methods import Context, Result, register_method
from compress.models.model import Model
from compress.prune.common import finetune, input_shape_for, measure, remove_units, teacher_for, write_json
from compress.prune.graph import DependencyGraph, analyze
from compress.prune.select import _rounded_keep, importance
from compress.train.evaluate import evaluate
from compress.train.loop import TrainConfig


@dataclass
class SearchConfig:
    """Pruning-space search.

    Attributes:
        target_macs: every sample keeps at most this fraction of the dense MACs.
        samples: width configurations to try.
        sample_epochs: fine-tuning epochs of each sample.
        final_epochs: further fine-tuning of the best sample (0: none).
        finetune: the shared training loop's settings (its epochs are replaced by the two above).
        importance: l1, l2 or bn_scale, to pick channels inside a group.
        round_to: kept channel counts rounded up to a multiple of this.
        max_group_ratio: never remove more than this share of one group.
        ignore: module-name glob patterns left whole.
        distill: fine-tune with logit distillation from the unpruned model.
        seed: drives the sampled configurations.
    """

    target_macs: float = 0.5
    samples: int = 8
    sample_epochs: int = 1
    final_epochs: int = 0
    finetune: TrainConfig = field(default_factory=TrainConfig)
    importance: Literal["l1", "l2", "bn_scale"] = "l2"
    round_to: int = 1
    max_group_ratio: float = 0.9
    ignore: list[str] = field(default_factory=list)
    distill: bool = False
    distill_temperature: float = 4.0
    distill_alpha: float = 0.9
    seed: int = 0

    def __post_init__(self) -> None:
        if not 0.0 < self.target_macs <= 1.0:
            raise ValueError(f"target_macs is the fraction of MACs to keep, in (0, 1]; got {self.target_macs}")
        if self.samples < 1 or self.sample_epochs < 0 or self.final_epochs < 0:
            raise ValueError("samples must be >= 1 and epochs >= 0")


def stages(graph: DependencyGraph) -> dict[int, list[int]]:
    """Prunable groups by the output resolution of their first producer layer (largest first)."""
    positions = {layer.module: layer.positions for layer in graph.layers}
    out: dict[int, list[int]] = {}
    for g in graph.groups:
        if g.prunable:
            pos = next((positions[m] for m in g.modules if m in positions), 1)
            out.setdefault(pos, []).append(g.index)
    return dict(sorted(out.items(), reverse=True))


def keep_for(graph: DependencyGraph, score: np.ndarray, ratios: dict[int, float], round_to: int) -> np.ndarray:
    """Remove `ratios[group]` of each group's units, least important first."""
    keep = np.ones(graph.num_classes, dtype=bool)
    for g in graph.groups:
        r = ratios.get(g.index, 0.0)
        n = _rounded_keep(graph, g, int(round(len(g.classes) * r)), round_to)
        if n:
            order = np.asarray(g.prunable)[np.argsort(score[g.prunable], kind="stable")]
            keep[order[:n]] = False
    return graph.repair(keep, score)


def sample_ratios(
    graph: DependencyGraph,
    score: np.ndarray,
    stage_map: dict[int, list[int]],
    u: np.ndarray,
    target: float,
    dense_macs: int,
    config: SearchConfig,
) -> tuple[dict[int, float], np.ndarray, float]:
    """Scale the stage weights `u` so the pruned model meets the MACs budget (bisection on alpha)."""
    groups = list(stage_map.values())

    def at(alpha: float) -> tuple[dict[int, float], np.ndarray, float]:
        ratios = {gi: min(alpha * u[s], config.max_group_ratio) for s, gs in enumerate(groups) for gi in gs}
        keep = keep_for(graph, score, ratios, config.round_to)
        return ratios, keep, graph.estimate(keep, dense_macs, 0)[0] / max(dense_macs, 1)

    lo, hi = 0.0, config.max_group_ratio / max(float(u.min()), 1e-3)
    best = at(hi)
    for _ in range(16):
        mid = (lo + hi) / 2
        cur = at(mid)
        if cur[2] <= target:
            hi, best = mid, cur
        else:
            lo = mid
    return best


@register_method("prune", "search", SearchConfig, needs_data=True)
def search(model: Model, config: SearchConfig, ctx: Context) -> Result:
    """Try `samples` per-stage width configurations at the MACs budget; return the best one."""
    if ctx.data is None:
        raise RecipeError("prune method 'search' fine-tunes every sample and needs data (--data)")
    shape = input_shape_for(model, ctx)
    base = model.copy()
    base.input_shape = shape
    dense_macs, dense_params = measure(base.module, shape)
    probe = copy.deepcopy(base.module)
    graph = analyze(probe, shape, ignore=config.ignore)
    stage_map = stages(graph)
    if not stage_map:
        raise RecipeError(f"{model.name}: no channel can be removed safely (see `compress info --prunable`)")
    score = importance(graph, config.importance)
    teacher = teacher_for(model.module, ctx, config.distill)
    rng = np.random.default_rng(config.seed)
    sample_cfg = copy.deepcopy(config.finetune)
    sample_cfg.epochs = config.sample_epochs
    records: list[dict[str, Any]] = []
    best: tuple[float, Model | None] = (-np.inf, None)
    primary = None
    for i in range(config.samples):
        u = rng.uniform(0.05, 1.0, size=len(stage_map))
        ratios, keep, _ = sample_ratios(graph, score, stage_map, u, config.target_macs, dense_macs, config)
        cand = base.copy()
        g = analyze(cand.module, shape, ignore=config.ignore)  # same structure: same unit indices
        if g.num_classes != graph.num_classes:
            raise RecipeError(f"{model.name}: the dependency analysis is not deterministic; cannot search")
        remove_units(g, keep, score, shape, verify=False)
        macs, params = measure(cand.module, shape)
        metrics = finetune(
            cand.module,
            ctx,
            sample_cfg,
            teacher=teacher,
            name=f"sample{i}",
            temperature=config.distill_temperature,
            alpha=config.distill_alpha,
        )
        if not metrics:
            metrics = {
                f"val_{k}": v for k, v in evaluate(cand.module, ctx.data.val, ctx.data.task).items() if k != "samples"
            }
        primary = primary or ("val_accuracy" if "val_accuracy" in metrics else "val_psnr")
        widths = {gr.name: int(sum(keep[c] for c in gr.classes)) for gr in graph.groups if gr.prunable}
        stage_ratios = {str(pos): round(float(ratios[gs[0]]), 4) for pos, gs in stage_map.items()}
        record = {
            "sample": i,
            "stage_removal": stage_ratios,
            "widths": widths,
            "macs": macs,
            "params": params,
            "macs_ratio": macs / max(dense_macs, 1),
            "params_ratio": params / max(dense_params, 1),
            **metrics,
        }
        records.append(record)
        value = metrics.get(primary, -np.inf)
        if value > best[0]:
            best = (value, cand)
    winner = best[1]
    best_record = max(records, key=lambda r: r.get(primary, -np.inf))
    final = copy.deepcopy(config.finetune)
    final.epochs = config.final_epochs
    final_metrics = finetune(
        winner.module,
        ctx,
        final,
        teacher=teacher,
        name="final",
        temperature=config.distill_temperature,
        alpha=config.distill_alpha,
    )
    metrics = {
        "macs_before": dense_macs,
        "macs_after": best_record["macs"],
        "macs_ratio": best_record["macs_ratio"],
        "params_before": dense_params,
        "params_after": best_record["params"],
        "params_ratio": best_record["params_ratio"],
        "best_sample": best_record["sample"],
        "stages": {str(k): len(v) for k, v in stage_map.items()},
        "samples": [{k: v for k, v in r.items() if k != "widths"} for r in records],
    }
    metrics.update({k: v for k, v in best_record.items() if k.startswith("val_")})
    metrics.update(final_metrics)
    files = write_json(ctx, "search_samples.json", {"config": to_dict(config), "samples": records})
    return Result(model=winner, metrics=metrics, files=files)
