"""The model handle every technique takes and returns."""

from __future__ import annotations

import copy
from dataclasses import dataclass, field
from typing import Any

from torch import nn


@dataclass
class Model:
    """A PyTorch network plus what is needed to rebuild, feed and trace it.

    Attributes:
        module: the network.
        arch: how to build the base network: {"source", "name", "kwargs"}; the layer-level changes
            that compression made are found by `save_model` and need not be tracked here.
        input_shape: one sample's shape, without the batch axis, e.g. (3, 32, 32).
        task: the task the network solves ("classification", "denoising").
        history: the steps applied so far, oldest first (technique, method, params, metrics).
        preprocessing: how inputs are prepared for it (mean, std, input_size, resize, crop_pct,
            interpolation; see `compress.models.preprocess`); {} for plain [0, 1] images.
    """

    module: nn.Module
    arch: dict[str, Any]
    input_shape: tuple[int, ...]
    task: str = "classification"
    history: list[dict[str, Any]] = field(default_factory=list)
    preprocessing: dict[str, Any] = field(default_factory=dict)

    def copy(self) -> Model:
        """A deep copy, so a technique never changes its input in place."""
        return Model(
            copy.deepcopy(self.module),
            copy.deepcopy(self.arch),
            tuple(self.input_shape),
            self.task,
            copy.deepcopy(self.history),
            copy.deepcopy(self.preprocessing),
        )

    def with_step(self, module: nn.Module, step: dict[str, Any]) -> Model:
        """A new handle for `module` with `step` appended to the history."""
        return Model(
            module,
            copy.deepcopy(self.arch),
            tuple(self.input_shape),
            self.task,
            [*copy.deepcopy(self.history), step],
            copy.deepcopy(self.preprocessing),
        )

    @property
    def name(self) -> str:
        return f"{self.arch.get('source')}:{self.arch.get('name')}"
