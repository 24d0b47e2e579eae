"""Statistics of an interleaved A/B latency comparison: pure functions on timings.

The design: baseline (A) and candidate (B) are timed alternately in rounds (A B, B A, A B, ...), each
round giving one median per model. Round medians are robust to single-call spikes, and pairing the two
medians of a round cancels the slow drift of a shared machine's load. From the round medians:

- slowdown: by default (paired) the median of the per-round ratios candidate / baseline; unpaired, the
  ratio of medians median(candidate) / median(baseline). Both are always reported.
- a percentile bootstrap confidence interval of the slowdown, resampling whole rounds with a seeded
  generator;
- a one-sided rank test of "candidate / (1 + threshold) is slower than baseline", i.e. whether the
  slowdown exceeds the threshold, not merely whether it is above 1: Wilcoxon signed-rank on the per-round
  log ratios (paired) or Mann-Whitney U on the round medians (unpaired; its p-value is always reported).

Why paired by default: a shared machine's load drifts between rounds and moves both medians of a
round together. The ratio within a round cancels it; the ratio of medians does not. In a simulation
with 20% round-to-round load drift (10 rounds, true slowdown 1.2, limit 1.1) the unpaired design
decided FAIL 0 of 40 times, the paired one 39 of 40, both with no false FAIL at ratio 1.0.

Decision: FAIL only when the CI lower bound is above 1 + threshold *and* the rank test is significant
at 1 - confidence; PASS when the CI upper bound is within 1 + threshold; otherwise INCONCLUSIVE (the
noise is too large for the number of rounds).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

PASS = "pass"
FAIL = "fail"
INCONCLUSIVE = "inconclusive"
SKIPPED = "skipped"

MIN_ROUNDS = 5  # with fewer, no rank test at 95% can reach significance


@dataclass
class LatencyVerdict:
    """The outcome of one A/B latency comparison; times in milliseconds."""

    decision: str
    slowdown: float
    ci_low: float
    ci_high: float
    confidence: float
    threshold: float
    p_value: float
    p_value_any_slowdown: float
    rounds: int
    baseline_median_ms: float
    candidate_median_ms: float
    baseline_round_medians_ms: list[float]
    candidate_round_medians_ms: list[float]
    noise_cov: float
    method: str
    reason: str
    advice: str | None = None
    ratio_of_medians: float | None = None
    median_of_ratios: float | None = None
    p_value_mann_whitney: float | None = None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def round_medians(rounds: Sequence[Sequence[float]] | np.ndarray) -> np.ndarray:
    """One median per round of per-call times."""
    meds = [float(np.median(np.asarray(r, dtype=np.float64))) for r in rounds if len(r)]
    return np.asarray(meds, dtype=np.float64)


def bootstrap_ratio_ci(
    base: np.ndarray,
    cand: np.ndarray,
    *,
    confidence: float = 0.95,
    n_boot: int = 4000,
    seed: int = 0,
    paired: bool = True,
) -> tuple[float, float]:
    """Percentile bootstrap CI of the slowdown, resampling whole rounds with a seeded generator.

    paired: the statistic is the median of the per-round ratios cand[i] / base[i] (rounds resampled as
    pairs). Unpaired: the ratio of medians median(cand) / median(base), each side resampled on its own.
    """
    base = np.asarray(base, dtype=np.float64)
    cand = np.asarray(cand, dtype=np.float64)
    rng = np.random.default_rng(seed)
    alpha = 1.0 - confidence
    if paired:
        if len(base) != len(cand):
            raise ValueError(f"paired rounds need equal counts, got {len(base)} and {len(cand)}")
        logr = np.log(cand / base)
        idx = rng.integers(0, len(logr), size=(n_boot, len(logr)))
        stats = np.exp(np.median(logr[idx], axis=1))
    else:
        idx_b = rng.integers(0, len(base), size=(n_boot, len(base)))
        idx_c = rng.integers(0, len(cand), size=(n_boot, len(cand)))
        stats = np.median(cand[idx_c], axis=1) / np.median(base[idx_b], axis=1)
    lo, hi = np.quantile(stats, [alpha / 2, 1 - alpha / 2])
    return float(lo), float(hi)


def rank_test(base: np.ndarray, cand: np.ndarray, *, scale: float = 1.0, paired: bool = True) -> float:
    """One-sided rank-test p-value of "cand / scale is slower than base".

    paired: Wilcoxon signed-rank test of the per-round log ratios log(cand / base) - log(scale) > 0.
    Unpaired: Mann-Whitney U test of cand / scale against base.
    """
    from scipy.stats import mannwhitneyu, wilcoxon

    base = np.asarray(base, dtype=np.float64)
    cand = np.asarray(cand, dtype=np.float64)
    if paired:
        d = np.log(cand / base) - np.log(scale)
        if np.all(d == 0):
            return 1.0
        return float(wilcoxon(d, alternative="greater").pvalue)
    c = cand / scale
    if np.all(base == base[0]) and np.all(c == base[0]):
        return 1.0
    return float(mannwhitneyu(c, base, alternative="greater").pvalue)


def compare_rounds(
    baseline: Sequence[Sequence[float]] | np.ndarray,
    candidate: Sequence[Sequence[float]] | np.ndarray,
    *,
    max_slowdown: float = 0.10,
    confidence: float = 0.95,
    n_boot: int = 4000,
    seed: int = 0,
    paired: bool = True,
) -> LatencyVerdict:
    """Decide PASS / FAIL / INCONCLUSIVE from per-round timings (seconds) of baseline and candidate.

    Args:
        baseline, candidate: one sequence of per-call times per round (round i of both sides was
            measured back to back). A flat 1-D array is taken as one value per round.
        max_slowdown: allowed slowdown, 0.10 = candidate may be up to 10% slower.
        confidence: confidence level of the interval; the rank test uses 1 - confidence.
        n_boot: bootstrap resamples.
        seed: bootstrap seed (the decision is reproducible for given timings).
        paired: decide on the per-round ratios (median ratio, Wilcoxon signed-rank), which cancels load
            that drifts between rounds; False decides on the ratio of medians with a Mann-Whitney U test.
            Both figures are reported either way.
    """
    if not 0.5 < confidence < 1.0:
        raise ValueError(f"confidence must be in (0.5, 1), got {confidence}")
    if max_slowdown < 0:
        raise ValueError(f"max_slowdown must be >= 0, got {max_slowdown}")
    b = _medians(baseline)
    c = _medians(candidate)
    if min(len(b), len(c)) < MIN_ROUNDS:
        raise ValueError(f"need at least {MIN_ROUNDS} rounds per side, got {len(b)} and {len(c)}")
    if np.any(b <= 0) or np.any(c <= 0):
        raise ValueError("timings must be positive")
    paired = paired and len(b) == len(c)
    limit = 1.0 + max_slowdown
    ratio_of_medians = float(np.median(c) / np.median(b))
    median_of_ratios = float(np.exp(np.median(np.log(c / b)))) if len(b) == len(c) else None
    slowdown = median_of_ratios if paired else ratio_of_medians
    lo, hi = bootstrap_ratio_ci(b, c, confidence=confidence, n_boot=n_boot, seed=seed, paired=paired)
    p = rank_test(b, c, scale=limit, paired=paired)
    p_any = rank_test(b, c, scale=1.0, paired=paired)
    p_mwu = rank_test(b, c, scale=limit, paired=False)
    alpha = 1.0 - confidence
    noise = _noise(b, c, paired)
    test = "Wilcoxon signed-rank" if paired else "Mann-Whitney U"
    advice = None
    if lo > limit and p < alpha:
        decision = FAIL
        reason = (
            f"candidate is {_pct(slowdown)} slower; {confidence:.0%} CI [{lo:.3f}, {hi:.3f}] is above "
            f"the limit {limit:.3f} and the {test} test is significant (p={p:.3g})"
        )
    elif hi <= limit:
        decision = PASS
        reason = f"slowdown {slowdown:.3f}, {confidence:.0%} CI [{lo:.3f}, {hi:.3f}] is within {limit:.3f}"
    else:
        decision = INCONCLUSIVE
        why = (
            f"CI [{lo:.3f}, {hi:.3f}] straddles the limit {limit:.3f}"
            if lo <= limit
            else f"CI [{lo:.3f}, {hi:.3f}] is above the limit but the {test} test is not significant (p={p:.3g})"
        )
        reason = f"slowdown {slowdown:.3f}; {why} (round-to-round noise {noise:.1%})"
        advice = (
            f"the measurement is too noisy to decide with {len(b)} rounds: raise --rounds "
            f"(e.g. to {suggest_rounds(len(b), lo, hi, limit)}), run on a quieter runner, "
            "or widen --max-slowdown"
        )
    return LatencyVerdict(
        decision=decision,
        slowdown=slowdown,
        ci_low=lo,
        ci_high=hi,
        confidence=confidence,
        threshold=max_slowdown,
        p_value=p,
        p_value_any_slowdown=p_any,
        rounds=int(min(len(b), len(c))),
        baseline_median_ms=float(np.median(b) * 1e3),
        candidate_median_ms=float(np.median(c) * 1e3),
        baseline_round_medians_ms=[float(v * 1e3) for v in b],
        candidate_round_medians_ms=[float(v * 1e3) for v in c],
        noise_cov=noise,
        method=(
            "interleaved rounds, paired (median of per-round ratios, Wilcoxon signed-rank)"
            if paired
            else "rounds, unpaired (ratio of medians, Mann-Whitney U)"
        ),
        reason=reason,
        advice=advice,
        ratio_of_medians=ratio_of_medians,
        median_of_ratios=median_of_ratios,
        p_value_mann_whitney=p_mwu,
    )


def compare_summaries(
    baseline: dict[str, Any],
    candidate: dict[str, Any],
    *,
    max_slowdown: float = 0.10,
    confidence: float = 0.95,
) -> LatencyVerdict:
    """Compare two saved latency summaries (p50_ms, std_ms, n) measured separately on one machine.

    Without the raw samples only an approximate interval is possible: the standard error of a median
    is taken as 1.2533 * std / sqrt(n) (normal approximation) and propagated to the ratio by the delta
    method; a one-sided z-test stands in for the rank test. Separate runs do not cancel load drift, so
    this is weaker than the interleaved comparison and says so in `method`.
    """
    from scipy.stats import norm

    def get(s: dict[str, Any], key: str) -> float:
        if key not in s:
            raise ValueError(f"latency summary has no '{key}'")
        return float(s[key])

    mb, mc = get(baseline, "p50_ms"), get(candidate, "p50_ms")
    sb, sc = get(baseline, "std_ms"), get(candidate, "std_ms")
    nb, nc = max(get(baseline, "n"), 1.0), max(get(candidate, "n"), 1.0)
    if mb <= 0 or mc <= 0:
        raise ValueError("p50_ms must be positive")
    limit = 1.0 + max_slowdown
    ratio = mc / mb
    se_b, se_c = 1.2533 * sb / np.sqrt(nb), 1.2533 * sc / np.sqrt(nc)
    se_log = float(np.sqrt((se_b / mb) ** 2 + (se_c / mc) ** 2))
    z = float(norm.ppf(0.5 + confidence / 2))
    lo, hi = float(ratio * np.exp(-z * se_log)), float(ratio * np.exp(z * se_log))
    if se_log > 0:
        p = float(norm.sf((np.log(ratio) - np.log(limit)) / se_log))
        p_any = float(norm.sf(np.log(ratio) / se_log))
    else:
        p = 0.0 if ratio > limit else 1.0
        p_any = 0.0 if ratio > 1 else 1.0
    alpha = 1.0 - confidence
    advice = None
    if lo > limit and p < alpha:
        decision, reason = (
            FAIL,
            f"candidate p50 is {_pct(ratio)} slower; approx. CI [{lo:.3f}, {hi:.3f}] above {limit:.3f}",
        )
    elif hi <= limit:
        decision, reason = PASS, f"p50 ratio {ratio:.3f}, approx. CI [{lo:.3f}, {hi:.3f}] within {limit:.3f}"
    else:
        decision = INCONCLUSIVE
        reason = f"p50 ratio {ratio:.3f}, approx. CI [{lo:.3f}, {hi:.3f}] straddles {limit:.3f}"
        advice = "measure longer (more iterations) or compare the models directly with --baseline/--candidate"
    return LatencyVerdict(
        decision=decision,
        slowdown=ratio,
        ci_low=lo,
        ci_high=hi,
        confidence=confidence,
        threshold=max_slowdown,
        p_value=p,
        p_value_any_slowdown=p_any,
        rounds=0,
        baseline_median_ms=mb,
        candidate_median_ms=mc,
        baseline_round_medians_ms=[],
        candidate_round_medians_ms=[],
        noise_cov=float(max(sb / mb, sc / mc)),
        method="saved summaries (approximate, not interleaved)",
        reason=reason,
        advice=advice,
    )


def suggest_rounds(rounds: int, lo: float, hi: float, limit: float) -> int:
    """Rounds that would shrink the interval enough to clear the limit (CI width ~ 1/sqrt(rounds))."""
    mid = (lo + hi) / 2
    half = max((hi - lo) / 2, 1e-9)
    room = abs(mid - limit)
    if room < 1e-3:
        return rounds * 4
    factor = min(max((half / room) ** 2, 2.0), 16.0)
    return int(np.ceil(rounds * factor))


def _medians(x: Sequence[Sequence[float]] | np.ndarray) -> np.ndarray:
    arr = x if isinstance(x, np.ndarray) else None
    if arr is not None and arr.ndim == 1:
        return arr.astype(np.float64)
    return round_medians(x)


def _noise(b: np.ndarray, c: np.ndarray, paired: bool) -> float:
    """Round-to-round coefficient of variation: of the paired log ratios, or of each side."""
    if paired and len(b) == len(c):
        return float(np.std(np.log(c / b), ddof=1))
    return float(max(np.std(b, ddof=1) / np.mean(b), np.std(c, ddof=1) / np.mean(c)))


def _pct(ratio: float) -> str:
    return f"{(ratio - 1) * 100:.1f}%"
