"""CUDA paths: training on the GPU, the torch backend on the GPU. Skipped without CUDA."""

import pytest
import torch

pytestmark = [
    pytest.mark.gpu,
    pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device"),
]


def test_training_on_cuda_learns_and_returns_a_cpu_model(digits_small, tiny_model):
    from compress.train import TrainConfig, train

    res = train(tiny_model.module, digits_small, TrainConfig(epochs=8, batch_size=32, lr=5e-3, device="cuda"))
    assert res.metrics["accuracy"] > 0.3
    assert all(p.device.type == "cpu" for p in tiny_model.module.parameters())


def test_torch_backend_runs_on_cuda_and_matches_cpu(tmp_path, tiny_model):
    import numpy as np

    from compress.backends import get_backend
    from compress.backends.base import BackendOptions
    from compress.bench.latency import LatencyConfig, measure
    from compress.models import save_model

    path = save_model(tiny_model, tmp_path / "m.pt")
    x = np.random.default_rng(0).random((4, *tiny_model.input_shape), dtype=np.float32)
    gpu = get_backend("torch").load(path, BackendOptions(device="cuda"))
    cpu = get_backend("torch").load(path, BackendOptions(device="cpu"))
    np.testing.assert_allclose(gpu.run(x), cpu.run(x), atol=1e-4, rtol=1e-4)
    times = measure(gpu.runner(x), LatencyConfig(warmup_iters=3, warmup_s=0, min_iters=10, min_time_s=0))
    assert len(times) == 10 and times.min() > 0


def test_export_of_a_cuda_trained_model(tmp_path, digits_small, tiny_model):
    from compress.export import export_onnx
    from compress.train import TrainConfig, train

    train(tiny_model.module, digits_small, TrainConfig(epochs=1, batch_size=64, device="cuda"))
    report = export_onnx(tiny_model, tmp_path / "m.onnx")
    assert report["parity"]["ok"]
