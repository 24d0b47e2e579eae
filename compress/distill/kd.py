"""Classic logit distillation (Hinton, Vinyals and Dean, "Distilling the Knowledge in a Neural
Network", 2015): the baseline every other method is compared with. With several teachers
(`extra_teachers`) the KD term is the sum of one KL term per teacher."""

from __future__ import annotations

from dataclasses import dataclass, field

from compress.distill.common import DistillObjective, check_logits, extra_teachers, prepare, run
from compress.distill.losses import kd_loss
from compress.errors import RecipeError
from compress.methods import Context, Result, register_method
from compress.models.model import Model
from compress.train.loop import TrainConfig


@dataclass
class KDConfig:
    """Logit KD.

    Attributes:
        temperature: softens both distributions; the KL term is scaled by T^2.
        alpha: weight of the KD term; the task loss gets 1 - alpha.
        extra_teachers: further teachers (run dirs or checkpoints); their KL terms are added.
        train: optimizer, schedule, epochs (the shared training loop's settings).
    """

    temperature: float = 4.0
    alpha: float = 0.9
    extra_teachers: list[str] = field(default_factory=list)
    train: TrainConfig = field(default_factory=TrainConfig)

    def __post_init__(self) -> None:
        if self.temperature <= 0 or not 0.0 <= self.alpha <= 1.0:
            raise ValueError("temperature must be > 0 and alpha in [0, 1]")


class KDObjective(DistillObjective):
    def __init__(self, teacher, task: str, config: KDConfig, extra=()) -> None:
        super().__init__(teacher, task, extra_teachers=extra)
        self.config = config

    def loss(self, model, aux, batch, ctx):
        x, y = batch
        zs = model(x)
        kd = sum(kd_loss(zs, zt, self.config.temperature) for zt in self.teach_all(x))
        task = self.task.loss(zs, y)
        a = self.config.alpha
        return a * kd + (1 - a) * task, {"kd": float(kd.detach()), "task": float(task.detach())}


@register_method("distill", "kd", KDConfig, needs_teacher=True)
def kd(model: Model, config: KDConfig, ctx: Context) -> Result:
    """Train the student on alpha * T^2 KL(teacher || student) + (1 - alpha) * task loss."""
    out, teacher = prepare(model, ctx, "kd")
    if ctx.data.task != "classification":
        raise RecipeError("distill kd matches class logits; for a dense task use pcd or feature_mse")
    extra = extra_teachers(config.extra_teachers, ctx, "kd")
    for t in (teacher, *extra):
        check_logits(out.module, t, ctx.data.input_shape)
    objective = KDObjective(teacher, ctx.data.task, config, extra)
    return run(out, objective, ctx, config.train, "kd", {"teachers": 1 + len(extra)})
