"""The speed guard's figures from interleaved rounds: what a call costs, not how often other jobs delayed it."""

from __future__ import annotations

import numpy as np

from compress.quantize import speed


def _rounds(cost_s: float, delayed: float, rng: np.random.Generator, rounds: int = 8, calls: int = 20):
    """Per-call times: `cost_s` plus 0-1% jitter, a fraction `delayed` of the calls also waits 4-12 ms
    (one intra-op thread descheduled on a shared CPU)."""
    out = []
    for _ in range(rounds):
        t = cost_s * (1 + 0.01 * rng.random(calls))
        hit = rng.random(calls) < delayed
        out.append(t + hit * rng.uniform(4e-3, 12e-3, calls))
    return out


def test_speedup_counts_what_a_call_costs_when_other_jobs_delay_most_float_calls():
    rng = np.random.default_rng(0)
    # true costs 0.6 ms vs 0.5 ms (1.2x); a long float call is delayed more often than a short INT8 one
    fp, q8 = _rounds(0.6e-3, 0.6, rng), _rounds(0.5e-3, 0.05, rng)
    s = speed.speedup_from_rounds(fp, q8)
    assert 1.15 < s["speedup"] < 1.25, s  # per-round medians would read ~10x
    assert s["speedup_ci"][0] <= s["speedup"] <= s["speedup_ci"][1]
    assert s["verdict"] == speed.FASTER and abs(s["float_ms"] - 0.6) < 0.01


def test_speedup_verdicts_from_rounds():
    rng = np.random.default_rng(1)
    slower = speed.speedup_from_rounds(_rounds(0.5e-3, 0.0, rng), _rounds(0.8e-3, 0.0, rng))
    assert slower["verdict"] == speed.SLOWER and 0.6 < slower["speedup"] < 0.65
    same = speed.speedup_from_rounds(_rounds(0.5e-3, 0.0, rng), _rounds(0.5e-3, 0.0, rng))
    assert same["verdict"] == speed.UNDECIDED


def test_a_busy_machine_is_named_with_the_figure(monkeypatch):
    base = {"speedup": 2.0, "speedup_ci": [1.8, 2.2], "confidence": 0.95, "verdict": speed.FASTER, "rounds": 8}
    monkeypatch.setattr(speed.os, "cpu_count", lambda: 2)
    busy = {**base, **speed._load_record(6.3)}
    assert busy["busy_machine"] and "busy machine: load 6.3 on 2 CPUs" in speed.describe(busy)
    quiet = {**base, **speed._load_record(1.0)}
    assert not quiet["busy_machine"] and "busy" not in speed.describe(quiet)


def test_other_processes_cpu_share_is_what_the_machine_used_beyond_this_process(monkeypatch):
    monkeypatch.setattr(speed.os, "cpu_count", lambda: 2)
    # 10 s on 2 CPUs = 20 CPU-seconds; the machine used 14 of them, this process 4: others took 10 of 20
    assert speed.other_cpu_share((0.0, 100.0, 1.0), (10.0, 114.0, 5.0)) == 0.5
    assert speed.other_cpu_share((0.0, 100.0, 1.0), (10.0, 104.5, 5.0)) == 0.025
    assert speed.other_cpu_share((0.0, None, 1.0), (10.0, None, 5.0)) is None
    wall, busy, own = speed.cpu_sample()
    assert own > 0 and (busy is None or busy >= own)


def test_a_busy_machine_cannot_show_int8_faster(monkeypatch, tmp_path):
    """Contention slows float more than INT8: on a busy machine `faster` becomes `not significantly faster`."""
    rng = np.random.default_rng(2)
    monkeypatch.setattr(speed.os, "cpu_count", lambda: 2)
    rounds = [_rounds(0.6e-3, 0.0, rng), _rounds(0.3e-3, 0.0, rng)]  # a clear 2x
    samples = iter([(0.0, 100.0, 1.0), (10.0, 114.0, 5.0)])  # others took half the machine
    monkeypatch.setattr(speed, "cpu_sample", lambda: next(samples))
    monkeypatch.setattr("compress.check.gate.interleaved_times", lambda *a, **k: rounds)

    class Session:
        threads = 2

    class Backend:
        def load(self, path, options):
            return Session()

    monkeypatch.setattr("compress.backends.get_backend", lambda name: Backend())
    busy = speed.measure_speedup(tmp_path / "f.onnx", tmp_path / "q.onnx", (3, 8, 8))
    assert busy["busy_machine"] and busy["other_cpu_share"] == 0.5
    assert busy["verdict"] == speed.UNDECIDED and 1.9 < busy["speedup"] < 2.1
    assert "other processes took 50% of 2 CPUs" in speed.describe(busy) and "quiet" in speed.describe(busy)
    samples = iter([(0.0, 100.0, 1.0), (10.0, 104.5, 5.0)])
    assert speed.measure_speedup(tmp_path / "f.onnx", tmp_path / "q.onnx", (3, 8, 8))["verdict"] == speed.FASTER
