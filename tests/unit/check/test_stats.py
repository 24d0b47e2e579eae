"""The A/B statistics on injected timings with fixed seeds."""

from __future__ import annotations

import numpy as np
import pytest

from compress.check.stats import (
    FAIL,
    INCONCLUSIVE,
    PASS,
    bootstrap_ratio_ci,
    compare_rounds,
    compare_summaries,
    round_medians,
)


def simulate(
    ratio: float,
    *,
    rounds: int = 20,
    iters: int = 20,
    drift: float = 0.05,
    side: float = 0.02,
    call: float = 0.1,
    seed: int = 0,
) -> tuple[list[np.ndarray], list[np.ndarray]]:
    """Per-call times of baseline (1 ms) and candidate (ratio ms) over interleaved rounds.

    drift: log-sd of the machine load shared by both models within a round; side: log-sd of each
    model's own round-to-round noise; call: log-sd of single calls.
    """
    rng = np.random.default_rng(seed)
    base, cand = [], []
    for _ in range(rounds):
        load = np.exp(rng.normal(0, drift))
        base.append(1e-3 * load * np.exp(rng.normal(0, side)) * np.exp(rng.normal(0, call, iters)))
        cand.append(1e-3 * ratio * load * np.exp(rng.normal(0, side)) * np.exp(rng.normal(0, call, iters)))
    return base, cand


def test_true_30_percent_slowdown_is_fail():
    v = compare_rounds(*simulate(1.3, seed=1), max_slowdown=0.10, seed=0)
    assert v.decision == FAIL
    assert 1.25 < v.slowdown < 1.35
    assert v.ci_low > 1.10 and v.p_value < 0.05
    assert v.advice is None


def test_identical_distributions_pass():
    v = compare_rounds(*simulate(1.0, seed=2), max_slowdown=0.10, seed=0)
    assert v.decision == PASS
    assert v.ci_low < 1.0 < v.ci_high <= 1.10
    assert abs(v.slowdown - 1.0) < 0.03


def test_very_noisy_pair_is_inconclusive_not_fail():
    # a true 15% slowdown (over the 10% limit) drowned in 40% per-round noise with few rounds
    v = compare_rounds(*simulate(1.15, rounds=8, side=0.4, seed=3), max_slowdown=0.10, seed=0)
    assert v.decision == INCONCLUSIVE
    assert v.ci_low <= 1.10 < v.ci_high
    assert "--rounds" in v.advice


@pytest.mark.parametrize("paired", [True, False])
def test_noisy_identical_pairs_never_false_fail(paired):
    decisions = [
        compare_rounds(*simulate(1.0, rounds=10, side=0.3, seed=s), paired=paired, seed=s).decision for s in range(20)
    ]
    assert FAIL not in decisions
    assert decisions.count(INCONCLUSIVE) >= 10  # the noise is too large to pass them either


def test_pairing_cancels_load_drift_between_rounds():
    base, cand = simulate(1.25, rounds=12, drift=0.3, side=0.02, seed=4)
    paired = compare_rounds(base, cand, paired=True, seed=0)
    unpaired = compare_rounds(base, cand, paired=False, seed=0)
    assert paired.decision == FAIL
    assert unpaired.decision == INCONCLUSIVE
    assert unpaired.ci_high - unpaired.ci_low > 3 * (paired.ci_high - paired.ci_low)
    # both figures are always reported
    assert paired.ratio_of_medians == pytest.approx(unpaired.ratio_of_medians)
    assert paired.p_value_mann_whitney == pytest.approx(unpaired.p_value)


def test_unpaired_mann_whitney_catches_a_clear_slowdown():
    v = compare_rounds(*simulate(1.3, seed=5), paired=False, seed=0)
    assert v.decision == FAIL
    assert "Mann-Whitney" in v.method


def test_round_medians_ignore_call_spikes():
    base, cand = simulate(1.0, seed=6)
    rng = np.random.default_rng(0)
    for r in cand:
        r[rng.integers(0, len(r), 3)] *= 20  # 3 of 20 calls hit by a 20x hiccup
    assert compare_rounds(base, cand, seed=0).decision == PASS


def test_decision_is_reproducible_for_a_seed():
    base, cand = simulate(1.12, rounds=10, side=0.1, seed=7)
    a = compare_rounds(base, cand, seed=3)
    b = compare_rounds(base, cand, seed=3)
    assert (a.ci_low, a.ci_high, a.decision) == (b.ci_low, b.ci_high, b.decision)


def test_threshold_shifts_the_decision():
    base, cand = simulate(1.3, seed=8)
    assert compare_rounds(base, cand, max_slowdown=0.10).decision == FAIL
    assert compare_rounds(base, cand, max_slowdown=0.50).decision == PASS


def test_flat_round_values_and_bootstrap_ci():
    b = np.full(10, 1e-3)
    c = np.full(10, 2e-3)
    assert round_medians([[1, 2, 3], [4, 5, 6]]).tolist() == [2.0, 5.0]
    assert bootstrap_ratio_ci(b, c) == (pytest.approx(2.0), pytest.approx(2.0))
    assert compare_rounds(b, c).decision == FAIL


def test_invalid_inputs_raise():
    with pytest.raises(ValueError, match="at least 5 rounds"):
        compare_rounds(np.ones(3), np.ones(3))
    with pytest.raises(ValueError, match="positive"):
        compare_rounds(np.zeros(6), np.ones(6))
    with pytest.raises(ValueError, match="confidence"):
        compare_rounds(np.ones(6), np.ones(6), confidence=1.5)


def test_compare_summaries():
    base = {"p50_ms": 1.0, "std_ms": 0.05, "n": 500}
    assert compare_summaries(base, {"p50_ms": 1.01, "std_ms": 0.05, "n": 500}).decision == PASS
    slow = compare_summaries(base, {"p50_ms": 1.4, "std_ms": 0.05, "n": 500})
    assert slow.decision == FAIL and slow.slowdown == pytest.approx(1.4)
    noisy = compare_summaries({"p50_ms": 1.0, "std_ms": 2.0, "n": 10}, {"p50_ms": 1.1, "std_ms": 2.0, "n": 10})
    assert noisy.decision == INCONCLUSIVE
