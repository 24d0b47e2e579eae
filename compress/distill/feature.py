"""Feature regression (FitNets hints: Romero et al., "FitNets: Hints for Thin Deep Nets", ICLR 2015):
MSE between depth-paired student and teacher feature maps, through a trainable 1x1 projection
where widths differ. The plain-feature baseline for the contrastive methods."""

from __future__ import annotations

from dataclasses import dataclass, field

import torch.nn.functional as F
from torch import nn

from compress.distill.common import DistillObjective, prepare, run
from compress.distill.taps import pair_layers, projection, resolve_layers, shape_of
from compress.methods import Context, Result, register_method
from compress.models.model import Model
from compress.train.loop import TrainConfig


@dataclass
class FeatureMSEConfig:
    """Feature MSE.

    Attributes:
        teacher_layers / student_layers: "auto", "a,b" or a list of module names (paired by depth).
        weight: weight of the summed feature MSE terms.
        task_weight: weight of the task loss.
        train: the training loop's settings.
    """

    teacher_layers: str | list[str] = "auto"
    student_layers: str | list[str] = "auto"
    weight: float = 1.0
    task_weight: float = 1.0
    train: TrainConfig = field(default_factory=TrainConfig)


def match_size(s, t):
    """Resize a student map to the teacher map's spatial size (bilinear), if they differ."""
    if s.dim() == 4 and s.shape[2:] != t.shape[2:]:
        return F.interpolate(s, size=t.shape[2:], mode="bilinear", align_corners=False)
    return s


def projections(student: nn.Module, teacher: nn.Module, input_shape, pairs) -> dict[str, nn.Module]:
    """A trainable projection per pair whose channel counts differ (keyed "p0", "p1", ...)."""
    ss = shape_of(student, input_shape, [s for _, s in pairs])
    ts = shape_of(teacher, input_shape, [g for g, _ in pairs])
    heads = {}
    for i, (g, s) in enumerate(pairs):
        if ss[s][1] != ts[g][1]:
            heads[f"p{i}"] = projection(ss[s][1], ts[g][1], len(ss[s]))
    return heads


class FeatureMSEObjective(DistillObjective):
    def __init__(self, teacher, task, pairs, heads: dict[str, nn.Module], config: FeatureMSEConfig) -> None:
        super().__init__(teacher, task, [g for g, _ in pairs], [s for _, s in pairs])
        self.pairs, self.heads, self.config = pairs, heads, config

    def modules(self):
        return dict(self.heads)

    def loss(self, model, aux, batch, ctx):
        x, y = batch
        out = model(x)
        self.teach(x)
        feat = 0.0
        for i, (g, s) in enumerate(self.pairs):
            fs, ft = self.student_taps[s], self.teacher_taps[g]
            if f"p{i}" in aux:
                fs = aux[f"p{i}"](fs)
            feat = feat + F.mse_loss(match_size(fs, ft), ft)
        task = self.task.loss(out, y)
        return self.config.task_weight * task + self.config.weight * feat, {"feat": float(feat.detach())}


@register_method("distill", "feature_mse", FeatureMSEConfig, needs_teacher=True)
def feature_mse(model: Model, config: FeatureMSEConfig, ctx: Context) -> Result:
    """Train with the task loss plus MSE between paired feature maps (projected where widths differ)."""
    out, teacher = prepare(model, ctx, "feature_mse")
    shape = ctx.data.input_shape
    pairs = pair_layers(
        resolve_layers(teacher, config.teacher_layers, shape, role="teacher"),
        resolve_layers(out.module, config.student_layers, shape, role="student"),
    )
    heads = projections(out.module, teacher, shape, pairs)
    objective = FeatureMSEObjective(teacher, ctx.data.task, pairs, heads, config)
    return run(out, objective, ctx, config.train, "feature_mse", {"pairs": [list(p) for p in pairs]})
