import json

import pytest

from compress.errors import RunDirError
from compress.report import build_report
from compress.report.build import pareto_front
from compress.runs import RunDir, artifact_path, read_manifest


def test_run_dir_is_staged_then_committed(tmp_path):
    run = RunDir(tmp_path / "r", "train")
    assert run.work.name == "r.partial" and not (tmp_path / "r").exists()
    run.file("model.pt").write_bytes(b"x")
    run.add_artifact("torch", "model.pt")
    path = run.commit()
    m = read_manifest(path)
    assert m["status"] == "complete" and m["artifacts"]["torch"]["bytes"] == 1
    assert "versions" in m["environment"] and not (tmp_path / "r.partial").exists()
    assert artifact_path(path, "torch") == path / "model.pt"
    with pytest.raises(RunDirError, match="has no 'onnx' artifact"):
        artifact_path(path, "onnx")


def test_existing_run_needs_force_and_is_replaced_only_on_commit(tmp_path):
    RunDir(tmp_path / "r", "train").commit()
    with pytest.raises(RunDirError, match="exists; pass --force"):
        RunDir(tmp_path / "r", "train")
    run = RunDir(tmp_path / "r", "prune", force=True)
    assert read_manifest(tmp_path / "r")["command"] == "train"  # old one intact until commit
    run.commit()
    assert read_manifest(tmp_path / "r")["command"] == "prune"


def test_interrupted_run_needs_resume_or_force(tmp_path):
    run = RunDir(tmp_path / "r", "train")
    run.manifest["config"] = {"a": 1}
    run.save()
    with pytest.raises(RunDirError, match="being written by another compress process"):
        RunDir(tmp_path / "r", "train")  # the first writer still holds the lock
    run.abort(keep=True)  # what an interruption does
    with pytest.raises(RunDirError, match="--resume"):
        RunDir(tmp_path / "r", "train")
    again = RunDir(tmp_path / "r", "train", resume=True)
    assert again.resumed and again.manifest["config"] == {"a": 1}
    with pytest.raises(RunDirError, match="nothing to resume"):
        RunDir(tmp_path / "other", "train", resume=True)


def test_corrupted_manifest(tmp_path):
    (tmp_path / "r").mkdir()
    (tmp_path / "r" / "manifest.json").write_text("{not json")
    with pytest.raises(RunDirError, match="corrupted manifest"):
        read_manifest(tmp_path / "r")


def test_pareto_front():
    rows = [
        {"name": "a", "latency": {"p50_ms": 1.0}, "value": 0.90},
        {"name": "b", "latency": {"p50_ms": 2.0}, "value": 0.95},
        {"name": "c", "latency": {"p50_ms": 3.0}, "value": 0.94},  # slower and worse than b
        {"name": "d", "latency": {"p50_ms": 0.5}, "value": 0.80},
    ]
    assert pareto_front(rows) == ["a", "b", "d"]


def _variant(tmp_path, name, acc, p50, size):
    run = RunDir(tmp_path / name, "train")
    run.file("model.onnx").write_bytes(b"0" * size)
    run.add_artifact("onnx", "model.onnx")
    run.set_config({"data": {"task": "classification"}})
    run.set_steps([{"technique": "train", "method": "supervised"}])
    run.update_metrics(
        {
            "deployed_accuracy": acc,
            "size_bytes": size,
            "params": 10,
            "latency": {"p50_ms": p50, "p90_ms": p50, "p99_ms": p50, "batch_size": 1},
            "runtime": {"backend": "onnxruntime", "version": "x", "providers": ["CPU"]},
        }
    )
    return run.commit()


def test_report_speedup_delta_and_files(tmp_path):
    a = _variant(tmp_path, "big", 0.98, 2.0, 4000)
    b = _variant(tmp_path, "small", 0.96, 0.5, 1000)
    manifest = json.loads((b / "manifest.json").read_text())
    manifest["metrics"]["int8_ops"] = "37/49"  # what ORT ran as integer kernels
    (b / "manifest.json").write_text(json.dumps(manifest))
    rep = build_report([a, b], tmp_path / "rep", baseline="big")
    small = next(r for r in rep["variants"] if r["name"] == "small")
    assert small["speedup"] == pytest.approx(4.0)
    assert small["delta"] == pytest.approx(-0.02)
    assert small["size_ratio"] == pytest.approx(0.25)
    assert set(rep["pareto"]) == {"big", "small"}
    saved = json.loads((tmp_path / "rep" / "report.json").read_text())
    assert saved["schema"] == "compress.report/1"
    assert (tmp_path / "rep" / "pareto.png").read_bytes()[:4] == b"\x89PNG"
    md = (tmp_path / "rep" / "report.md").read_text()
    assert "| small ★ |" in md and "4.00×" in md and "-2.00 pt" in md
    assert "int8 ops" in md and "| 37/49 |" in md and small["int8_ops"] == "37/49"
    assert rep["notes"] == [] and "not faster than float" not in md  # no speed verdict: no note
    # a quantized variant whose own speed check did not find it faster is named under the table
    for verdict, noted in (("faster", False), ("not significantly faster", True), ("slower", True)):
        manifest["metrics"].update(speed_verdict=verdict, int8_summary=f"INT8: 37/49 ...; {verdict} summary")
        (b / "manifest.json").write_text(json.dumps(manifest))
        rep = build_report([a, b], tmp_path / f"rep-{verdict}", baseline="big")
        md = (tmp_path / f"rep-{verdict}" / "report.md").read_text()
        assert rep["notes"] == ([f"small: INT8: 37/49 ...; {verdict} summary"] if noted else [])
        assert (f"- small: INT8: 37/49 ...; {verdict} summary" in md) is noted
    # a size format (codebooks, bit-wise) says under the table why it is not faster
    manifest["metrics"].update(speed_verdict=None, deploy_note="a size format: weights expanded to float")
    (b / "manifest.json").write_text(json.dumps(manifest))
    rep = build_report([a, b], tmp_path / "rep-size", baseline="big")
    assert rep["notes"] == ["small: a size format: weights expanded to float"]
    assert "- small: a size format: weights expanded to float" in (tmp_path / "rep-size" / "report.md").read_text()
    with pytest.raises(RunDirError, match="baseline 'nope'"):
        build_report([a], tmp_path / "rep2", baseline="nope")
