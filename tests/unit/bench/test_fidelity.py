"""Fidelity figures (compress.bench.fidelity) on hand-made outputs, and the runners that produce them."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from compress.bench.fidelity import (
    Fidelity,
    Reference,
    kl_divergence,
    measure_fidelity,
    output_psnr,
    primary,
    session_runner,
    top1_agreement,
    top5_agreement,
    torch_runner,
)
from compress.errors import DataError


def test_top1_agreement_counts_matching_argmax():
    ref = np.array([[3.0, 0, 0], [0, 3, 0], [0, 0, 3], [3, 0, 0]])
    out = np.array([[1.0, 0, 0], [0, 1, 0], [0, 0, 1], [0, 1, 0]])  # the last one disagrees
    assert top1_agreement(out, ref) == pytest.approx(0.75)
    assert top1_agreement(ref, ref) == 1.0


def test_top5_agreement_is_the_reference_top1_within_the_model_top5():
    ref = np.zeros((2, 8))
    ref[:, 0] = 1.0  # the reference says class 0 for both
    out = np.tile(np.arange(8, dtype=float)[::-1], (2, 1))  # class 0 ranks 1st ...
    out[1] = np.arange(8, dtype=float)  # ... and 8th (outside the top 5) for the second row
    assert top5_agreement(out, ref) == pytest.approx(0.5)
    out[1, 0] = 3.5  # now the 5th largest of 0..7 without 0 → inside the top 5
    assert top5_agreement(out, ref) == pytest.approx(1.0)


def test_kl_divergence_matches_torch_and_is_zero_for_identical_outputs():
    g = torch.Generator().manual_seed(0)
    ref, out = torch.randn(16, 10, generator=g), torch.randn(16, 10, generator=g)
    expected = F.kl_div(F.log_softmax(out, 1), F.log_softmax(ref, 1), log_target=True, reduction="batchmean")
    assert kl_divergence(out.numpy(), ref.numpy()) == pytest.approx(float(expected), rel=1e-5)
    assert kl_divergence(ref.numpy(), ref.numpy()) == pytest.approx(0.0, abs=1e-12)
    # a constant shift of the logits changes no probability
    assert kl_divergence(ref.numpy() + 5.0, ref.numpy()) == pytest.approx(0.0, abs=1e-9)


def test_psnr_against_reference_outputs():
    ref = np.full((2, 1, 4, 4), 0.5)
    assert output_psnr(ref + 0.1, ref) == pytest.approx(20.0)  # MSE 0.01
    assert output_psnr(ref, ref) == pytest.approx(100.0)
    # outputs are clipped to [0, 1] like the task's PSNR: 2.0 counts as 1.0
    assert output_psnr(np.full((1, 1, 2, 2), 2.0), np.full((1, 1, 2, 2), 0.9)) == pytest.approx(20.0)


def test_outputs_that_do_not_match_the_reference_are_a_one_line_error():
    with pytest.raises(DataError, match="not comparable") as e:
        top1_agreement(np.zeros((4, 10)), np.zeros((4, 1000)))
    assert "\n" not in str(e.value)
    with pytest.raises(DataError, match="not images of one shape"):
        output_psnr(np.zeros((2, 1, 4, 4)), np.zeros((2, 1, 8, 8)))
    with pytest.raises(DataError, match="fidelity is defined"):
        Fidelity("segmentation")


def test_accumulated_fidelity_equals_the_whole_batch():
    g = torch.Generator().manual_seed(1)
    ref, out = torch.randn(10, 6, generator=g).numpy(), torch.randn(10, 6, generator=g).numpy()
    fid = Fidelity("classification")
    fid.update(out[:3], ref[:3])
    fid.update(out[3:], ref[3:])
    got = fid.compute()
    assert got["samples"] == 10
    assert got["top1_agreement"] == pytest.approx(top1_agreement(out, ref))
    assert got["top5_agreement"] == pytest.approx(top5_agreement(out, ref))
    assert got["kl_divergence"] == pytest.approx(kl_divergence(out, ref))


class _FixedBatch:
    """A session that only accepts batches of 2 (a static batch dimension)."""

    input_shape = [2, 3]
    input_dtype = np.dtype(np.float32)

    def run(self, x):
        assert x.shape[0] == 2
        return x * 2.0


def test_session_runner_pads_a_fixed_batch_and_keeps_every_sample():
    x = np.arange(15, dtype=np.float32).reshape(5, 3)
    np.testing.assert_allclose(session_runner(_FixedBatch())(x), x * 2.0)


def test_measure_fidelity_of_a_model_to_itself_and_to_another():
    torch.manual_seed(0)
    a, b = torch.nn.Linear(4, 5), torch.nn.Linear(4, 5)
    data = torch.utils.data.TensorDataset(torch.randn(20, 4), torch.full((20,), -1))
    same = measure_fidelity(torch_runner(a), Reference("a", "torch", torch_runner(a)), data, "classification")
    assert same["reference"] == "a" and same["samples"] == 20
    assert same["top1_agreement"] == 1.0 and same["kl_divergence"] == pytest.approx(0.0, abs=1e-9)
    other = measure_fidelity(torch_runner(b), torch_runner(a), data, "classification", batch_size=7)
    x = data.tensors[0]
    with torch.no_grad():
        want = top1_agreement(b(x).numpy(), a(x).numpy())
    assert other["top1_agreement"] == pytest.approx(want)
    assert other["top1_agreement"] < 1.0 and other["kl_divergence"] > 0.0
    assert primary(other) == ("top1_agreement", other["top1_agreement"])
    assert primary({"psnr": 31.0}) == ("psnr", 31.0) and primary(None) is None
    assert not math.isnan(other["top5_agreement"])


def test_fidelity_gate_from_figures():
    from compress.check.gate import fidelity_figures_gate

    figures = {"reference": "fp32", "top1_agreement": 0.97, "top5_agreement": 1.0, "kl_divergence": 0.01}
    assert fidelity_figures_gate({**figures, "samples": 100}, 0.95).status == "pass"
    failed = fidelity_figures_gate({**figures, "samples": 100}, 0.99)
    assert failed.status == "fail" and "below the required 99.00%" in failed.message and failed.candidate == 0.97
    assert fidelity_figures_gate(figures, None).status == "skipped"  # reported, not gated
    dense = fidelity_figures_gate({"reference": "fp32", "psnr": 41.5, "samples": 8}, None)
    assert dense.status == "skipped" and "41.50 dB" in dense.message
    assert "n/a" in fidelity_figures_gate(None, 0.9).message
