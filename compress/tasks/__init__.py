"""Tasks: what a model is trained on and measured by. A task is a small plug-in.

A task gives the training loss and a metric accumulator that works on torch outputs and on the
numpy outputs of a deployed ONNX model alike. Adding a task = one module registering a `Task`.
"""

from __future__ import annotations

from compress.errors import DataError
from compress.registry import Registry
from compress.tasks.base import Metric, Task
from compress.tasks.classification import Classification
from compress.tasks.denoising import Denoising

TASKS: Registry[Task] = Registry("task", DataError)
TASKS.register("classification", Classification())
TASKS.register("denoising", Denoising())


def get_task(name: str) -> Task:
    return TASKS.get(name)


__all__ = ["TASKS", "Metric", "Task", "get_task"]
