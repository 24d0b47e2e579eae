"""GPU backends: torch-cuda (eager, compile, CUDA graphs, fp16), ORT's CUDA provider, CUDA-event timing.
Skipped without CUDA."""

import numpy as np
import pytest
import torch

pytestmark = [
    pytest.mark.gpu,
    pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device"),
]


@pytest.fixture
def checkpoint(tmp_path, tiny_model):
    from compress.models import save_model

    return save_model(tiny_model, tmp_path / "m.pt")


@pytest.mark.parametrize(
    "opts",
    [{}, {"cuda_graph": True}, {"compile": True}, {"precision": "fp16"}],
    ids=["eager", "cuda_graph", "compile", "fp16"],
)
def test_torch_cuda_matches_cpu_and_times_with_cuda_events(checkpoint, tiny_model, opts):
    from compress.backends import get_backend
    from compress.backends.base import BackendOptions, CudaEventTimer
    from compress.bench.latency import LatencyConfig, measure

    x = np.random.default_rng(0).random((4, *tiny_model.input_shape), dtype=np.float32)
    gpu = get_backend("torch-cuda").load(checkpoint, BackendOptions(device="cuda", **opts))
    cpu = get_backend("torch").load(checkpoint, BackendOptions(device="cpu"))
    tol = 2e-2 if opts.get("precision") == "fp16" else 1e-4
    np.testing.assert_allclose(gpu.run(x), cpu.run(x), atol=tol, rtol=tol)
    timer = gpu.timer()
    assert isinstance(timer, CudaEventTimer)
    times = measure(gpu.runner(x), LatencyConfig(warmup_iters=3, warmup_s=0, min_iters=10, min_time_s=0), timer=timer)
    assert len(times) == 10 and times.min() > 0
    host = timer.series()["host"]
    assert len(host) == 10 and (host >= times * 0.5).all()  # the host waits at least about the GPU time
    info = gpu.info()
    assert info["device"]["name"] == torch.cuda.get_device_name(0) and info["timer"] == "cuda_event"


def test_cuda_graph_replays_the_captured_input(checkpoint, tiny_model):
    from compress.backends import get_backend
    from compress.backends.base import BackendOptions

    x = np.random.default_rng(1).random((2, *tiny_model.input_shape), dtype=np.float32)
    sess = get_backend("torch-cuda").load(checkpoint, BackendOptions(device="cuda", cuda_graph=True))
    replay = sess.runner(x)
    replay()
    torch.cuda.synchronize()
    np.testing.assert_allclose(sess._static_out.float().cpu().numpy(), sess.run(x), atol=1e-4, rtol=1e-4)


def test_bench_on_torch_cuda_reports_gpu_and_host_latency(checkpoint):
    from compress.bench import BenchConfig, LatencyConfig, bench

    cfg = BenchConfig(
        backend="torch-cuda",
        device="cuda",
        latency=LatencyConfig(warmup_iters=2, warmup_s=0, min_iters=5, min_time_s=0),
    )
    from compress.data import DataConfig, load_data

    data = load_data(DataConfig(name="digits", image_size=16, channels=3, limit=64))
    res = bench(checkpoint, cfg, data=data)
    assert res["runtime"]["timer"] == "cuda_event" and res["latency"]["n"] == 5
    assert res["latency_host"]["n"] == 5 and "accuracy" in res["metrics"]
    assert res["latency_end_to_end"]["n"] >= 5  # host arrays in and out, wall-clock timed


def test_semi_structured_linear_on_cuda():
    from compress.backends.torch_cuda import semi_structured
    from compress.sparsity.masks import nm_mask

    layer = torch.nn.Linear(128, 128).cuda().half()
    with torch.no_grad():
        layer.weight.mul_(nm_mask(layer.weight, 2, 4, axis=1))
    x = torch.randn(32, 128, device="cuda", dtype=torch.half)
    dense = layer(x)
    net = torch.nn.Sequential(layer)
    try:
        converted = semi_structured(net)
    except RuntimeError as e:  # cuSPARSELt / CUTLASS kernels missing on this card
        pytest.skip(f"semi-structured kernels unavailable: {e}")
    assert converted == ["0"]
    torch.testing.assert_close(net(x), dense, atol=2e-2, rtol=2e-2)


def test_onnxruntime_cuda_provider_or_a_clear_refusal(tmp_path, tiny_model):
    import onnxruntime as ort

    from compress.backends import get_backend
    from compress.backends.base import BackendOptions
    from compress.errors import BackendError
    from compress.export import export_onnx

    path = tmp_path / "m.onnx"
    export_onnx(tiny_model, path)
    if "CUDAExecutionProvider" not in ort.get_available_providers():
        with pytest.raises(BackendError, match="onnxruntime-gpu"):
            get_backend("onnxruntime").load(path, BackendOptions(device="cuda"))
        return
    sess = get_backend("onnxruntime").load(path, BackendOptions(device="cuda"))
    assert sess.providers[0] == "CUDAExecutionProvider"
    x = np.random.default_rng(0).random((2, *tiny_model.input_shape), dtype=np.float32)
    cpu = get_backend("onnxruntime").load(path)
    np.testing.assert_allclose(sess.run(x), cpu.run(x), atol=1e-3, rtol=1e-3)
    sess.runner(x)()


def test_bench_sparse_auto_times_each_2_4_linear_and_reports_it(tmp_path):
    """`bench --backend torch-cuda --sparse auto`: every eligible Linear is timed; the report says which
    layers were swapped and by how much, and the outputs stay those of the dense network."""
    from compress.bench import BenchConfig, LatencyConfig, bench
    from compress.models import save_model
    from compress.models.sources import load_model
    from compress.sparsity.masks import nm_mask

    model = load_model("builtin:simple_cnn", num_classes=256, input_shape=(3, 16, 16), kwargs={"width": 1.0})
    with torch.no_grad():
        for m in model.module.modules():
            if isinstance(m, torch.nn.Linear):
                m.weight.mul_(nm_mask(m.weight, 2, 4, axis=1))
    ckpt = save_model(model, tmp_path / "m.pt")
    cfg = BenchConfig(
        backend="torch-cuda",
        device="cuda",
        precision="fp16",
        sparse="auto",
        accuracy=False,
        latency=LatencyConfig(warmup_iters=2, warmup_s=0, min_iters=5, min_time_s=0),
    )
    res = bench(ckpt, cfg)
    report = res["runtime"]["sparse_auto"]
    assert report["layers"] or report["skipped"]  # every Linear is either timed or has a reason
    for row in report["layers"]:
        assert row["dense_s"] > 0 and row["sparse_s"] > 0 and row["sparse"] == (row["name"] in report["swapped"])
    assert res["runtime"]["semi_structured_layers"] == len(report["swapped"])
