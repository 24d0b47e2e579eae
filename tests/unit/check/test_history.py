"""The SQLite history: add / query / trend / plot round trip, and machine-fingerprint separation."""

from __future__ import annotations

import copy

import pytest

from compress.check import history
from compress.env import environment, fingerprint
from compress.errors import CompressError


def result(p50: float, *, cpu: str | None = None, accuracy: float = 0.9, ts: str = "2025-01-01T00:00:00") -> dict:
    env = copy.deepcopy(environment())
    if cpu:
        env["machine"]["cpu"] = cpu
    return {
        "model": "runs/a/model.onnx",
        "latency": {
            "n": 200,
            "p50_ms": p50,
            "mean_ms": p50 * 1.05,
            "std_ms": 0.01 * p50,
            "p90_ms": p50 * 1.1,
            "p99_ms": p50 * 1.3,
            "cov": 0.02,
            "throughput": 1e3 / p50,
        },
        "metrics": {"accuracy": accuracy},
        "bytes": 12345,
        "environment": env,
        "timestamp": ts,
        "runtime": {"backend": "onnxruntime"},
    }


def test_add_query_trend_plot_round_trip(tmp_path):
    db = tmp_path / "h" / "history.sqlite"
    a = history.add(db, result(1.0, ts="2025-01-01T00:00:00"), model="net", commit="abc1234")
    b = history.add(db, result(1.2, ts="2025-01-02T00:00:00"), model="net", commit="def5678")
    c = history.add(db, result(5.0, cpu="Other CPU", ts="2025-01-03T00:00:00"), model="net", commit="def5678")
    assert (a, b, c) == (1, 2, 3)
    rows = history.query(db, model="net")
    assert [r["p50_ms"] for r in rows] == [1.0, 1.2, 5.0]
    assert rows[0]["git_commit"] == "abc1234" and rows[0]["metric_name"] == "accuracy"
    assert rows[0]["bytes"] == 12345 and rows[0]["versions"]["onnxruntime"]
    assert rows[0]["result"]["latency"]["p99_ms"] == pytest.approx(1.3)
    here = history.query(db, fingerprint=fingerprint())
    assert [r["id"] for r in here] == [1, 2]
    assert [r["id"] for r in history.query(db, commit="def")] == [2, 3]

    lines = history.trend(rows)
    assert lines[0]["change"] is None
    assert lines[1]["change"] == pytest.approx(0.2)
    assert lines[2]["change"] is None  # another machine: never compared with the first two
    png = history.plot(rows, tmp_path / "trend.png")
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and png.stat().st_size > 5000


def test_compare_only_within_one_machine(tmp_path):
    db = tmp_path / "h.sqlite"
    history.add(db, result(1.0), model="net")
    history.add(db, result(1.5), model="net")
    history.add(db, result(1.0, cpu="Other CPU"), model="net")
    r = history.compare(db, 1, 2)
    assert r.gate("latency").status == "fail" and r.baseline == "#1"
    with pytest.raises(CompressError, match="different machines"):
        history.compare(db, 1, 3)
    with pytest.raises(CompressError, match="no result with id 9"):
        history.get(db, 9)


def test_results_without_machine_are_refused_unless_this_machine(tmp_path):
    db = tmp_path / "h.sqlite"
    bare = {"model": "m", "latency": {"p50_ms": 1.0, "std_ms": 0.1, "n": 10}}
    with pytest.raises(CompressError, match="records no machine"):
        history.add(db, bare)
    row = history.add(db, bare, assume_this_machine=True)
    assert history.get(db, row)["fingerprint"] == fingerprint()


def test_bad_inputs(tmp_path):
    (tmp_path / "junk.sqlite").write_bytes(b"not a database at all" * 100)
    with pytest.raises(CompressError, match="not a history database"):
        history.query(tmp_path / "junk.sqlite")
    with pytest.raises(CompressError, match="unknown figure"):
        history.trend([], "latency")
    with pytest.raises(CompressError, match="names no model"):
        history.add(tmp_path / "h.sqlite", {k: v for k, v in result(1.0).items() if k != "model"})
    with pytest.raises(CompressError, match="nothing|no stored result"):
        history.plot([], tmp_path / "x.png")
    assert not (tmp_path / "h.sqlite").exists()  # a refused result creates nothing
