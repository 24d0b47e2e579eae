"""Latency-aware mixed precision: kinds of layer tried as one group, ranked by ORT's profiler."""

from __future__ import annotations

from torch import nn

from compress.quantize.budget import latency_groups, layer_kind
from compress.quantize.int8 import Int8Config, wants_latency_plan
from compress.quantize.speed import FASTER, SLOWER


def test_layer_kind_tells_depthwise_grouped_linear_and_plain_apart():
    assert layer_kind(nn.Conv2d(8, 8, 3, groups=8)) == "depthwise convs"
    assert layer_kind(nn.Conv2d(8, 16, 3, groups=2)) == "grouped convs"
    assert layer_kind(nn.Linear(4, 2)) == "linear layers"
    assert layer_kind(nn.Conv2d(8, 16, 1)) is None


def _report(times: dict[str, float]) -> dict:
    return {"node_times_us": times}


def test_latency_groups_sum_a_kind_and_keep_only_kinds_slower_in_int8_worst_first():
    kinds = {"depthwise convs": ["a", "b"], "linear layers": ["fc"], "grouped convs": ["g"]}
    int8 = _report({"/a/QLinearConv": 30.0, "/b/QLinearConv": 30.0, "/fc/QGemm": 5.0, "/g/QLinearConv": 12.0})
    flt = _report({"/a/Conv": 20.0, "/b/Conv": 25.0, "/fc/Gemm": 9.0, "/g/Conv": 10.0})
    groups = latency_groups(kinds, int8, flt)
    # depthwise: 60 vs 45 (cost 15), grouped: 12 vs 10 (cost 2), linear: faster in INT8 (left out)
    assert [g["label"] for g in groups] == ["depthwise convs (2)", "grouped convs (1)"]
    assert groups[0]["layers"] == ["a", "b"] and groups[0]["cost_us"] == 15.0


def test_a_faster_all_int8_model_is_still_tried_with_a_kind_the_profiler_says_int8_slows():
    faster, slower = {"verdict": FASTER}, {"verdict": SLOWER}
    group = [{"label": "depthwise convs (2)", "layers": ["a", "b"], "group": True}]
    single = [{"label": "a", "layers": ["a"], "group": False}]
    default = Int8Config()
    assert wants_latency_plan(default, faster, group)
    assert not wants_latency_plan(default, faster, single)  # one layer is too small to measure against a win
    assert wants_latency_plan(default, slower, single)
    assert not wants_latency_plan(default, slower, [])
    assert not wants_latency_plan(Int8Config(mixed_by_latency=False), slower, group)
    busy = {"verdict": "not significantly faster", "busy_machine": True}  # no trial could be kept
    assert not wants_latency_plan(default, busy, group)
    assert wants_latency_plan(Int8Config(mixed_by_latency=True), busy, group)  # asked for: tried anyway


def test_every_kind_is_a_candidate_when_asked_even_one_the_profiler_says_int8_speeds_up():
    kinds = {"grouped convs": ["g1", "g2"], "linear layers": ["fc"]}
    int8 = _report({"/g1/QLinearConv": 5.0, "/g2/QLinearConv": 5.0, "/fc/QGemm": 9.0})
    flt = _report({"/g1/Conv": 8.0, "/g2/Conv": 8.0, "/fc/Gemm": 5.0})
    assert [g["label"] for g in latency_groups(kinds, int8, flt)] == ["linear layers (1)"]
    assert [g["label"] for g in latency_groups(kinds, int8, flt, every=True)] == [
        "linear layers (1)",
        "grouped convs (2)",
    ]


class _ConvBnAct(nn.Module):
    """A stem and two Conv-BN-activation blocks and a residual block: ORT names their fused float convs
    after the activation (or the residual add's ReLU), not after the conv."""

    def __init__(self) -> None:
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(3, 16, 3, padding=1), nn.BatchNorm2d(16), nn.ReLU())
        self.dw = nn.Sequential(nn.Conv2d(16, 16, 3, padding=1, groups=16), nn.BatchNorm2d(16), nn.ReLU6())
        self.conv = nn.Conv2d(16, 16, 3, padding=1)
        self.bn = nn.BatchNorm2d(16)
        self.head = nn.Linear(16, 10)

    def forward(self, x):
        x = self.dw(self.stem(x))
        x = (self.bn(self.conv(x)) + x).relu()
        return self.head(x.mean((2, 3)))


def test_a_fused_float_conv_is_timed_as_its_conv_not_as_its_activation(tmp_path):
    from compress.backends.onnxruntime import runtime_report
    from compress.models.model import Model
    from compress.quantize.budget import _scope_time
    from compress.quantize.int8 import _export_float

    path = tmp_path / "float.onnx"
    _export_float(Model(_ConvBnAct().eval(), {"source": "test", "name": "cba", "kwargs": {}}, (3, 16, 16)), path)
    report = runtime_report(path, input_shape=(1, 3, 16, 16), runs=2)
    sources = report["node_sources"]
    assert "/stem/stem.0/Conv" in sources.values() and "/dw/dw.0/Conv" in sources.values()
    assert all(not name.startswith(("/stem/stem.0/", "/dw/dw.0/")) for name in report["node_times_us"])  # renamed
    for layer in ("stem.0", "dw.0", "conv", "head"):
        assert _scope_time([layer], report) > 0, (layer, report["node_times_us"], sources)
    total = sum(report["node_times_us"].values())
    assert _scope_time(["stem.0", "dw.0", "conv", "head"], report) <= total
