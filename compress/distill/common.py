"""What every distillation method shares: checks, frozen teachers, a base objective, the run, and the
helpers for methods that need sample indices (memory banks, cached teacher outputs) or rows gathered
from every DDP process (negative queues)."""

from __future__ import annotations

import copy
import dataclasses
from typing import Any

import torch
import torch.distributed as dist
from torch import nn
from torch.utils.data import Dataset

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
    return out, freeze(ctx.teacher.module)


def freeze(module: nn.Module) -> nn.Module:
    """A frozen, eval-mode copy of a teacher network."""
    teacher = copy.deepcopy(module).eval()
    teacher.requires_grad_(False)
    return teacher


def extra_teachers(specs, ctx: Context, method: str) -> list[nn.Module]:
    """Frozen copies of the additional teachers a config names (model specs: run dirs, checkpoints)."""
    from compress.models.sources import load_model

    nets = []
    for spec in specs:
        m = load_model(spec, input_shape=tuple(ctx.data.input_shape))
        if m.task != ctx.data.task:
            raise DataError(
                f"distill {method}: the teacher {spec} is a {m.task} model but the data is for {ctx.data.task}"
            )
        nets.append(freeze(m.module))
    return nets


class IndexedDataset(Dataset):
    """A dataset whose samples carry their index last: (x, y, i). For memory banks and caches."""

    def __init__(self, base: Dataset) -> None:
        self.base = base

    def __len__(self) -> int:
        return len(self.base)

    def __getitem__(self, i: int):
        return (*self.base[i], i)


def with_indices(ctx: Context) -> Context:
    """The context with its training split indexed (val and calibration splits unchanged)."""
    data = dataclasses.replace(ctx.data, train=IndexedDataset(ctx.data.train))
    return dataclasses.replace(ctx, data=data)


@torch.no_grad()
def gather_rows(t: torch.Tensor) -> torch.Tensor:
    """Under DDP, every process's rows concatenated in rank order (the same on every rank); else `t`.

    Every rank must call it with the same shape (DistributedSampler pads ranks to equal length).
    """
    if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() == 1:
        return t
    parts = [torch.empty_like(t) for _ in range(dist.get_world_size())]
    dist.all_gather(parts, t.contiguous())
    return torch.cat(parts)


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
        extra_teachers: further frozen teachers (logits only); `teach_all` runs them all.
    """

    def __init__(self, teacher: nn.Module, task: str, teacher_layers=(), student_layers=(), extra_teachers=()) -> None:
        self.teacher = teacher
        self.extra_teachers = list(extra_teachers)
        self.task = get_task(task)
        self.teacher_layers = list(teacher_layers)
        self.student_layers = list(student_layers)
        self.teacher_taps: FeatureTaps | None = None
        self.student_taps: FeatureTaps | None = None

    def setup(self, model: nn.Module, device: torch.device) -> None:
        for t in (self.teacher, *self.extra_teachers):
            t.to(device).eval()
        if self.teacher_layers:
            self.teacher_taps = FeatureTaps(self.teacher, self.teacher_layers)
        if self.student_layers:
            self.student_taps = FeatureTaps(model, self.student_layers)

    @torch.no_grad()
    def teach(self, x: torch.Tensor) -> torch.Tensor:
        """The teacher's output (its taps filled too), without gradients, in eval mode."""
        self.teacher.eval()
        return self.teacher(x)

    @torch.no_grad()
    def teach_all(self, x: torch.Tensor) -> list[torch.Tensor]:
        """Every teacher's output on `x` (the main teacher first), in eval mode."""
        for t in self.extra_teachers:
            t.eval()
        return [self.teach(x), *(t(x) for t in self.extra_teachers)]

    def close(self) -> None:
        """Remove the hooks and give the teacher back to the CPU."""
        for taps in (self.teacher_taps, self.student_taps):
            if taps is not None:
                taps.remove()
        self.teacher_taps = self.student_taps = None
        for t in (self.teacher, *self.extra_teachers):
            t.to("cpu")


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
