"""Shared tiny data and a briefly trained teacher for the distillation tests."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from compress.data import DataConfig, load_data
from compress.models.model import Model
from compress.models.sources import load_model
from compress.train.loop import TrainConfig, train


@pytest.fixture(scope="session")
def digits():
    return load_data(DataConfig(name="digits", image_size=16, channels=1, limit=256))


@pytest.fixture(scope="session")
def teacher(digits):
    """A plain CNN (no BN: it trains to ~90% in a few seconds), wrapped as a Model."""
    torch.manual_seed(0)
    net = nn.Sequential(
        nn.Conv2d(1, 16, 3, padding=1),
        nn.ReLU(),
        nn.MaxPool2d(2),
        nn.Conv2d(16, 32, 3, padding=1),
        nn.ReLU(),
        nn.MaxPool2d(2),
        nn.Flatten(),
        nn.Linear(32 * 4 * 4, 10),
    )
    result = train(net, digits, TrainConfig(epochs=6, batch_size=16, lr=1e-2), show_progress=False)
    assert result.metrics["accuracy"] > 0.8
    return Model(net.eval(), {"source": "test", "name": "cnn", "kwargs": {}}, tuple(digits.input_shape))


@pytest.fixture
def make_student(digits):
    """A factory of small, freshly initialised students (same seed every time)."""

    def build(name: str = "simple_cnn", width: float = 0.25):
        torch.manual_seed(1)
        return load_model(
            f"builtin:{name}", num_classes=10, in_channels=1, input_shape=digits.input_shape, kwargs={"width": width}
        )

    return build
