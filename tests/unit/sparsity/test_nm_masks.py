"""N:M masks by the hardware's rule, eligibility reasons, the one checker on torch and ONNX."""

import numpy as np
import pytest
import torch
from torch import nn

from compress.sparsity import eligibility, nm_mask, pattern_report
from compress.sparsity.masks import holds


def test_conv_mask_groups_consecutive_input_channels_for_each_k_r_s():
    torch.manual_seed(0)
    w = torch.randn(3, 8, 2, 2)
    mask = nm_mask(w, 2, 4, axis=1)
    for k in range(3):
        for r in range(2):
            for s in range(2):
                for g in range(2):
                    col = w[k, g * 4 : (g + 1) * 4, r, s].abs()
                    kept = mask[k, g * 4 : (g + 1) * 4, r, s]
                    assert kept.sum() == 2
                    assert set(torch.topk(col, 2).indices.tolist()) == set(kept.nonzero().flatten().tolist())
    masked = (w * mask).numpy()
    assert holds(masked, 2, 4, 1)
    # the flat-reshape rule (rows of 4 along the kernel width) is a different pattern: it need not hold here
    flat = nm_mask(w.reshape(3, -1), 2, 4, axis=1).reshape(w.shape)
    assert not torch.equal(flat, mask)
    assert not holds((w * flat).numpy(), 2, 4, 1)


def test_linear_mask_along_in_and_numpy_matches_torch():
    w = np.array([[0.1, -3.0, 2.0, 0.0, 5.0, 4.0, -6.0, 1.0]], dtype=np.float32)
    mask = nm_mask(w, 2, 4, axis=1)
    assert mask.tolist() == [[False, True, True, False, False, False, True, False]] or mask.sum() == 4
    assert mask[0].tolist() == [False, True, True, False, True, False, True, False]
    assert torch.equal(nm_mask(torch.from_numpy(w), 2, 4, 1), torch.from_numpy(mask))


def test_eligibility_reasons():
    assert eligibility("conv", (16, 3, 3, 3), 4)[1] == "input channels 3 not a multiple of 4"
    assert eligibility("conv", (16, 1, 3, 3), 4, groups=16)[1] == "depthwise (1 input channel per group)"
    assert "min_params" in eligibility("linear", (8, 8), 4, min_params=100)[1]
    can, _, kernel, why = eligibility("linear", (10, 64), 4)
    assert can and not kernel and "out % 32" in why
    assert eligibility("linear", (64, 128), 4)[:3] == (True, "", True)
    can, _, kernel, why = eligibility("conv", (32, 32, 3, 3), 4, groups=2)
    assert can and not kernel and "grouped" in why
    assert eligibility("linear", (8, 8), 4, dtype=np.bool_)[0] is False


def _sparse_net():
    torch.manual_seed(0)
    net = nn.Sequential(
        nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(), nn.Conv2d(8, 8, 3), nn.Flatten(), nn.Linear(8 * 4 * 4, 64)
    )
    with torch.no_grad():
        net[2].weight.mul_(nm_mask(net[2].weight, 2, 4, 1))
        net[4].weight.mul_(nm_mask(net[4].weight, 2, 4, 1))
    return net.eval()


def test_one_checker_for_torch_and_onnx(tmp_path):
    net = _sparse_net()
    torch.onnx.export(net, (torch.rand(1, 3, 6, 6),), str(tmp_path / "m.onnx"), dynamo=False)
    from compress.check.structure import nm_sparsity

    t = pattern_report(net, "2:4")
    o = pattern_report(tmp_path / "m.onnx", "2:4")
    assert nm_sparsity(tmp_path / "m.onnx", "2:4") == o  # check --expect-sparsity reads the same report
    for rep in (t, o):
        assert rep["eligible_layers"] == 2 and rep["sparse_layers"] == 2
        assert [r["holds"] for r in rep["layers"]] == [None, True, True]
        assert rep["layers"][0]["reason"] == "input channels 3 not a multiple of 4"
    # the Linear [64, 128] is the only shape the semi-structured kernels take; the 8-channel conv is below TRT's
    assert [r["eligible"] for r in t["layers"]] == [False, False, True]
    with torch.no_grad():
        net[2].weight[0, 0:4, 0, 0] = 1.0  # 4 nonzeros in one group
    assert pattern_report(net, "2:4")["sparse_layers"] == 1


def test_bad_pattern_is_a_value_error():
    with pytest.raises(ValueError, match="N:M"):
        pattern_report(nn.Linear(4, 4), "4:2")
