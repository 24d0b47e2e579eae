"""The speed guard: float vs quantized on the target, interleaved, with the statistics `compress check` uses.

Both ONNX files are loaded into one process and timed alternately in rounds on the same seeded input
(`compress.check.gate.measure_ab`); the verdict is read from the paired per-round ratios and their
bootstrap interval (`compress.check.stats`). A quantized model is `faster` only when the whole 95%
interval of its speedup is above 1; `slower` when the rank test says it is slower; otherwise
`not significantly faster`.

Each model's figure for a round is the 10th percentile of its calls in that round, not their median:
on a shared CPU (more runnable threads than cores) a call is delayed whenever one of its intra-op
threads is descheduled, which hits a long float call far more often than a short INT8 one. On the
2-core machine with load ~6, the digits ResNet-18 (32 px) measured 10-12x by per-round medians,
3-4x by the 10th percentile, 1.16x when the machine was quiet: the median compared a delayed float
model with an undelayed INT8 one. Delays only add time, so a low quantile is what the model costs.
Contention still biases the ratio towards INT8 (memory bandwidth and caches shared with other jobs
slow a weight-heavy float model more): with two benchmarks beside it (load 2-4 on 2 cores) the check
read mobilenet_v3_large 1.18x, efficientnet_b0 1.25x, regnet_y_400mf 1.10x, the same files 1.00x /
1.00x / 0.79x on the quiet machine. So the CPU time other processes (and the hypervisor's steal) took
during the measurement is measured from /proc/stat minus this process's own CPU time; when it is
over a quarter of the machine (`BUSY_SHARE`; elsewhere: a load average above the CPU count) the
figure is recorded as from a busy machine, named in its description, and a `faster` verdict becomes
`not significantly faster`: a busy machine can show a model slower, never faster.

The guard (`Int8Config.require_speedup`, on by default wherever the check runs) fails only on
`slower`: an interval that straddles 1.0 says the measurement cannot tell, not that INT8 is slower,
so the int8 method measures once more with twice the rounds and then reports such a model as "not
measurably faster" (console, manifest, report) without failing. This is the CI rule of
`compress check`: fail only on a slowdown shown with confidence.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np

FASTER = "faster"
SLOWER = "slower"
UNDECIDED = "not significantly faster"


ROUND_QUANTILE = 0.1  # a round's figure: this quantile of its calls (delays from other jobs only add time)
BUSY_SHARE = 0.25  # other processes took more than this share of the machine's CPU time: a busy machine


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
    from compress.check.gate import CheckConfig, interleaved_times

    backend = get_backend("onnxruntime")
    options = BackendOptions(threads=threads)
    base, cand = backend.load(float_path, options), backend.load(quant_path, options)
    config = CheckConfig(
        rounds=rounds, iters=iters, min_round_s=min_round_s, warmup_s=0.1, max_slowdown=0.0, threads=threads, seed=seed
    )
    load_before, cpu_before = machine_load(), cpu_sample()
    times = interleaved_times(base, cand, tuple(sample_shape), config)
    others = other_cpu_share(cpu_before, cpu_sample())
    load = max(load_before, machine_load())
    speed = speedup_from_rounds(times[0], times[1], seed=seed)
    speed.update({"threads": cand.threads, **_load_record(load, others)})
    if speed["busy_machine"] and speed["verdict"] == FASTER:
        speed["verdict"] = UNDECIDED
    return speed


def speedup_from_rounds(
    float_rounds: list[np.ndarray], quant_rounds: list[np.ndarray], *, seed: int = 0
) -> dict[str, Any]:
    """Speedup, interval and verdict from per-call times (seconds) of interleaved rounds.

    Each round counts by its `ROUND_QUANTILE` call; the paired per-round ratios, their bootstrap
    interval and the signed-rank test are those of `compress check` (`compare_rounds`).
    """
    from compress.check.stats import FAIL, compare_rounds

    def figures(rounds: list[np.ndarray]) -> np.ndarray:
        return np.asarray([np.quantile(np.asarray(r, dtype=np.float64), ROUND_QUANTILE) for r in rounds])

    v = compare_rounds(figures(float_rounds), figures(quant_rounds), max_slowdown=0.0, seed=seed)
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
        "method": f"{v.method}; each round's figure: its p{round(100 * ROUND_QUANTILE)} call",
    }


def machine_load() -> float:
    """1-minute load average (runnable threads), 0.0 where the OS has none."""
    try:
        return float(os.getloadavg()[0])
    except (AttributeError, OSError):
        return 0.0


CpuSample = tuple[float, float | None, float]


def cpu_sample() -> CpuSample:
    """(monotonic seconds, CPU seconds all processes used since boot, steal included (None without
    /proc/stat), CPU seconds this process used, all its threads)."""
    import time

    wall = time.monotonic()
    own = sum(os.times()[:2])
    try:
        with open("/proc/stat", encoding="ascii") as f:
            fields = f.readline().split()
        # cpu user nice system idle iowait irq softirq steal ...: all but idle and iowait were busy
        ticks = [int(v) for v in fields[1:9]]
        busy = (sum(ticks) - ticks[3] - ticks[4]) / os.sysconf("SC_CLK_TCK")
    except (OSError, ValueError, IndexError, AttributeError):
        busy = None
    return wall, busy, own


def other_cpu_share(before: CpuSample, after: CpuSample) -> float | None:
    """Share (0-1) of the machine's CPU time between two `cpu_sample`s that other processes took; None if unknown."""
    wall = after[0] - before[0]
    if before[1] is None or after[1] is None or wall <= 0:
        return None
    others = (after[1] - before[1]) - (after[2] - before[2])
    return min(1.0, max(0.0, others / (wall * (os.cpu_count() or 1))))


def _load_record(load: float, others: float | None = None) -> dict[str, Any]:
    cpus = os.cpu_count() or 1
    busy = others > BUSY_SHARE if others is not None else load > cpus
    record = {"machine_load": round(load, 2), "cpus": cpus, "busy_machine": busy}
    if others is not None:
        record["other_cpu_share"] = round(others, 3)
    return record


def describe(speed: dict[str, Any]) -> str:
    """'1.52x faster than float (95% CI 1.41-1.60)' and the like."""
    lo, hi = speed["speedup_ci"]
    busy = ""
    if speed.get("busy_machine"):
        took = speed.get("other_cpu_share")
        busy = (
            f", busy machine: other processes took {took:.0%} of {speed['cpus']} CPUs"
            if took is not None
            else f", busy machine: load {speed['machine_load']:.1f} on {speed['cpus']} CPUs"
        )
    ci = f"({speed['confidence']:.0%} CI {lo:.2f}-{hi:.2f}, {speed['rounds']} interleaved rounds{busy})"
    if speed["verdict"] == FASTER:
        return f"{speed['speedup']:.2f}x faster than float {ci}"
    if speed["verdict"] == SLOWER:
        return f"SLOWER than float: {speed['speedup']:.2f}x {ci}"
    if speed.get("busy_machine"):
        why = "a busy machine can show INT8 slower, not faster: measure again on a quiet one"
        return f"not measurably faster than float: {speed['speedup']:.2f}x {ci}; {why}"
    return f"not measurably faster than float: {speed['speedup']:.2f}x {ci}; inconclusive, not shown slower"


def slow_ops(report: dict[str, Any], top: int = 5) -> list[str]:
    """From a runtime report: the compute nodes left in float, then the op types that take the most time."""
    out = list(report.get("float_compute_nodes", []))[:top]
    shares = report.get("time_share", {})
    out += [f"{op} {share:.0%} of the time" for op, share in list(shares.items())[:3]]
    return out
