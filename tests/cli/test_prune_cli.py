"""`compress prune` and `compress info --prunable` through the CLI."""

import json

from typer.testing import CliRunner

from compress.cli.main import app

runner = CliRunner()
SMALL = ["--data", "digits", "--image-size", "16", "--limit", "160"]


def invoke(*args):
    return runner.invoke(app, [str(a) for a in args])


def test_channel_pruning_really_shrinks_and_exports(tmp_path):
    teacher = tmp_path / "teacher"
    r = invoke("train", "--model", "builtin:resnet_tiny", *SMALL, "--epochs", "1", "--out", teacher)
    assert r.exit_code == 0, r.output
    out = tmp_path / "pruned"
    r = invoke(
        "prune",
        "--model",
        teacher,
        "--method",
        "channel",
        "--ratio",
        "0.5",
        "--importance",
        "l2",
        *SMALL,
        "--finetune-epochs",
        "1",
        "--out",
        out,
    )
    assert r.exit_code == 0, r.output
    before = json.loads((teacher / "manifest.json").read_text())
    after = json.loads((out / "manifest.json").read_text())
    assert after["metrics"]["params"] < 0.5 * before["metrics"]["params"]
    assert after["metrics"]["macs"] < 0.5 * before["metrics"]["macs"]
    assert after["artifacts"]["torch"]["bytes"] < 0.6 * before["artifacts"]["torch"]["bytes"]
    assert [s["technique"] for s in after["steps"]] == ["train", "prune"]
    assert after["export"]["parity"]["ok"]  # exported and checked against ORT
    r = invoke("bench", out, *SMALL, "--min-time", "0.02", "--min-iters", "5")
    assert r.exit_code == 0, r.output


def test_info_prunable_lists_groups_and_kept_layers():
    r = invoke("info", "builtin:resnet_tiny", "--input-shape", "3,16,16", "--prunable", "--json")
    assert r.exit_code == 0, r.output
    report = json.loads(r.output)
    names = {row["name"]: row for row in report["rows"]}
    assert names["fc"]["status"] == "kept whole"
    assert report["summary"]["prunable_groups"] >= 4
