"""False-alarm rate and detection rate of `compress check`'s latency gate on this machine.

1. False alarms: the check of a model against itself, N times (0 FAILs expected).
2. Detection: a candidate made ~20% slower must FAIL in >= 19 of 20 runs. The candidate is the same
   net with more 32-channel conv layers (deeper rather than wider: ONNX Runtime's conv kernels work in
   blocks of 8/16 channels, so a few extra channels make a step of 2x, not 20%); the depth is
   calibrated here by a long interleaved measurement so that the true slowdown is close to 20%.
   The limit stays at the default 10%, so the candidate is 2x the allowed slowdown.

Only the latency gate is counted (params/MACs/size are not gated here, or the wider model would be
caught by them trivially). Writes every decision, the slowdown estimates, seconds per check, the
measured true ratio, the machine's load average and library versions.

    python benchmarks/check_false_alarm.py --out results/check_false_alarm.json
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
from collections import Counter
from pathlib import Path

import numpy as np
import torch
from torch import nn

from compress.check import CheckConfig
from compress.check.gate import measure_ab
from compress.env import environment

SHAPE = (3, 32, 32)


WIDTH = 32


def net(depth: int) -> nn.Module:
    """A stride-2 stem then `depth` 3x3 conv layers of 32 channels at 16x16, pooling, a classifier."""
    torch.manual_seed(0)
    layers: list[nn.Module] = [nn.Conv2d(3, WIDTH, 3, stride=2, padding=1), nn.ReLU()]
    for _ in range(depth):
        layers += [nn.Conv2d(WIDTH, WIDTH, 3, padding=1), nn.ReLU()]
    layers += [nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(WIDTH, 10)]
    return nn.Sequential(*layers).eval()


def export(depth: int, path: Path) -> Path:
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(
            net(depth),
            (torch.rand(1, *SHAPE),),
            str(path),
            dynamo=False,
            opset_version=17,
            input_names=["input"],
            output_names=["output"],
        )
    return path


def sessions(*paths: Path, threads: int):
    from compress.backends import get_backend
    from compress.backends.base import BackendOptions

    backend = get_backend("onnxruntime")
    return [backend.load(p, BackendOptions("cpu", threads)) for p in paths]


def true_ratio(base: Path, cand: Path, threads: int, rounds: int) -> dict:
    """A long interleaved measurement of the slowdown (paired median of per-round ratios)."""
    b, c = sessions(base, cand, threads=threads)
    cfg = CheckConfig(rounds=rounds, iters=30, min_round_s=0.05, threads=threads, max_slowdown=0.1)
    v = measure_ab(b, c, SHAPE, cfg)
    return {
        "ratio": v.slowdown,
        "ci": [v.ci_low, v.ci_high],
        "ratio_of_medians": v.ratio_of_medians,
        "rounds": rounds,
        "baseline_ms": v.baseline_median_ms,
        "candidate_ms": v.candidate_median_ms,
    }


def checks(base: Path, cand: Path, n: int, cfg: CheckConfig) -> dict:
    from compress.check import run_check

    decisions, slowdowns, seconds, lows, highs = [], [], [], [], []
    for _ in range(n):
        t0 = time.perf_counter()
        r = run_check(base, cand, cfg)
        seconds.append(time.perf_counter() - t0)
        decisions.append(r.latency.decision)
        slowdowns.append(r.latency.slowdown)
        lows.append(r.latency.ci_low)
        highs.append(r.latency.ci_high)
    return {
        "runs": n,
        "decisions": dict(Counter(decisions)),
        "slowdowns": slowdowns,
        "ci_low": lows,
        "ci_high": highs,
        "seconds_per_check": {
            "mean": float(np.mean(seconds)),
            "min": float(np.min(seconds)),
            "max": float(np.max(seconds)),
        },
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", type=Path, default=Path("results/check_false_alarm.json"))
    ap.add_argument("--runs", type=int, default=20)
    ap.add_argument("--base-depth", type=int, default=10)
    ap.add_argument("--depths", default="11,12,13", help="candidate depths tried by the calibration")
    ap.add_argument("--target", type=float, default=1.20)
    ap.add_argument("--rounds", type=int, default=20)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--unpaired", action="store_true", help="decide on the ratio of medians (Mann-Whitney U)")
    args = ap.parse_args()
    start = time.perf_counter()
    load_before = os.getloadavg()
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        base = export(args.base_depth, tmp / "base.onnx")
        calibration = {}
        for d in (int(v) for v in args.depths.split(",")):
            calibration[d] = true_ratio(base, export(d, tmp / f"d{d}.onnx"), args.threads, rounds=30)["ratio"]
            print(f"calibration: depth {d} -> slowdown {calibration[d]:.3f}", flush=True)
        depth = min(calibration, key=lambda d: abs(calibration[d] - args.target))
        cand = tmp / f"d{depth}.onnx"
        truth_before = true_ratio(base, cand, args.threads, rounds=100)
        print(f"candidate depth {depth}: true slowdown {truth_before['ratio']:.3f}", flush=True)
        cfg = CheckConfig(
            rounds=args.rounds,
            threads=args.threads,
            max_slowdown=0.10,
            max_accuracy_drop=None,
            max_params_increase=None,
            max_macs_increase=None,
            max_size_increase=None,
            paired=not args.unpaired,
        )
        same = checks(base, base, args.runs, cfg)
        print(f"same model: {same['decisions']}", flush=True)
        slower = checks(base, cand, args.runs, cfg)
        print(f"~20% slower: {slower['decisions']}", flush=True)
        truth_after = true_ratio(base, cand, args.threads, rounds=100)
    result = {
        "benchmark": "check_false_alarm",
        "design": {
            "rounds": cfg.rounds,
            "iters": cfg.iters,
            "min_round_s": cfg.min_round_s,
            "threads": cfg.threads,
            "max_slowdown": cfg.max_slowdown,
            "confidence": cfg.confidence,
            "paired": cfg.paired,
            "input": [1, *SHAPE],
            "width": WIDTH,
            "base_depth": args.base_depth,
            "candidate_depth": depth,
        },
        "calibration": {str(k): v for k, v in calibration.items()},
        "true_slowdown": {"before": truth_before, "after": truth_after},
        "false_alarm": {**same, "fails": same["decisions"].get("fail", 0)},
        "detection": {**slower, "caught": slower["decisions"].get("fail", 0)},
        "loadavg": {"before": load_before, "after": os.getloadavg()},
        "note": "machine shared with other workers while measuring (see loadavg vs logical_cores)",
        "seconds_total": time.perf_counter() - start,
        "environment": environment(),
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps({k: result[k] for k in ("false_alarm", "detection")}, default=str)[:600])
    print(f"wrote {args.out}")
    print(
        f"false alarms {result['false_alarm']['fails']}/{args.runs}, caught {result['detection']['caught']}/"
        f"{args.runs}, true slowdown {truth_before['ratio']:.3f} / {truth_after['ratio']:.3f}"
    )


if __name__ == "__main__":
    main()
