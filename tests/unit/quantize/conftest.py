"""Shared tiny digits data and a briefly trained built-in CNN for the quantization tests."""

from __future__ import annotations

import pytest
import torch

from compress.data import DataConfig, load_data
from compress.models.sources import load_model
from compress.train.loop import TrainConfig, train


@pytest.fixture(scope="session")
def digits():
    return load_data(DataConfig(name="digits", image_size=12, channels=1, limit=400, calib_size=128))


@pytest.fixture(scope="session")
def trained(digits):
    """builtin simple_cnn (width 0.5) trained a few epochs: ~90% on the digits subset."""
    torch.manual_seed(0)
    model = load_model(
        "builtin:simple_cnn", num_classes=10, in_channels=1, input_shape=digits.input_shape, kwargs={"width": 0.5}
    )
    result = train(
        model.module, digits, TrainConfig(epochs=6, batch_size=32, lr=5e-3, device="cpu"), show_progress=False
    )
    assert result.metrics["accuracy"] > 0.8, result.metrics
    return model
