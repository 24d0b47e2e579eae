"""Dependency-aware channel pruning: score coupled channel units, remove the weakest, fine-tune.

Importance: L1 / L2 magnitude of every weight slice a unit owns (producer rows and consumer
columns), BatchNorm scale, or first-order Taylor |w * dL/dw| on a few batches (Molchanov et al.,
"Importance Estimation for Neural Network Pruning", CVPR 2019). Allocation: the same ratio in every
coupled group (uniform) or one ranking across groups after normalising each group's scores by their
mean (global). Removal is physical (see `compress.prune.graph`).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from compress.analysis import count_params
from compress.config import to_dict
from compress.errors import RecipeError
from compress.methods import Context, Result, register_method
from compress.models.model import Model
from compress.prune.attention import convert_attention
from compress.prune.common import (
    finetune,
    input_shape_for,
    measure,
    prune_once,
    teacher_for,
    train_config,
    write_json,
)
from compress.prune.select import choose_keep, importance
from compress.train.loop import TrainConfig


@dataclass
class ChannelConfig:
    """Channel pruning.

    Attributes:
        ratio: share of each group's channels to remove (uniform) or of all removable units (global);
            ignored when a target is set.
        target_macs: keep this fraction of the dense MACs (e.g. 0.5), by bisection on the ratio.
        target_params: keep this fraction of the dense parameters.
        target_latency: keep this fraction of the dense model's ONNX Runtime CPU latency (batch 1),
            measured through the onnxruntime backend while bisecting on the ratio (slow: each probe
            exports and times a pruned copy).
        latency_threads: ONNX Runtime intra-op threads for target_latency (0: one per physical core).
        importance: l1, l2 (weight magnitude), bn_scale (|gamma|), taylor (needs data).
        allocation: uniform (same ratio per group) or global (one ranking across groups).
        round_to: kept channel counts are rounded up to a multiple of this (hardware-friendly widths).
        ignore: module-name glob patterns whose channels are left whole (e.g. "features.0.*").
        iterative_steps: prune in this many steps towards the target, fine-tuning after each.
        max_group_ratio: never remove more than this share of one group.
        finetune_epochs: epochs of fine-tuning after each step (overrides finetune.epochs).
        finetune: the shared training loop's settings for fine-tuning.
        distill: fine-tune by distillation from the unpruned model (or from the given teacher): a
            distillation method's name (kd, funmatch, msd, crd, guidance, feature_mse; see
            `compress methods distill`), or None for plain fine-tuning (with a teacher given: kd).
            Methods other than kd train with their own schedule for `finetune_epochs` epochs.
        distill_params: that method's config (the `params:` of a distill step), e.g. {mode: consistent}.
        distill_temperature, distill_alpha: the kd loss settings.
        reconstruct: after each removal and before fine-tuning, re-fit every layer by least squares to
            reproduce the unpruned layer's outputs on calibration images (`compress.prune.reconstruct`;
            needs data, no labels).
        reconstruct_images: calibration images for that fit.
        taylor_batches: batches of the calibration split for the Taylor importance.
        verify: check the pruned model against the masked unpruned one after each removal.
        attention_heads: replace batch-first self-attention nn.MultiheadAttention layers by the equivalent
            `PrunableAttention` so whole heads can be removed (the saved model names that layer).
    """

    ratio: float = 0.5
    target_macs: float | None = None
    target_params: float | None = None
    target_latency: float | None = None
    latency_threads: int = 0
    importance: Literal["l1", "l2", "bn_scale", "taylor"] = "l2"
    allocation: Literal["uniform", "global"] = "uniform"
    round_to: int = 1
    ignore: list[str] = field(default_factory=list)
    iterative_steps: int = 1
    max_group_ratio: float = 0.9
    finetune_epochs: int | None = None
    finetune: TrainConfig = field(default_factory=lambda: TrainConfig(epochs=0))
    distill: str | bool | None = None
    distill_params: dict[str, Any] = field(default_factory=dict)
    distill_temperature: float = 4.0
    distill_alpha: float = 0.9
    taylor_batches: int = 4
    verify: bool = True
    attention_heads: bool = True
    reconstruct: bool = False
    reconstruct_images: int = field(default=256, metadata={"range": (1, 100_000)})

    def __post_init__(self) -> None:
        if isinstance(self.distill, bool):  # distill: true (the form before methods could be named)
            self.distill = "kd" if self.distill else None
        if not 0.0 <= self.ratio < 1.0:
            raise ValueError(f"ratio must be in [0, 1), got {self.ratio}")
        for name in ("target_macs", "target_params"):
            v = getattr(self, name)
            if v is not None and not 0.0 < v <= 1.0:
                raise ValueError(f"{name} is the fraction to keep, in (0, 1]; got {v}")
        if self.target_latency is not None and not 0.0 < self.target_latency <= 1.0:
            raise ValueError(f"target_latency is the fraction of latency to keep, in (0, 1]; got {self.target_latency}")
        if sum(v is not None for v in (self.target_macs, self.target_params, self.target_latency)) > 1:
            raise ValueError("set one of target_macs, target_params and target_latency")
        if self.round_to < 1 or self.iterative_steps < 1:
            raise ValueError("round_to and iterative_steps must be >= 1")
        if not 0.0 < self.max_group_ratio < 1.0:
            raise ValueError("max_group_ratio must be in (0, 1)")


def prune_channels(model: Model, config: ChannelConfig, ctx: Context | None = None) -> tuple[Model, dict]:
    """Prune `model` (a copy) as `config` says; returns the pruned model and its figures."""
    out = model.copy()
    shape = input_shape_for(model, ctx)
    out.input_shape = shape
    converted = convert_attention(out.module) if config.attention_heads else []
    data = ctx.data if ctx is not None else None
    if config.importance == "taylor" and data is None:
        raise RecipeError("importance 'taylor' needs data (--data)")
    ft = train_config(config.finetune, config.finetune_epochs)
    if ft.epochs > 0 and data is None:
        raise RecipeError("fine-tuning after pruning needs data (--data)")
    if config.distill not in (None, "kd"):
        from compress.methods import get_method

        get_method("distill", config.distill)  # an unknown name fails here, before any work
    refit = None
    if config.reconstruct:
        if data is None:
            raise RecipeError("reconstruct after pruning needs data (--data; labels are not needed)")
        refit = refit_on(data, config.reconstruct_images)
    teacher = teacher_for(model.module, ctx, config.distill) if ft.epochs > 0 else None
    latency_probe = None
    if config.target_latency is not None:
        ratio, latency_probe = ratio_for_latency(out, config, shape)
        config = dataclasses.replace(config, ratio=ratio, target_latency=None, iterative_steps=1)
    target = config.target_macs if config.target_macs is not None else config.target_params
    kind = "macs" if config.target_macs is not None else "params"
    dense_macs, dense_params = None, count_params(out.module)  # MACs: counted by the first removal
    steps = []
    cur_macs, cur_params = dense_macs, dense_params
    for step in range(1, config.iterative_steps + 1):
        frac = step / config.iterative_steps
        if target is not None:
            goal = 1.0 - (1.0 - target) * frac  # of the dense model
            cur = cur_macs if kind == "macs" else cur_params
            dense = dense_macs if kind == "macs" else dense_params
            step_target, step_ratio = (goal if step == 1 else min(1.0, goal * dense / max(cur, 1))), None
        else:
            prev = 1.0 - config.ratio * (step - 1) / config.iterative_steps
            step_ratio, step_target = 1.0 - (1.0 - config.ratio * frac) / prev, None

        def score_fn(graph, _data=data):
            return importance(graph, config.importance, data=_data, batches=config.taylor_batches)

        def keep_fn(graph, scores, _r=step_ratio, _t=step_target, _p=cur_params):
            return choose_keep(
                graph,
                scores,
                ratio=_r,
                target=_t,
                target_kind=kind,
                allocation=config.allocation,
                round_to=config.round_to,
                dense_macs=measure(graph.module, shape)[0] if _t is not None and kind == "macs" else 0,
                dense_params=_p,
                max_group_ratio=config.max_group_ratio,
            )

        info = prune_once(
            out.module,
            shape,
            score_fn,
            keep_fn,
            ignore=config.ignore,
            verify=config.verify,
            refit=refit,
            count_macs=True,
        )
        if dense_macs is None:
            dense_macs = info.macs_before
        macs, params = cur_macs, cur_params = info.macs_after, count_params(out.module)
        record = {
            "step": step,
            "removed_units": info.removed_units,
            "macs": macs,
            "params": params,
            "verified": info.verified,
        }
        if "reconstruction" in info.report:
            record["reconstruction"] = info.report["reconstruction"]
        record.update(
            finetune(
                out.module,
                ctx,
                ft,
                teacher=teacher,
                name=f"finetune{step}",
                temperature=config.distill_temperature,
                alpha=config.distill_alpha,
                method=config.distill,
                params=config.distill_params,
                model=out,
            )
        )
        steps.append(record)
    metrics = {
        "macs_before": dense_macs,
        "macs_after": macs,
        "macs_ratio": macs / max(dense_macs, 1),
        "params_before": dense_params,
        "params_after": params,
        "params_ratio": params / max(dense_params, 1),
        "groups_total": info.report["total_groups"],
        "groups_prunable": info.report["prunable_groups"],
        "verified": steps[-1]["verified"],
        "steps": steps,
    }
    metrics.update({k: v for k, v in steps[-1].items() if k.startswith("val_")})
    if converted:
        metrics["attention_converted"] = converted
    if latency_probe is not None:
        metrics["latency_search"] = latency_probe
    metrics["report"] = info.report
    return out, metrics


def refit_on(data, images: int):
    """A `remove_units` refit: layer-wise reconstruction on `images` calibration (then training) images."""
    import torch

    from compress.prune.reconstruct import ReconstructConfig, reconstruct

    pool = [ds for ds in (data.calib, data.train) if ds is not None]
    xs = []
    for ds in pool:
        for i in range(len(ds)):
            if len(xs) >= images:
                break
            xs.append(ds[i][0])
    if not xs:
        raise RecipeError("reconstruct after pruning needs images; the data has none")
    batch = torch.stack(xs)
    cfg = ReconstructConfig(images=len(xs))
    return lambda masked, unpruned: reconstruct(masked, unpruned, batch, cfg)


def _session(model: Model, shape: tuple[int, ...], threads: int, path: Path):
    """Export `model` and load it in the onnxruntime backend; returns a batch-1 runner."""
    import numpy as np

    from compress.backends import get_backend
    from compress.backends.base import BackendOptions
    from compress.export.onnx import ExportConfig, export_onnx

    export_onnx(model, path, ExportConfig(exporter="torchscript", parity_batch=1))
    session = get_backend("onnxruntime").load(path, BackendOptions(threads=threads))
    x = np.random.default_rng(0).random((1, *shape), dtype=np.float32)
    return lambda: session.run(x)


def _latency_ratio(dense, pruned, rounds: int = 15) -> float:
    """Best-case latency of `pruned` over `dense`, timed in alternating calls so load hits both alike
    (the minimum is the figure least disturbed by other processes)."""
    import time

    import numpy as np

    for _ in range(3):
        dense(), pruned()
    td, tp = [], []
    for _ in range(rounds):
        t0 = time.perf_counter()
        dense()
        t1 = time.perf_counter()
        pruned()
        tp.append(time.perf_counter() - t1)
        td.append(t1 - t0)
    return float(np.min(tp) / np.min(td))


def ratio_for_latency(model: Model, config: ChannelConfig, shape: tuple[int, ...]) -> tuple[float, list[dict]]:
    """Bisect the channel ratio until the pruned copy's measured ONNX Runtime latency meets the target."""
    import tempfile

    probes: list[dict] = []
    with tempfile.TemporaryDirectory() as tmp:
        dense = _session(model, shape, config.latency_threads, Path(tmp) / "dense.onnx")
        lo, hi = 0.0, config.max_group_ratio
        best = hi
        for i in range(6):
            mid = (lo + hi) / 2
            probe = dataclasses.replace(
                config, ratio=mid, target_latency=None, iterative_steps=1, finetune_epochs=0, verify=False
            )
            pruned, _ = prune_channels(model, probe, None)
            frac = _latency_ratio(dense, _session(pruned, shape, config.latency_threads, Path(tmp) / f"p{i}.onnx"))
            probes.append({"ratio": round(mid, 4), "latency_ratio": round(frac, 4)})
            if frac <= config.target_latency:
                hi, best = mid, mid
            else:
                lo = mid
    return best, probes


@register_method("prune", "channel", ChannelConfig, needs_data=False)
def channel(model: Model, config: ChannelConfig, ctx: Context) -> Result:
    """Remove the least important coupled channels, then fine-tune (optionally with distillation)."""
    out, metrics = prune_channels(model, config, ctx)
    report = metrics.pop("report")
    files = write_json(ctx, "prune_report.json", {"config": to_dict(config), "metrics": metrics, "graph": report})
    return Result(model=out, metrics=metrics, files=files)
