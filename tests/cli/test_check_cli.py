"""`compress check` and `compress history` through Typer's CliRunner: exit codes and written files."""

from __future__ import annotations

import json
import xml.etree.ElementTree as ET

import numpy as np
import pytest
import torch
import typer
from torch import nn
from typer.testing import CliRunner

FAST = [
    "--rounds",
    "6",
    "--iters",
    "5",
    "--threads",
    "1",
    "--data",
    "digits",
    "--image-size",
    "8",
    "--limit",
    "64",
]


def _app() -> typer.Typer:
    """The real `compress` app once check/history are wired into it; until then, the same commands alone."""
    from compress.cli import check, history
    from compress.cli.main import app

    names = {c.name for c in app.registered_commands} | {g.name for g in app.registered_groups}
    if {"check", "history"} <= names:
        return app
    local = typer.Typer()
    local.command("check")(check.check)
    local.add_typer(history.app, name="history")
    return local


def _export(width: int, path) -> None:
    torch.manual_seed(0)
    net = nn.Sequential(
        nn.Conv2d(3, width, 3, padding=1),
        nn.ReLU(),
        nn.AdaptiveAvgPool2d(1),
        nn.Flatten(),
        nn.Linear(width, 10),
    ).eval()
    torch.onnx.export(
        net,
        (torch.rand(2, 3, 8, 8),),
        str(path),
        dynamo=False,
        opset_version=17,
        input_names=["input"],
        output_names=["output"],
        dynamic_axes={"input": {0: "batch"}},
    )


@pytest.fixture(scope="module")
def onnx_pair(tmp_path_factory):
    d = tmp_path_factory.mktemp("cli_check")
    _export(8, d / "a.onnx")
    _export(96, d / "wide.onnx")
    return d / "a.onnx", d / "wide.onnx"


def test_pass_exit_0_and_files_written(onnx_pair, tmp_path):
    a, _ = onnx_pair
    out = CliRunner().invoke(
        _app(),
        [
            "check",
            "--baseline",
            str(a),
            "--candidate",
            str(a),
            "--max-slowdown",
            "300%",  # a 0.01 ms model on a shared CI runner has ~30% round-to-round noise: the limit must clear it
            "--junit",
            str(tmp_path / "c.xml"),
            "--summary",
            str(tmp_path / "s.md"),
            "--json",
            str(tmp_path / "c.json"),
            *FAST,
        ],
    )
    assert out.exit_code == 0, out.output
    assert "PASS" in out.output
    assert json.loads((tmp_path / "c.json").read_text())["status"] == "pass"
    assert ET.parse(tmp_path / "c.xml").getroot().find("testsuite").get("failures") == "0"
    assert "✅ pass" in (tmp_path / "s.md").read_text()


def test_fail_exit_1(onnx_pair, tmp_path):
    a, wide = onnx_pair
    out = CliRunner().invoke(
        _app(), ["check", "-a", str(a), "-b", str(wide), "--junit", str(tmp_path / "c.xml"), *FAST]
    )
    assert out.exit_code == 1, out.output
    failed = [
        tc.get("name")
        for tc in ET.parse(tmp_path / "c.xml").getroot().iter("testcase")
        if tc.find("failure") is not None
    ]
    assert "params" in failed


def test_inconclusive_exit_3(onnx_pair, tmp_path, monkeypatch):
    """Noisy timings (injected in place of the measurement) give exit code 3 and advice to raise --rounds."""
    from compress.check import gate
    from compress.check.stats import compare_rounds

    rng = np.random.default_rng(0)

    def noisy(_b, _c, _shape, config):
        base = [1e-3 * np.exp(rng.normal(0, 0.4, 5)) for _ in range(config.rounds)]
        cand = [1.1e-3 * np.exp(rng.normal(0, 0.4, 5)) for _ in range(config.rounds)]
        return compare_rounds(base, cand, max_slowdown=config.max_slowdown, seed=config.seed)

    monkeypatch.setattr(gate, "measure_ab", noisy)
    a, _ = onnx_pair
    out = CliRunner().invoke(_app(), ["check", "-a", str(a), "-b", str(a), "--json", str(tmp_path / "c.json"), *FAST])
    assert out.exit_code == 3, out.output
    data = json.loads((tmp_path / "c.json").read_text())
    assert data["status"] == "inconclusive" and "--rounds" in data["latency"]["advice"]


def test_usage_errors_exit_2(onnx_pair, tmp_path):
    a, _ = onnx_pair
    runner = CliRunner()
    assert runner.invoke(_app(), ["check", "--baseline", str(a)]).exit_code == 2
    both = runner.invoke(_app(), ["check", "-a", str(a), "-b", str(a), "--baseline-json", "x.json"])
    assert both.exit_code == 2 and "either" in both.output
    bad = runner.invoke(_app(), ["check", "-a", str(a), "-b", str(a), "--max-slowdown", "fast"])
    assert bad.exit_code == 2 and "--max-slowdown" in bad.output
    missing = runner.invoke(_app(), ["check", "-a", str(tmp_path / "no.onnx"), "-b", str(a)])
    assert missing.exit_code == 2 and "not found" in missing.output


def test_bench_json_mode_and_history(tmp_path):
    from compress.env import environment

    env = environment()
    for name, p50 in (("a", 1.0), ("b", 1.02)):
        (tmp_path / f"{name}.json").write_text(
            json.dumps(
                {
                    "model": "net",
                    "latency": {"n": 400, "p50_ms": p50, "std_ms": 0.02, "mean_ms": p50},
                    "metrics": {"accuracy": 0.9},
                    "bytes": 100,
                    "environment": env,
                }
            )
        )
    runner = CliRunner()
    out = runner.invoke(
        _app(),
        ["check", "--baseline-json", str(tmp_path / "a.json"), "--candidate-json", str(tmp_path / "b.json")],
    )
    assert out.exit_code == 0, out.output

    db = tmp_path / "h.sqlite"
    added = runner.invoke(
        _app(),
        [
            "history",
            "add",
            str(tmp_path / "a.json"),
            str(tmp_path / "b.json"),
            "--db",
            str(db),
            "--commit",
            "abc",
        ],
    )
    assert added.exit_code == 0, added.output
    shown = runner.invoke(_app(), ["history", "show", "--db", str(db), "--plot", str(tmp_path / "t.png")])
    assert shown.exit_code == 0, shown.output
    assert "+2.0%" in shown.output and (tmp_path / "t.png").stat().st_size > 0
    cmp = runner.invoke(_app(), ["history", "compare", "1", "2", "--db", str(db)])
    assert cmp.exit_code == 0, cmp.output
    assert runner.invoke(_app(), ["history", "show", "--db", str(tmp_path / "none.sqlite")]).exit_code == 2


def test_output_tolerance_gate(onnx_pair, tmp_path):
    """The same outputs pass --output-atol; a different network's outputs fail it (exit 1)."""
    a, wide = onnx_pair
    off = ["--max-slowdown", "off", "--max-params-increase", "off", "--max-macs-increase", "off"]
    off += ["--max-size-increase", "off", "--max-accuracy-drop", "off"]
    same = CliRunner().invoke(
        _app(), ["check", "-a", str(a), "-b", str(a), *off, "--output-atol", "1e-6", "--json", str(tmp_path / "s.json")]
    )
    assert same.exit_code == 0, same.output
    gate = next(g for g in json.loads((tmp_path / "s.json").read_text())["gates"] if g["name"] == "outputs")
    assert gate["status"] == "pass" and gate["candidate"] == 0.0
    other = CliRunner().invoke(
        _app(),
        ["check", "-a", str(a), "-b", str(wide), *off, "--output-atol", "1e-6", "--json", str(tmp_path / "o.json")],
    )
    assert other.exit_code == 1, other.output
    gate = next(g for g in json.loads((tmp_path / "o.json").read_text())["gates"] if g["name"] == "outputs")
    assert gate["status"] == "fail" and gate["candidate"] > 1e-6 and "outside atol" in gate["message"]
