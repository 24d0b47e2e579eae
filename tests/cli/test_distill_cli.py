"""`compress distill` through the CLI: a run directory with the student, resumable, one-line errors."""

import json

from typer.testing import CliRunner

from compress.cli.main import app

runner = CliRunner()
SMALL = ["--data", "digits", "--image-size", "16", "--limit", "160"]


def invoke(*args):
    return runner.invoke(app, [str(a) for a in args])


def test_distill_writes_student_run(tmp_path):
    teacher = tmp_path / "teacher"
    r = invoke("train", "--model", "builtin:resnet_tiny", "--width", "0.5", *SMALL, "--epochs", "1", "--out", teacher)
    assert r.exit_code == 0, r.output
    out = tmp_path / "kd"
    r = invoke(
        "distill",
        "--teacher",
        teacher,
        "--student",
        "builtin:simple_cnn",
        "--width",
        "0.25",
        "--method",
        "kd",
        *SMALL,
        "--epochs",
        "1",
        "--out",
        out,
    )
    assert r.exit_code == 0, r.output
    manifest = json.loads((out / "manifest.json").read_text())
    assert [s["technique"] for s in manifest["steps"]] == ["distill"]
    assert manifest["steps"][0]["method"] == "kd"
    assert {i["role"] for i in manifest["inputs"]} == {"student", "teacher"}
    r = invoke(
        "distill", "--teacher", teacher, "--student", "builtin:simple_cnn", "--width", "0.25", "--method", "crd",
        *SMALL, "--epochs", "1", "--out", tmp_path / "crd",
    )  # fmt: skip
    assert r.exit_code == 0, r.output
    steps = json.loads((tmp_path / "crd" / "manifest.json").read_text())["steps"]
    assert steps[0]["method"] == "crd" and steps[0]["metrics"]["negatives"] == 159  # 160 training images
    r = invoke(
        "distill",
        "--teacher",
        teacher,
        "--student",
        "builtin:simple_cnn",
        "--method",
        "kd",
        "--layers",
        "nope",
        *SMALL,
        "--out",
        tmp_path / "x",
    )
    assert r.exit_code == 2 and r.output.strip() == "error: --layers: distill method 'kd' takes no layers"
    r = invoke(
        "distill",
        "--teacher",
        teacher,
        "--student",
        "builtin:simple_cnn",
        "--method",
        "guidance",
        "--layers",
        "nope",
        *SMALL,
        "--epochs",
        "1",
        "--out",
        tmp_path / "y",
    )
    assert r.exit_code == 2 and "nope" in r.output and "Traceback" not in r.output
