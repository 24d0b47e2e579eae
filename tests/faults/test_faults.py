"""The fault suite: what a hostile or unlucky user does, and what must happen.

Every case ends in one line on stderr, the documented exit code, no traceback, and nothing left
behind (no DIR.partial, no empty folder, no 0-byte file), and no code runs from a model file.
"""

from __future__ import annotations

import errno
import os
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import craft
import pytest
import torch
from typer.testing import CliRunner

from compress.cli.main import app

runner = CliRunner()
SMALL = ["--data", "digits", "--image-size", "16", "--limit", "120"]


def invoke(*args):
    return runner.invoke(app, [str(a) for a in args])


def one_line(result, code: int, fragment: str = "") -> str:
    out = result.output.strip()
    assert result.exit_code == code, out
    assert "Traceback" not in out and len(out.splitlines()) == 1, out
    assert fragment in out, out
    return out


def leftovers(folder: Path) -> list[str]:
    """Staged or half-written things: .partial folders, temp files, lock files, empty files."""
    found = []
    for p in folder.rglob("*"):
        name = p.name
        if (
            name.endswith(".partial")
            or ".tmp" in name
            or name.endswith(".lock")
            or (p.is_file() and not p.stat().st_size)
        ):
            found.append(str(p.relative_to(folder)))
    return found


@pytest.fixture(scope="module")
def teacher(tmp_path_factory):
    out = tmp_path_factory.mktemp("faults") / "teacher"
    result = invoke("train", "--model", "builtin:simple_cnn", "--width", "0.25", "--epochs", "1", *SMALL, "--out", out)
    assert result.exit_code == 0, result.output
    return out


@pytest.fixture(scope="module")
def good_pt2(tmp_path_factory):
    net = torch.nn.Sequential(
        torch.nn.Conv2d(3, 4, 3), torch.nn.BatchNorm2d(4), torch.nn.ReLU(),
        torch.nn.AdaptiveAvgPool2d(1), torch.nn.Flatten(), torch.nn.Linear(4, 10),
    )  # fmt: skip
    batch = torch.export.Dim("batch", min=1, max=1024)
    program = torch.export.export(net.eval(), (torch.randn(2, 3, 16, 16),), dynamic_shapes=({0: batch},))
    path = tmp_path_factory.mktemp("pt2") / "good.pt2"
    torch.export.save(program, path)
    return path


# --- 1. no code runs from a .pt2 -----------------------------------------------------------------


@pytest.mark.parametrize("attack", craft.ATTACKS[:4], ids=lambda a: a.__name__)
def test_the_crafted_archives_do_run_code_through_torch_export_load(attack, good_pt2, tmp_path):
    """The control: each archive is a live attack on torch's own loader, so the gate below means something."""
    marker = tmp_path / "ran"
    bad = attack(good_pt2, tmp_path / "bad.pt2", marker)
    code = f"import torch\ntry:\n    torch.export.load({str(bad)!r})\nexcept Exception:\n    pass\n"
    subprocess.run([sys.executable, "-c", code], capture_output=True, timeout=120)
    assert marker.exists()


@pytest.mark.parametrize("attack", craft.ATTACKS, ids=lambda a: a.__name__)
def test_no_command_runs_code_from_a_crafted_pt2(attack, good_pt2, teacher, tmp_path):
    marker = tmp_path / "ran"
    bad = attack(good_pt2, tmp_path / "bad.pt2", marker)
    recipe = tmp_path / "r.yaml"
    recipe.write_text(f"name: x\nsteps:\n  - {{name: a, technique: prune, model: {bad}, params: {{ratio: 0.5}}}}\n")
    commands = [
        ["info", bad],
        ["export", bad, "--out", tmp_path / "m.onnx"],
        ["bench", bad, "--rounds", "1"],
        ["train", "--model", bad, *SMALL, "--out", tmp_path / "t"],
        ["prune", "--model", bad, "--ratio", "0.5", "--out", tmp_path / "p"],
        ["quantize", "--model", bad, "--method", "kmeans", "--out", tmp_path / "q"],
        ["distill", "--teacher", bad, "--student", "builtin:simple_cnn", *SMALL, "--out", tmp_path / "d"],
        ["run", recipe, "--check"],
    ]
    for args in commands:
        result = invoke(*args)
        assert result.exit_code != 0, (args, result.output)
        assert not marker.exists(), args
        assert "Traceback" not in result.output
    assert "could run code" in invoke("info", bad).output
    assert leftovers(tmp_path) == []


def test_a_clean_pt2_works_in_every_command_and_saves_without_pickle(good_pt2, tmp_path):
    assert invoke("info", good_pt2).exit_code == 0
    result = invoke("export", good_pt2, "--out", tmp_path / "m.onnx")
    assert result.exit_code == 0 and "exported" in result.output, result.output
    result = invoke("train", "--model", good_pt2, *SMALL, "--epochs", "1", "--out", tmp_path / "p")
    assert result.exit_code == 0, result.output
    from compress.models.formats import diagnose
    from compress.runs import artifact_path

    saved = artifact_path(tmp_path / "p", "torch")
    assert diagnose(saved) == "export"  # a torch.export archive again, not a pickle
    from compress.models.pt2 import inspect_archive

    assert inspect_archive(saved.read_bytes(), str(saved)) == []
    result = invoke("train", "--model", tmp_path / "p", *SMALL, "--epochs", "1", "--out", tmp_path / "t")
    assert result.exit_code == 0, result.output


# --- 2. one handler: user errors, OS failures, internal errors --------------------------------------


def test_disk_full_is_one_line_naming_the_path_and_leaves_nothing(teacher, tmp_path, monkeypatch):
    import compress.io as cio

    real = cio.os.fdopen

    class Full:
        def __init__(self, f):
            self.f = f

        def __enter__(self):
            return self

        def __exit__(self, *a):
            self.f.close()

        def write(self, data):
            raise OSError(errno.ENOSPC, "No space left on device", self.f.name)

        def __getattr__(self, name):
            return getattr(self.f, name)

    monkeypatch.setattr(cio.os, "fdopen", lambda fd, mode="r": Full(real(fd, mode)))
    out = tmp_path / "full"
    one_line(invoke("train", "--model", teacher, *SMALL, "--epochs", "1", "--out", out), 2, "no space left on device")
    assert not out.exists() and leftovers(tmp_path) == []


def test_a_real_small_tmpfs_fills_up(teacher, tmp_path):
    mount = tmp_path / "small"
    mount.mkdir()
    if os.geteuid() != 0 or subprocess.run(["mount", "-t", "tmpfs", "-o", "size=16k", "tmpfs", str(mount)]).returncode:
        pytest.skip("cannot mount a tmpfs here")
    try:
        one_line(invoke("export", teacher, "--out", mount / "m.onnx"), 2, "no space left on device")
        assert list(mount.iterdir()) == []
    finally:
        subprocess.run(["umount", str(mount)])


def test_path_conflicts_are_one_line(teacher, tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("x")
    one_line(invoke("train", "--model", teacher, *SMALL, "--out", blocker / "run"), 2, str(blocker))
    (tmp_path / "r.partial").write_text("in the way")
    one_line(invoke("train", "--model", teacher, *SMALL, "--out", tmp_path / "r"), 2, "in the way")
    one_line(invoke("train", "--model", teacher, *SMALL, "--out", ""), 2)
    one_line(invoke("prune", "--model", teacher, "--ratio", "0.5", "--out", teacher / "inside"), 2, "inside the input")
    assert not (teacher / "inside").exists()


def test_an_internal_error_is_one_line_with_a_traceback_file(teacher, tmp_path, monkeypatch):
    import compress.pipeline as pipeline

    def broken(*a, **k):
        raise ValueError("something inside broke")

    monkeypatch.setattr(pipeline, "write_variant", broken)
    monkeypatch.setenv("COMPRESS_LOG_DIR", str(tmp_path / "logs"))
    out = one_line(invoke("train", "--model", teacher, *SMALL, "--epochs", "1", "--out", tmp_path / "r"), 1)
    assert out.startswith("internal error: ValueError: something inside broke")
    logs = list((tmp_path / "logs").iterdir())
    assert len(logs) == 1 and "Traceback" in logs[0].read_text()
    assert not (tmp_path / "r").exists() and not (tmp_path / "r.partial").exists()


def test_report_and_history_leave_no_empty_folder_or_file(tmp_path):
    bad = tmp_path / "bad.json"
    bad.write_text("{}")
    one_line(invoke("history", "add", bad, "--db", tmp_path / "h.sqlite"), 2)
    assert not (tmp_path / "h.sqlite").exists()
    (tmp_path / "empty_run").mkdir()
    assert invoke("report", tmp_path / "empty_run", "--out", tmp_path / "rep").exit_code == 2
    assert not (tmp_path / "rep").exists()


# --- 3. the run lock -----------------------------------------------------------------------------


def _hold_lock(out: Path) -> subprocess.Popen:
    code = textwrap.dedent(
        f"""
        import time
        from compress.runs import RunDir
        RunDir({str(out)!r}, "train")
        print("held", flush=True)
        time.sleep(60)
        """
    )
    proc = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
    assert proc.stdout.readline().strip() == "held"
    return proc


def test_a_live_run_is_locked_and_a_dead_owner_is_not(teacher, tmp_path):
    out = tmp_path / "r"
    proc = _hold_lock(out)
    try:
        for flag in ("--force", "--resume"):
            msg = one_line(invoke("train", "--model", teacher, *SMALL, "--out", out, flag), 2, f"pid {proc.pid}")
            assert "another compress process" in msg
        assert (tmp_path / "r.partial").is_dir()  # the live run's folder is untouched
    finally:
        proc.kill()
        proc.wait()
    result = invoke("train", "--model", teacher, *SMALL, "--epochs", "1", "--out", out, "--force")
    assert result.exit_code == 0, result.output  # the kernel dropped the dead owner's lock
    assert leftovers(tmp_path) == []


def test_a_committed_run_whose_files_changed_is_refused(teacher, tmp_path):
    import shutil

    copy = tmp_path / "copy"
    shutil.copytree(teacher, copy)
    with open(copy / "model.pt", "ab") as f:
        f.write(b"tampered")
    one_line(invoke("info", copy), 2, "does not match the sha256")


# --- 4. resume refuses different data ------------------------------------------------------------


def test_resume_refuses_different_data(teacher, tmp_path, monkeypatch):
    import compress.train.loop as loop

    real = loop._save_checkpoint
    calls = []

    def interrupt_after_first_checkpoint(*a, **k):
        real(*a, **k)
        calls.append(1)
        raise KeyboardInterrupt

    monkeypatch.setattr(loop, "_save_checkpoint", interrupt_after_first_checkpoint)
    out = tmp_path / "r"
    config = tmp_path / "train.yaml"
    config.write_text("checkpoint_every: 1\nbatch_size: 16\n")
    args = ["train", "--model", teacher, *SMALL[:4], "--epochs", "2", "--config", config, "--out", out]
    assert invoke(*args, "--limit", "120").exit_code == 130
    assert (tmp_path / "r.partial").is_dir() and calls
    monkeypatch.setattr(loop, "_save_checkpoint", real)
    one_line(invoke(*args, "--limit", "100", "--resume"), 2, "data.limit: 120 -> 100")
    assert (tmp_path / "r.partial").is_dir()  # still there to resume properly
    result = invoke(*args, "--limit", "120", "--resume")
    assert result.exit_code == 0, result.output


# --- 5./6. bounded messages, bounded inputs, numbers ----------------------------------------------


def test_yaml_alias_bomb_fails_fast(tmp_path):
    lines = ["a0: &a0 [x, x, x, x, x, x, x, x, x, x]"]
    lines += [f"a{i}: &a{i} [" + ", ".join([f"*a{i - 1}"] * 10) + "]" for i in range(1, 9)]
    recipe = tmp_path / "bomb.yaml"
    recipe.write_text("\n".join(lines) + "\nname: x\nsteps: *a8\n")
    started = time.perf_counter()
    msg = one_line(invoke("run", recipe, "--check"), 2, "aliases expanded")
    assert time.perf_counter() - started < 10 and len(msg) < 400


def test_huge_and_deep_recipes_fail_fast(tmp_path):
    many = tmp_path / "many.yaml"
    many.write_text("name: x\nsteps:\n" + "  - {name: s, technique: train}\n" * 200_000)
    started = time.perf_counter()
    one_line(invoke("run", many, "--check"), 2)
    deep = tmp_path / "deep.yaml"
    deep.write_text("name: x\nsteps: " + "[" * 200 + "]" * 200 + "\n")
    one_line(invoke("run", deep, "--check"), 2)
    assert time.perf_counter() - started < 30


def test_unknown_keys_at_every_level_are_errors(tmp_path):
    recipe = tmp_path / "r.yaml"
    for text, key in (
        (
            "name: x\nstep_configs: {}\nsteps:\n  - {name: a, technique: train, model: builtin:simple_cnn}\n",
            "step_configs",
        ),
        ("name: x\nbogus: 1\nsteps:\n  - {name: a, technique: train, model: builtin:simple_cnn}\n", "bogus"),
        ("name: x\nsteps:\n  - {name: a, technique: train, model: builtin:simple_cnn, params: {epoch: 1}}\n", "epoch"),
        ("name: x\ndata: {name: digits, sizee: 3}\nsteps:\n  - {name: a, technique: train}\n", "sizee"),
    ):
        recipe.write_text(text)
        one_line(invoke("run", recipe, "--check"), 2, f"unknown key '{key}'")


@pytest.mark.parametrize(
    "args, fragment",
    [
        (["train", "--model", "builtin:simple_cnn", "--lr", "nan"], "finite"),
        (["train", "--model", "builtin:simple_cnn", "--lr", "-1"], "at least 0"),
        (["train", "--model", "builtin:simple_cnn", "--batch-size", "0"], "between 1 and"),
        (["train", "--model", "builtin:simple_cnn", "--limit", "0"], "at least 1"),
        (["train", "--model", "builtin:simple_cnn", "--image-size", "0"], "between 1 and"),
        (["prune", "--model", "builtin:simple_cnn", "--ratio", "1.5"], "between 0"),
        (["prune", "--model", "builtin:simple_cnn", "--ratio", "inf"], "finite"),
        (["check", "--baseline", "a.onnx", "--candidate", "b.onnx", "--max-slowdown", "nan"], "finite"),
        (["check", "--baseline", "a.onnx", "--candidate", "b.onnx", "--batch-size", "0"], "between 1 and"),
        (["check", "--baseline", "a.onnx", "--candidate", "b.onnx", "--threads", "-1"], "at least 0"),
        (["check", "--baseline", "a.onnx", "--candidate", "b.onnx", "--confidence", "2"], "between 0"),
    ],
)
def test_numbers_are_checked_the_same_way_everywhere(args, fragment, tmp_path):
    one_line(invoke(*args, "--out", tmp_path / "o") if args[0] != "check" else invoke(*args), 2, fragment)
    assert leftovers(tmp_path) == []


def test_messages_quote_only_a_prefix_of_a_value(tmp_path):
    recipe = tmp_path / "r.yaml"
    recipe.write_text("name: x\nseed: " + "9" * 100_000 + "x\nsteps:\n  - {name: a, technique: train}\n")
    assert len(one_line(invoke("run", recipe, "--check"), 2)) < 400


# --- 7. precise file diagnoses -------------------------------------------------------------------


def test_each_kind_of_file_has_its_own_message(teacher, good_pt2, tmp_path):
    cases = {}
    cases["missing"] = (tmp_path / "nope.pt", "model not found")
    (tmp_path / "folder").mkdir()
    cases["folder"] = (tmp_path / "folder", "not a run directory")
    (tmp_path / "empty.pt").write_bytes(b"")
    cases["empty"] = (tmp_path / "empty.pt", "empty file")
    (tmp_path / "img.pt").write_bytes(b"\x89PNG\r\n\x1a\n" + os.urandom(64))
    cases["png"] = (tmp_path / "img.pt", "PNG image")
    (tmp_path / "conf.pt").write_text("name: x\nsteps: []\n")
    cases["text"] = (tmp_path / "conf.pt", "it is text")
    (tmp_path / "noise.pt").write_bytes(b"\x01\x02" + os.urandom(200))
    cases["noise"] = (tmp_path / "noise.pt", "not a PyTorch, torch.export")
    torch.save({"w": torch.zeros(2)}, tmp_path / "sd.pt")
    cases["state_dict"] = (tmp_path / "sd.pt", "not a compress checkpoint")
    torch.save(torch.nn.Linear(2, 2), tmp_path / "pickled.pt")
    cases["pickle"] = (tmp_path / "pickled.pt", "pickled Python objects")
    torch.jit.save(torch.jit.script(torch.nn.Linear(2, 2)), tmp_path / "ts.pt")
    cases["torchscript"] = (tmp_path / "ts.pt", "TorchScript")
    from safetensors.torch import save_file

    save_file({"w": torch.zeros(2)}, tmp_path / "w.safetensors")
    cases["safetensors"] = (tmp_path / "w.safetensors", "no architecture")
    assert invoke("export", teacher, "--out", tmp_path / "m.onnx").exit_code == 0
    cases["onnx"] = (tmp_path / "m.onnx", "is an ONNX model")
    messages = set()
    for name, (path, fragment) in cases.items():
        msg = one_line(invoke("train", "--model", path, *SMALL, "--out", tmp_path / f"o_{name}"), 2, fragment)
        messages.add(msg.split(": ", 2)[-1])
    assert len(messages) == len(cases)
    # trusting a file that is no pickle at all does not make it one
    one_line(invoke("train", "--model", tmp_path / "img.pt", "--trust-code", *SMALL, "--out", tmp_path / "o"), 2, "PNG")
    assert not list(tmp_path.glob("o*")) and not list(tmp_path.glob(".*"))


def test_a_checkpoint_with_wrong_tensor_shapes_is_refused_on_load(teacher, tmp_path):
    payload = torch.load(teacher / "model.pt", weights_only=True)
    name = next(k for k, v in payload["state_dict"].items() if v.ndim == 4)
    payload["state_dict"][name] = torch.zeros(3, 1, 1, 1)
    torch.save(payload, tmp_path / "bad.pt")
    one_line(invoke("train", "--model", tmp_path / "bad.pt", *SMALL, "--out", tmp_path / "o"), 2, "do not fit")


@pytest.mark.parametrize(
    "args, fragment",
    [
        (["train", "--model", "builtin:simple_cnn", "--width", "nan"], "finite"),
        (["train", "--model", "builtin:simple_cnn", "--image-size", "100000"], "between 1 and 4096"),
        (["train", "--model", "builtin:simple_cnn", "--weights-map", "zap"], "'names' or 'order'"),
        (["train", "--model", "builtin:simple_cnn", "--weights-map", "order"], "goes with --weights"),
    ],
)
def test_adversarial_pass_findings_are_one_line_errors(args, fragment, tmp_path):
    one_line(invoke(*args, "--out", tmp_path / "o"), 2, fragment)
    assert leftovers(tmp_path) == []


def test_bench_and_info_check_their_options(teacher, tmp_path):
    assert invoke("export", teacher, "--out", tmp_path / "m.onnx").exit_code == 0
    one_line(invoke("bench", tmp_path / "m.onnx", "--threads", "-1"), 2, "at least 0")
    one_line(invoke("bench", tmp_path / "m.onnx", "--min-time", "nan"), 2, "finite")
    one_line(invoke("info", tmp_path / "m.onnx", "--prunable"), 2, "needs a PyTorch model")


def test_run_check_opens_the_weights_a_step_names(tmp_path):
    recipe = tmp_path / "r.yaml"
    recipe.write_text(
        "name: x\nsteps:\n  - {name: a, technique: train, method: as_is, model: torchvision:resnet18, "
        f"weights: {tmp_path / 'missing.pt'}}}\n"
    )
    one_line(invoke("run", recipe, "--check"), 2, "model not found")


def test_a_lock_file_that_cannot_be_written_is_not_left_behind(tmp_path, monkeypatch):
    import compress.runs as runs
    from compress.runs import RunDir

    def full(fd, data):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(runs.os, "write", full)
    with pytest.raises(OSError):
        RunDir(tmp_path / "r", "train")
    assert list(tmp_path.iterdir()) == []
