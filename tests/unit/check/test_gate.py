"""The gate end to end on tiny real ONNX models, and its CI outputs."""

from __future__ import annotations

import json
import xml.etree.ElementTree as ET

import pytest

from compress.check import FAIL, PASS, SKIPPED, CheckConfig, run_check
from compress.check.gate import compare_bench_json, metric_gate
from compress.check.report import to_junit, to_markdown, write_outputs
from compress.errors import CompressError, DataError, RecipeError

FAST = dict(rounds=8, iters=5, min_round_s=0.0, warmup=1, warmup_s=0.05, threads=1, n_boot=1000)


def test_identical_model_passes(models, digits8):
    cfg = CheckConfig(max_slowdown=3.0, **FAST)  # a tiny model's timings on a shared runner are ~30% noise
    r = run_check(models["small"], models["small_copy"], cfg, data=digits8)
    assert r.status == PASS and r.exit_code == 0
    assert {g.name: g.status for g in r.gates} == {
        "latency": PASS,
        "accuracy": PASS,
        "params": PASS,
        "macs": PASS,
        "size": PASS,
    }
    assert r.gate("params").change == 0.0 and r.gate("accuracy").change == 0.0
    assert r.latency.rounds == 8 and len(r.latency.baseline_round_medians_ms) == 8
    assert r.runtime["backend"] == "onnxruntime"


def test_much_wider_model_fails(models, digits8, tmp_path):
    r = run_check(models["small"], models["wide"], CheckConfig(**FAST), data=digits8)
    assert r.status == FAIL and r.exit_code == 1
    params = r.gate("params")
    assert params.status == FAIL and params.candidate > 8 * params.baseline
    assert r.gate("macs").status == FAIL and r.gate("size").status == FAIL
    assert r.gate("latency").status != PASS  # 64 vs 8 channels is never within 10%
    assert r.latency.slowdown > 1.5

    paths = write_outputs(r, json_path=tmp_path / "c.json", junit=tmp_path / "c.xml", summary=tmp_path / "s.md")
    assert [p.name for p in paths] == ["c.json", "c.xml", "s.md"]
    data = json.loads((tmp_path / "c.json").read_text())
    assert data["status"] == "fail" and data["exit_code"] == 1
    assert data["latency"]["ci_low"] <= data["latency"]["slowdown"] <= data["latency"]["ci_high"]
    assert "machine" in data["environment"] and "onnxruntime" in data["environment"]["versions"]

    suite = ET.parse(tmp_path / "c.xml").getroot().find("testsuite")
    cases = {tc.get("name"): tc for tc in suite.findall("testcase")}
    assert set(cases) == {"latency", "accuracy", "params", "macs", "size"}
    failed = {n for n, tc in cases.items() if tc.find("failure") is not None}
    assert {"params", "macs", "size"} <= failed and "accuracy" not in failed
    assert int(suite.get("failures")) == len(failed) and int(suite.get("tests")) == 5
    md = (tmp_path / "s.md").read_text()
    assert "❌ FAIL" in md and "| params | ❌ FAIL |" in md


def test_macs_match_torch_count(models, make_tiny_cnn):
    from compress.analysis import count_macs
    from compress.check.structure import onnx_macs

    assert onnx_macs(models["wide"])["macs"] == count_macs(make_tiny_cnn(64), (3, 8, 8))


def test_without_data_accuracy_is_skipped(models):
    r = run_check(models["small"], models["small_copy"], CheckConfig(max_slowdown=None, **FAST))
    assert r.gate("accuracy").status == SKIPPED and r.gate("latency").status == SKIPPED
    assert r.status == PASS


def test_dynamic_input_needs_data_and_matching_shapes(tmp_path, make_qdq, models, digits8):
    make_qdq(tmp_path / "dyn.onnx", dynamic_hw=True)
    with pytest.raises(DataError, match="dynamic input shape"):
        run_check(tmp_path / "dyn.onnx", tmp_path / "dyn.onnx", CheckConfig(**FAST))
    make_qdq(tmp_path / "q.onnx")
    with pytest.raises(DataError, match="different inputs"):
        run_check(models["small"], tmp_path / "q.onnx", CheckConfig(**FAST))
    with pytest.raises(CompressError, match="not found"):
        run_check(tmp_path / "missing.onnx", models["small"], CheckConfig(**FAST))


def test_sparsity_expectation(models, digits8):
    cfg = CheckConfig(max_slowdown=None, expect_sparsity="2:4", max_accuracy_drop=None, **FAST)
    kept = run_check(models["sparse"], models["sparse"], cfg, data=digits8)
    assert kept.gate("sparsity 2:4").status == PASS
    assert kept.gate("sparsity 2:4").candidate == 2  # conv2 (8 in) and the linear layer; conv1 has 3 inputs
    lost = run_check(models["sparse"], models["small"], cfg, data=digits8)
    assert lost.gate("sparsity 2:4").status == FAIL and lost.status == FAIL
    assert lost.gate("accuracy").status == SKIPPED


def test_int8_expectation(tmp_path, make_qdq):
    from compress.check.structure import nm_sparsity, onnx_macs, quantized_layers

    make_qdq(tmp_path / "q.onnx", int8=True)
    make_qdq(tmp_path / "f.onnx", int8=False)
    assert quantized_layers(tmp_path / "q.onnx")["int8_weights"] == 1
    assert quantized_layers(tmp_path / "f.onnx")["int8_weights"] == 0
    assert onnx_macs(tmp_path / "q.onnx")["macs"] == 6 * 6 * 4 * 4 * 3 * 3
    assert nm_sparsity(tmp_path / "q.onnx")["eligible_layers"] == 1
    cfg = CheckConfig(expect_int8=True, max_size_increase=None, max_params_increase=None, **FAST)
    r = run_check(tmp_path / "q.onnx", tmp_path / "f.onnx", cfg)
    assert r.gate("int8").status == FAIL and r.gate("int8").candidate == 0 and r.gate("int8").baseline == 1
    assert r.gate("size").status == SKIPPED  # reported but not gated
    assert run_check(tmp_path / "q.onnx", tmp_path / "q.onnx", cfg).gate("int8").status == PASS
    # same INT8 layer count, but a Q/DQ graph the runtime's rules reject (negative scale)
    make_qdq(tmp_path / "bad.onnx", scale=-0.1)
    bad = run_check(tmp_path / "q.onnx", tmp_path / "bad.onnx", CheckConfig(**{**FAST, "expect_int8": True}))
    assert bad.gate("int8").status == FAIL and "rule" in bad.gate("int8").message


def test_bench_json_mode_and_fingerprint_refusal(tmp_path):
    from compress.env import environment

    env = environment()
    lat = {"n": 500, "p50_ms": 1.0, "std_ms": 0.05, "mean_ms": 1.0}
    base = {"latency": lat, "metrics": {"accuracy": 0.9}, "bytes": 1000, "environment": env}
    cand = {
        "latency": {**lat, "p50_ms": 1.5},
        "metrics": {"accuracy": 0.9},
        "bytes": 1000,
        "environment": env,
    }
    (tmp_path / "a.json").write_text(json.dumps(base))
    (tmp_path / "b.json").write_text(json.dumps(cand))
    r = compare_bench_json(tmp_path / "a.json", tmp_path / "b.json", CheckConfig())
    assert r.mode == "bench-json" and r.gate("latency").status == FAIL and r.gate("size").status == PASS
    assert r.gate("params").status == SKIPPED and "n/a" in r.gate("params").message

    other = json.loads(json.dumps(cand))
    other["environment"]["machine"]["cpu"] = "Some Other CPU"
    (tmp_path / "c.json").write_text(json.dumps(other))
    with pytest.raises(CompressError, match="different machines"):
        compare_bench_json(tmp_path / "a.json", tmp_path / "c.json")
    (tmp_path / "d.json").write_text(json.dumps({"latency": lat}))
    with pytest.raises(CompressError, match="records no machine"):
        compare_bench_json(tmp_path / "a.json", tmp_path / "d.json")
    (tmp_path / "e.json").write_text("{not json")
    with pytest.raises(CompressError, match="not a JSON file"):
        compare_bench_json(tmp_path / "a.json", tmp_path / "e.json")


def test_metric_gate_units():
    ok = metric_gate("accuracy", {"accuracy": 0.900}, {"accuracy": 0.897}, 0.5)
    assert ok.status == PASS and ok.change == pytest.approx(-0.3)
    bad = metric_gate("accuracy", {"accuracy": 0.900}, {"accuracy": 0.880}, 0.5)
    assert bad.status == FAIL and "drop 2.00 points" in bad.message
    psnr = metric_gate("psnr", {"psnr": 30.0}, {"psnr": 29.0}, 0.5)
    assert psnr.status == FAIL and psnr.unit == "psnr"


def test_config_validation():
    from compress.check.gate import config_from_options

    with pytest.raises(RecipeError, match="rounds must be at least 5"):
        config_from_options({"rounds": 2})
    with pytest.raises(RecipeError, match="N:M"):
        config_from_options({"expect_sparsity": "4-2"})
    with pytest.raises(RecipeError, match="unknown key"):
        config_from_options({"max_slowness": 0.1})


def test_junit_marks_inconclusive_as_skipped_not_failure(models, digits8):
    from compress.check.gate import CheckResult, Gate
    from compress.check.stats import INCONCLUSIVE

    r = CheckResult(
        status=INCONCLUSIVE,
        gates=[Gate("latency", INCONCLUSIVE, "too noisy; raise --rounds"), Gate("params", PASS, "same")],
        latency=None,
        baseline="a",
        candidate="b",
        config={},
        environment={},
    )
    assert r.exit_code == 3
    suite = ET.fromstring(to_junit(r)).find("testsuite")
    assert suite.get("failures") == "0" and suite.get("skipped") == "1"
    assert "inconclusive" in suite.find("testcase/skipped").get("message")
    assert "⚠️ inconclusive" in to_markdown(r)
