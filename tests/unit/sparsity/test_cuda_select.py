"""Per-layer sparse-or-dense choice by measurement, with a fake timer (no GPU needed)."""

import pytest
import torch
from torch import nn

from compress.sparsity import nm_mask
from compress.sparsity.cuda import NO_CUDA, layer_inputs, select_sparse, sparse_auto


def _model():
    torch.manual_seed(0)
    net = nn.Sequential(nn.Linear(64, 64), nn.ReLU(), nn.Linear(64, 128), nn.ReLU(), nn.Linear(128, 10))
    with torch.no_grad():
        for layer in net:
            if isinstance(layer, nn.Linear):
                layer.weight.mul_(nm_mask(layer.weight, 2, 4, 1))
    return net


def test_swaps_only_layers_measured_faster():
    net = _model()
    calls = []

    def fake(mod, x):  # sparse faster only for the wide layer
        calls.append(tuple(mod.weight.shape))
        return (1.0, 0.7) if mod.weight.shape[0] == 128 else (1.0, 1.3)

    report = select_sparse(net, layer_inputs(net, torch.randn(2, 64)), fake)
    assert report["swapped"] == ["2"]
    assert calls == [(64, 64), (128, 64)]  # the 10-output layer is never timed: shape rule
    assert report["skipped"][0]["name"] == "4" and "out % 32" in report["skipped"][0]["reason"]
    rows = {r["name"]: r for r in report["layers"]}
    assert rows["0"]["sparse"] is False and "kept dense" in rows["0"]["reason"]
    assert rows["2"]["ratio"] == pytest.approx(0.7)


def test_margin_and_pattern_rule():
    net = _model()
    with torch.no_grad():
        net[0].weight.fill_(1.0)  # no longer 2:4
    report = select_sparse(net, layer_inputs(net, torch.randn(2, 64)), lambda m, x: (1.0, 0.97))
    assert report["swapped"] == []  # 3% faster is within the 5% margin
    assert any(s["name"] == "0" and "not 2:4" in s["reason"] for s in report["skipped"])


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the CPU message")
def test_cpu_says_no_sparse_kernels_ran():
    assert sparse_auto(_model(), torch.randn(2, 64))["note"] == NO_CUDA


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA (sparse tensor cores)")
def test_real_cuda_swap_runs():
    net = _model().half()
    report = sparse_auto(net, torch.randn(64, 64).half())
    assert set(report["swapped"]) <= {"0", "2"}
