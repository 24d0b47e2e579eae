"""ONNX Runtime's GPU providers, with ORT's session stood in for (no onnxruntime-gpu here): every provider
asked for must load, and TensorRT's runs on the stream the CUDA events time."""

import types

import pytest

from compress.errors import BackendError

TRT, CUDA, CPU = "TensorrtExecutionProvider", "CUDAExecutionProvider", "CPUExecutionProvider"


@pytest.fixture
def fake_gpu_ort(monkeypatch):
    """ORT that offers the GPU providers and loads only those in `loads`; torch with a fake CUDA stream."""
    import onnxruntime as ort
    import torch

    real = ort.InferenceSession
    seen = {}
    loads = {"providers": [TRT, CUDA, CPU]}

    class Session:
        def __init__(self, path, so, providers):
            seen["providers"] = providers
            self._real = real(path, providers=[CPU])

        def get_providers(self):
            return list(loads["providers"])

        def __getattr__(self, name):
            return getattr(self._real, name)

    monkeypatch.setattr(ort, "get_available_providers", lambda: [TRT, CUDA, CPU])
    monkeypatch.setattr(ort, "InferenceSession", Session)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "Stream", lambda: types.SimpleNamespace(cuda_stream=1234))
    return seen, loads


def test_tensorrt_provider_without_cuda_provider_is_refused(onnx_file, fake_gpu_ort):
    from compress.backends import get_backend
    from compress.backends.base import BackendOptions

    seen, loads = fake_gpu_ort
    loads["providers"] = [TRT, CPU]  # the CUDA provider failed to load: non-TensorRT nodes would run on the CPU
    with pytest.raises(BackendError, match="CUDAExecutionProvider did not load"):
        get_backend("onnxruntime").load(onnx_file, BackendOptions(device="cuda", provider="tensorrt"))
    loads["providers"] = [CUDA, CPU]
    with pytest.raises(BackendError, match="TensorrtExecutionProvider did not load"):
        get_backend("onnxruntime").load(onnx_file, BackendOptions(device="cuda", provider="tensorrt"))


def test_every_gpu_provider_gets_the_timed_stream(onnx_file, fake_gpu_ort):
    from compress.backends import get_backend
    from compress.backends.base import BackendOptions

    seen, loads = fake_gpu_ort
    sess = get_backend("onnxruntime").load(onnx_file, BackendOptions(device="cuda", provider="tensorrt"))
    assert sess.providers == [TRT, CUDA, CPU]
    (trt, trt_opts), (cuda, cuda_opts), cpu = seen["providers"]
    assert (trt, cuda, cpu) == (TRT, CUDA, CPU)
    assert trt_opts == cuda_opts == {"user_compute_stream": "1234"}
    loads["providers"] = [CUDA, CPU]
    sess = get_backend("onnxruntime").load(onnx_file, BackendOptions(device="cuda"))
    assert [p if isinstance(p, str) else p[0] for p in seen["providers"]] == [CUDA, CPU]


def test_a_cuda_session_reports_the_card_like_the_other_gpu_backends(onnx_file, fake_gpu_ort, monkeypatch):
    import compress.backends.cuda as cuda
    from compress.backends import get_backend
    from compress.backends.base import BackendOptions

    card = {"device": "cuda:0", "name": "NVIDIA H200", "smi_driver_version": "580.65", "smi_clocks_sm": "1980 MHz"}
    monkeypatch.setattr(cuda, "device_info", lambda index=0: dict(card))
    _, loads = fake_gpu_ort
    loads["providers"] = [CUDA, CPU]
    info = get_backend("onnxruntime").load(onnx_file, BackendOptions(device="cuda")).info()
    assert info["gpu"] == card and info["device"] == "cuda"
    assert "gpu" not in get_backend("onnxruntime").load(onnx_file).info()  # a CPU session has no card
