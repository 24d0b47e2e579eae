"""Latency measurement a CI can trust: warm-up by time and count, then >= N iterations and >= T seconds.

The timed loop does nothing but call the runner and read the clock, so the harness adds no overhead
of its own (see benchmarks/harness_overhead.py).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np


@dataclass
class LatencyConfig:
    """How long to measure.

    Attributes:
        warmup_iters, warmup_s: warm-up lasts at least this many calls and this many seconds.
        min_iters, min_time_s: measurement lasts at least this many calls and this many seconds.
        max_iters: hard cap on measured calls.
    """

    warmup_iters: int = 10
    warmup_s: float = 0.2
    min_iters: int = 50
    min_time_s: float = 1.0
    max_iters: int = 100_000

    def __post_init__(self) -> None:
        if min(self.warmup_iters, self.min_iters) < 0 or self.max_iters < 1 or min(self.warmup_s, self.min_time_s) < 0:
            raise ValueError("latency settings must be non-negative (and max_iters at least 1)")


def measure(run: Callable[[], object], config: LatencyConfig | None = None, *, timer: Any = None) -> np.ndarray:
    """Per-call times in seconds of `run`, after warm-up.

    `timer` comes from the backend (`Session.timer()`): a `compress.backends.base.Timer` such as the
    CUDA-event timer of the GPU backends. Without one (or with the plain wall-clock timer) the loop
    reads `time.perf_counter` inline, adding nothing to each call. Warm-up and the minimum duration
    are always counted in host wall time."""
    config = config or LatencyConfig()
    if timer is not None and getattr(timer, "name", "perf_counter") != "perf_counter":
        return _measure_with(run, config, timer)
    clock = time.perf_counter
    start, n = clock(), 0
    while n < config.warmup_iters or clock() - start < config.warmup_s:
        run()
        n += 1
    times = []
    append = times.append
    begin = clock()
    while len(times) < config.max_iters:
        t0 = clock()
        run()
        t1 = clock()
        append(t1 - t0)
        if len(times) >= config.min_iters and t1 - begin >= config.min_time_s:
            break
    return np.asarray(times)


def _measure_with(run: Callable[[], object], config: LatencyConfig, timer: Any) -> np.ndarray:
    clock = time.perf_counter
    start, n = clock(), 0
    while n < config.warmup_iters or clock() - start < config.warmup_s:
        timer(run)
        n += 1
    timer.reset()
    times: list[float] = []
    begin = clock()
    while len(times) < config.max_iters:
        times.append(timer(run))
        if len(times) >= config.min_iters and clock() - begin >= config.min_time_s:
            break
    return np.asarray(times)


def summarize(times_s: np.ndarray, batch_size: int = 1) -> dict[str, float]:
    """n, mean, std, CoV, min, percentiles, max (milliseconds) and throughput (samples/s)."""
    ms = np.asarray(times_s, dtype=np.float64) * 1e3
    mean = float(ms.mean())
    std = float(ms.std(ddof=1)) if len(ms) > 1 else 0.0
    p = np.percentile(ms, [50, 90, 95, 99])
    return {
        "n": int(len(ms)),
        "batch_size": batch_size,
        "mean_ms": mean,
        "std_ms": std,
        "cov": std / mean if mean else 0.0,
        "min_ms": float(ms.min()),
        "p50_ms": float(p[0]),
        "p90_ms": float(p[1]),
        "p95_ms": float(p[2]),
        "p99_ms": float(p[3]),
        "max_ms": float(ms.max()),
        "throughput": batch_size * 1e3 / mean if mean else 0.0,
    }
