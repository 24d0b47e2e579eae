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


def test_every_kind_is_a_candidate_when_asked_even_one_the_profiler_says_int8_speeds_up():
    kinds = {"grouped convs": ["g1", "g2"], "linear layers": ["fc"]}
    int8 = _report({"/g1/QLinearConv": 5.0, "/g2/QLinearConv": 5.0, "/fc/QGemm": 9.0})
    flt = _report({"/g1/Conv": 8.0, "/g2/Conv": 8.0, "/fc/Gemm": 5.0})
    assert [g["label"] for g in latency_groups(kinds, int8, flt)] == ["linear layers (1)"]
    assert [g["label"] for g in latency_groups(kinds, int8, flt, every=True)] == [
        "linear layers (1)",
        "grouped convs (2)",
    ]
