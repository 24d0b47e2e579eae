"""The latency harness takes its clock from the backend; GPU backends refuse cleanly without a GPU."""

import numpy as np
import pytest
import torch

from compress.errors import BackendError


class CountingTimer:
    """Reports 2 ms per call and keeps a second series, like the CUDA-event timer's host times."""

    name = "fake"

    def __init__(self):
        self.calls, self.resets, self.host = 0, 0, []

    def __call__(self, run):
        run()
        self.calls += 1
        self.host.append(0.003)
        return 0.002

    def reset(self):
        self.resets += 1
        self.host.clear()

    def series(self):
        return {"host": np.asarray(self.host)}


def test_measure_uses_the_timer_it_is_given():
    from compress.bench.latency import LatencyConfig, measure

    timer, ran = CountingTimer(), []
    times = measure(
        lambda: ran.append(1), LatencyConfig(warmup_iters=4, warmup_s=0, min_iters=7, min_time_s=0), timer=timer
    )
    assert times.tolist() == [0.002] * 7  # the timer's figures, not perf_counter's
    assert timer.calls == len(ran) == 11 and timer.resets == 1  # warm-up ran through it, then was forgotten
    assert len(timer.host) == 7


def test_wall_timer_is_the_default_and_times_the_call():
    import time

    from compress.backends.base import Session, WallTimer
    from compress.bench.latency import LatencyConfig, measure

    assert isinstance(Session().timer(), WallTimer)
    times = measure(
        lambda: time.sleep(0.002),
        LatencyConfig(warmup_iters=1, warmup_s=0, min_iters=3, min_time_s=0),
        timer=WallTimer(),
    )
    assert len(times) == 3 and times.min() >= 0.002


def test_bench_takes_its_timer_from_the_session(onnx_file, monkeypatch):
    from compress.backends.onnxruntime import OrtSession
    from compress.bench import BenchConfig, LatencyConfig, bench

    timer = CountingTimer()
    monkeypatch.setattr(OrtSession, "timer", lambda self: timer)
    cfg = BenchConfig(latency=LatencyConfig(warmup_iters=2, warmup_s=0, min_iters=5, min_time_s=0))
    result = bench(onnx_file, cfg)
    assert result["latency"]["p50_ms"] == pytest.approx(2.0) and result["latency"]["n"] == 5
    assert result["latency_host"]["p50_ms"] == pytest.approx(3.0)  # GPU compute and host latency apart
    assert result["runtime"]["timer"] == "fake" and result["runtime"]["backend"] == "onnxruntime"
    # beside the device clock, the call as an application makes it (host arrays in and out), wall-clock timed
    assert result["latency_end_to_end"]["n"] == 5 and result["latency_end_to_end"]["p50_ms"] != pytest.approx(2.0)
    from rich.console import Console

    from compress.report.render import latency_table

    console = Console(record=True, width=120)
    console.print(latency_table(result, "t"))
    text = console.export_text()
    assert "host p50_ms" in text and "3.0000" in text and "end-to-end (copies) p50_ms" in text


def test_a_wall_clock_backend_has_no_separate_end_to_end_figure(onnx_file):
    from compress.bench import BenchConfig, LatencyConfig, bench

    cfg = BenchConfig(latency=LatencyConfig(warmup_iters=1, warmup_s=0, min_iters=3, min_time_s=0))
    result = bench(onnx_file, cfg)
    assert "latency_end_to_end" not in result and "latency_host" not in result  # its one clock is the host's


def test_onnxruntime_run_all_names_every_output(onnx_file):
    from compress.backends import get_backend

    sess = get_backend("onnxruntime").load(onnx_file)
    x = np.random.default_rng(0).random((2, 3, 8, 8), dtype=np.float32)
    out = sess.run_all(x)
    assert list(out) == ["logits"] and np.array_equal(out["logits"], sess.run(x))


def test_onnxruntime_gpu_providers_are_checked_never_a_silent_cpu_fallback(onnx_file):
    import onnxruntime as ort

    from compress.backends import get_backend
    from compress.backends.base import BackendOptions

    available = ort.get_available_providers()
    if "CUDAExecutionProvider" not in available:
        with pytest.raises(BackendError, match="no CUDAExecutionProvider"):
            get_backend("onnxruntime").load(onnx_file, BackendOptions(device="cuda"))
    if "TensorrtExecutionProvider" not in available:
        with pytest.raises(BackendError, match="no TensorrtExecutionProvider"):
            get_backend("onnxruntime").load(onnx_file, BackendOptions(device="cuda", provider="tensorrt"))
    with pytest.raises(BackendError, match="unknown ONNX Runtime provider"):
        get_backend("onnxruntime").load(onnx_file, BackendOptions(device="cuda", provider="openvino"))


@pytest.mark.skipif(torch.cuda.is_available(), reason="a CUDA device is present")
def test_torch_cuda_without_a_gpu_is_one_line(tmp_path, tiny_model):
    from compress.backends import get_backend
    from compress.models import save_model

    path = save_model(tiny_model, tmp_path / "m.pt")
    with pytest.raises(BackendError, match="torch-cuda backend needs a CUDA device"):
        get_backend("torch-cuda").load(path)


def test_semi_structured_keeps_layers_that_are_not_2_to_4_dense():
    from compress.backends.torch_cuda import semi_structured

    net = torch.nn.Sequential(torch.nn.Linear(64, 32), torch.nn.Linear(32, 5))  # dense weights, small layers
    assert semi_structured(net) == []
    assert all(not getattr(m.weight, "is_sparse", False) for m in net if isinstance(m, torch.nn.Linear))
