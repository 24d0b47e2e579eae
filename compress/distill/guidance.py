"""Guidance by representational alignment ("Training the Untrainable: Introducing Inductive Bias via
Representational Alignment", Subramaniam et al., 2024): the student's layers are pulled towards a
frozen guide's with 1 - linear CKA, which needs no projection when widths differ.

L = task loss + alpha * sum over pairs (1 - CKA(student layer, guide layer)); guide layer i maps to
student layer round(i * (Ls - 1) / (Lg - 1)) (`taps.pair_layers`).
"""

from __future__ import annotations

from dataclasses import dataclass, field

from compress.distill.common import DistillObjective, prepare, run
from compress.distill.losses import linear_cka
from compress.distill.taps import pair_layers, resolve_layers
from compress.methods import Context, Result, register_method
from compress.models.model import Model
from compress.train.loop import TrainConfig


@dataclass
class GuidanceConfig:
    """CKA guidance.

    Attributes:
        teacher_layers: guide layers: "auto" (stage outputs), "a,b" or a list of module names.
        student_layers: target layers, same forms.
        alpha: weight of the summed (1 - CKA) terms.
        task_weight: weight of the task loss.
        train: the training loop's settings.
    """

    teacher_layers: str | list[str] = "auto"
    student_layers: str | list[str] = "auto"
    alpha: float = 1.0
    task_weight: float = 1.0
    train: TrainConfig = field(default_factory=TrainConfig)


class GuidanceObjective(DistillObjective):
    def __init__(self, teacher, task, pairs: list[tuple[str, str]], config: GuidanceConfig) -> None:
        super().__init__(teacher, task, sorted({g for g, _ in pairs}), sorted({s for _, s in pairs}))
        self.pairs = pairs
        self.config = config

    def loss(self, model, aux, batch, ctx):
        x, y = batch
        out = model(x)
        self.teach(x)
        cka = sum(1 - linear_cka(self.student_taps[s], self.teacher_taps[g]) for g, s in self.pairs)
        task = self.task.loss(out, y)
        return self.config.task_weight * task + self.config.alpha * cka, {"cka_loss": float(cka.detach())}


@register_method("distill", "guidance", GuidanceConfig, needs_teacher=True)
def guidance(model: Model, config: GuidanceConfig, ctx: Context) -> Result:
    """Train with the task loss plus 1 - linear CKA between depth-paired layers of a frozen guide."""
    out, teacher = prepare(model, ctx, "guidance")
    shape = ctx.data.input_shape
    guide = resolve_layers(teacher, config.teacher_layers, shape, role="teacher")
    target = resolve_layers(out.module, config.student_layers, shape, role="student")
    pairs = pair_layers(guide, target)
    objective = GuidanceObjective(teacher, ctx.data.task, pairs, config)
    return run(out, objective, ctx, config.train, "guidance", {"pairs": [list(p) for p in pairs]})
