"""The speed guard: float vs quantized on the target, interleaved, with the statistics `compress check` uses.

Both ONNX files are loaded into one process and timed alternately in rounds on the same seeded input
(`compress.check.gate.measure_ab`); the verdict is read from the paired per-round ratios and their
bootstrap interval (`compress.check.stats`). A quantized model is `faster` only when the whole 95%
interval of its speedup is above 1; `slower` when the rank test says it is slower; otherwise
`not significantly faster`.

The guard (`Int8Config.require_speedup`, on by default wherever the check runs) fails only on
`slower`: an interval that straddles 1.0 says the measurement cannot tell, not that INT8 is slower,
so the int8 method measures once more with twice the rounds and then reports such a model as "not
measurably faster" (console, manifest, report) without failing. This is the CI rule of
`compress check`: fail only on a slowdown shown with confidence.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

FASTER = "faster"
SLOWER = "slower"
UNDECIDED = "not significantly faster"


def measure_speedup(
    float_path: str | Path,
    quant_path: str | Path,
    sample_shape: tuple[int, ...],
    *,
    rounds: int = 8,
    iters: int = 10,
    min_round_s: float = 0.05,
    threads: int = 0,
    seed: int = 0,
) -> dict[str, Any]:
    """Speedup of `quant_path` over `float_path` on ONNX Runtime CPU (batch 1), with its interval and verdict."""
    from compress.backends import get_backend
    from compress.backends.base import BackendOptions
    from compress.check.gate import CheckConfig, measure_ab
    from compress.check.stats import FAIL

    backend = get_backend("onnxruntime")
    options = BackendOptions(threads=threads)
    base, cand = backend.load(float_path, options), backend.load(quant_path, options)
    config = CheckConfig(
        rounds=rounds, iters=iters, min_round_s=min_round_s, warmup_s=0.1, max_slowdown=0.0, threads=threads, seed=seed
    )
    v = measure_ab(base, cand, tuple(sample_shape), config)
    speedup, lo, hi = 1.0 / v.slowdown, 1.0 / v.ci_high, 1.0 / v.ci_low
    verdict = FASTER if lo > 1.0 else SLOWER if v.decision == FAIL else UNDECIDED
    return {
        "speedup": speedup,
        "speedup_ci": [lo, hi],
        "confidence": v.confidence,
        "verdict": verdict,
        "float_ms": v.baseline_median_ms,
        "quantized_ms": v.candidate_median_ms,
        "rounds": v.rounds,
        "method": v.method,
        "threads": cand.threads,
    }


def describe(speed: dict[str, Any]) -> str:
    """'1.52x faster than float (95% CI 1.41-1.60)' and the like."""
    lo, hi = speed["speedup_ci"]
    ci = f"({speed['confidence']:.0%} CI {lo:.2f}-{hi:.2f}, {speed['rounds']} interleaved rounds)"
    if speed["verdict"] == FASTER:
        return f"{speed['speedup']:.2f}x faster than float {ci}"
    if speed["verdict"] == SLOWER:
        return f"SLOWER than float: {speed['speedup']:.2f}x {ci}"
    return f"not measurably faster than float: {speed['speedup']:.2f}x {ci}; inconclusive, not shown slower"


def slow_ops(report: dict[str, Any], top: int = 5) -> list[str]:
    """From a runtime report: the compute nodes left in float, then the op types that take the most time."""
    out = list(report.get("float_compute_nodes", []))[:top]
    shares = report.get("time_share", {})
    out += [f"{op} {share:.0%} of the time" for op, share in list(shares.items())[:3]]
    return out
