"""The CI regression gate: interleaved A/B latency statistics, deterministic gates, CI outputs, history.

Exit codes of `compress check`: 0 pass, 1 fail, 3 inconclusive (2: usage or user error).
"""

from compress.check.gate import (
    EXIT_FAIL,
    EXIT_INCONCLUSIVE,
    EXIT_PASS,
    CheckConfig,
    CheckResult,
    Gate,
    compare_bench_json,
    run_check,
)
from compress.check.stats import FAIL, INCONCLUSIVE, PASS, SKIPPED, LatencyVerdict, compare_rounds

__all__ = [
    "EXIT_FAIL",
    "EXIT_INCONCLUSIVE",
    "EXIT_PASS",
    "FAIL",
    "INCONCLUSIVE",
    "PASS",
    "SKIPPED",
    "CheckConfig",
    "CheckResult",
    "Gate",
    "LatencyVerdict",
    "compare_bench_json",
    "compare_rounds",
    "run_check",
]
