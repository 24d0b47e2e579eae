import pytest
import torch

from compress.config import from_dict
from compress.data import DataConfig, load_data
from compress.errors import DataError, RecipeError


def test_digits_split_is_deterministic_disjoint_and_shaped():
    a = load_data(DataConfig(image_size=16, channels=1))
    b = load_data(DataConfig(image_size=16, channels=1))
    assert a.input_shape == (1, 16, 16) and a.num_classes == 10
    assert len(a.train) + len(a.val) == 1797
    xa, ya = a.train[0]
    xb, yb = b.train[0]
    assert torch.equal(xa, xb) and ya == yb
    assert xa.shape == (1, 16, 16) and xa.min() >= 0.0 and xa.max() <= 1.0
    train = {tuple(a.train[i][0].flatten()[:32].tolist()) for i in range(len(a.train))}
    overlap = sum(tuple(a.val[i][0].flatten()[:32].tolist()) in train for i in range(len(a.val)))
    assert overlap < 5  # digits has a few duplicate scans, but the split itself is disjoint
    c = load_data(DataConfig(image_size=16, channels=1, seed=1))
    assert not torch.equal(c.train[0][0], xa)


def test_calibration_split_comes_from_train():
    d = load_data(DataConfig(calib_size=10))
    assert len(d.calib) == 10
    assert torch.equal(d.calib[3][0], d.train[3][0])


def test_denoising_task_gives_fixed_noisy_clean_pairs():
    d = load_data(DataConfig(task="denoising", channels=1, image_size=16, noise_sigma=0.1))
    noisy, clean = d.val[0]
    noisy2, _ = d.val[0]
    assert torch.equal(noisy, noisy2)
    assert 0.05 < float((noisy - clean).std()) < 0.15
    assert d.num_classes == 0 and d.task == "denoising"


def test_synthetic_and_errors(tmp_path):
    d = load_data(DataConfig(name="synthetic:3x24x24"))
    assert d.input_shape == (3, 24, 24)
    with pytest.raises(DataError, match="unknown dataset 'mnist'; available: cifar10, digits, "):
        load_data(DataConfig(name="mnist"))
    with pytest.raises(DataError, match="cifar-10-batches-py"):
        load_data(DataConfig(name=f"cifar10:{tmp_path}"))
    with pytest.raises(DataError, match="directory not found"):
        load_data(DataConfig(name=f"imagefolder:{tmp_path}/none"))
    with pytest.raises(RecipeError, match="channels must be 1 or 3"):
        from_dict(DataConfig, {"channels": 2})


def test_imagefolder_reads_real_images(tmp_path):
    from PIL import Image

    for cls in ("cat", "dog"):
        (tmp_path / cls).mkdir()
        for i in range(5):
            Image.new("RGB", (20, 20), (i * 40, 10, 200 if cls == "dog" else 0)).save(tmp_path / cls / f"{i}.png")
    d = load_data(DataConfig(name=f"imagefolder:{tmp_path}", image_size=8))
    assert d.num_classes == 2 and len(d.train) + len(d.val) == 10
    x, y = d.train[0]
    assert x.shape == (3, 8, 8) and y in (0, 1)
