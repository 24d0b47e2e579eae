import os

import pytest

os.environ.setdefault("COMPRESS_PROGRESS", "0")


@pytest.fixture(scope="session")
def digits_small():
    """Digits at 16x16, few samples: fast training in tests."""
    from compress.data import DataConfig, load_data

    return load_data(DataConfig(name="digits", image_size=16, channels=3, limit=256, calib_size=64))


@pytest.fixture
def tiny_model(digits_small):
    from compress.models.sources import load_model

    return load_model(
        "builtin:simple_cnn",
        num_classes=10,
        in_channels=3,
        input_shape=digits_small.input_shape,
        kwargs={"width": 0.25},
    )
