"""What every distillation method shares: checks, a frozen teacher, a base objective, the run."""

from __future__ import annotations

import copy
from typing import Any

import torch
from torch import nn

from compress.distill.taps import FeatureTaps
from compress.errors import DataError, ModelError
from compress.methods import Context, Result
from compress.models.model import Model
from compress.tasks import get_task
from compress.train.loop import Objective, TrainConfig, train


def prepare(student: Model, ctx: Context, method: str) -> tuple[Model, nn.Module]:
    """A copy of the student to train and a frozen, eval-mode copy of the teacher's network.

    The inputs are never changed in place. Both networks must solve the data's task.
    """
    data = ctx.data
    for role, m in (("student", student), ("teacher", ctx.teacher)):
        if m.task != data.task:
            raise DataError(
                f"distill {method}: the {role} {m.name} is a {m.task} model but the data is for {data.task}"
            )
    out = student.copy()
    out.input_shape = tuple(data.input_shape)
    teacher = copy.deepcopy(ctx.teacher.module).eval()
    teacher.requires_grad_(False)
    return out, teacher


def check_logits(student: nn.Module, teacher: nn.Module, input_shape) -> None:
    """Teacher and student must output the same number of classes."""
    with torch.no_grad():
        x = torch.zeros(2, *input_shape)
        shapes = []
        for m in (student, teacher):
            was = m.training
            m.eval()
            try:
                shapes.append(tuple(m(x).shape))
            finally:
                m.train(was)
    if shapes[0] != shapes[1]:
        raise ModelError(
            f"student outputs {shapes[0][1:]} but the teacher outputs {shapes[1][1:]}; "
            "logit distillation needs the same classes"
        )


class DistillObjective(Objective):
    """Base objective: holds the frozen teacher (never wrapped by DDP, never trained) and the taps.

    Args:
        teacher: the frozen teacher network.
        task: the data's task name (for the task loss).
        teacher_layers / student_layers: names to tap (empty: logits only).
    """

    def __init__(self, teacher: nn.Module, task: str, teacher_layers=(), student_layers=()) -> None:
        self.teacher = teacher
        self.task = get_task(task)
        self.teacher_layers = list(teacher_layers)
        self.student_layers = list(student_layers)
        self.teacher_taps: FeatureTaps | None = None
        self.student_taps: FeatureTaps | None = None

    def setup(self, model: nn.Module, device: torch.device) -> None:
        self.teacher.to(device).eval()
        if self.teacher_layers:
            self.teacher_taps = FeatureTaps(self.teacher, self.teacher_layers)
        if self.student_layers:
            self.student_taps = FeatureTaps(model, self.student_layers)

    @torch.no_grad()
    def teach(self, x: torch.Tensor) -> torch.Tensor:
        """The teacher's output (its taps filled too), without gradients, in eval mode."""
        self.teacher.eval()
        return self.teacher(x)

    def close(self) -> None:
        """Remove the hooks and give the teacher back to the CPU."""
        for taps in (self.teacher_taps, self.student_taps):
            if taps is not None:
                taps.remove()
        self.teacher_taps = self.student_taps = None
        self.teacher.to("cpu")


def run(
    out: Model,
    objective: DistillObjective,
    ctx: Context,
    train_config: TrainConfig,
    name: str,
    extra: dict[str, Any] | None = None,
) -> Result:
    """Train `out.module` in place with `objective` (resumable through the context's workdir)."""
    try:
        result = train(
            out.module,
            ctx.data,
            train_config,
            objective=objective,
            checkpoint=ctx.checkpoint(f"distill_{name}"),
            description=f"distill {name}",
        )
    finally:
        objective.close()
    metrics = {**result.metrics, "epochs": train_config.epochs, "steps": result.steps}
    if result.history:
        metrics["final_loss"] = result.history[-1]["loss"]
    return Result(model=out, metrics={**metrics, **(extra or {})})
