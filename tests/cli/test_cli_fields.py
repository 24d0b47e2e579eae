"""Method options derived from the config dataclasses: every field a flag, typed and documented, and
a flag the chosen method lacks is a one-line error."""

import dataclasses
import json
from typing import get_type_hints

import pytest
from typer.testing import CliRunner

from compress.cli import fields
from compress.cli.main import app
from compress.methods import get_method, method_names

runner = CliRunner()
SMALL = ["--data", "digits", "--image-size", "16", "--limit", "160"]
COMMANDS = {"prune": (), "quantize": (), "distill": ("teacher_layer", "student_layer"), "train": ()}


def invoke(*args):
    return runner.invoke(app, [str(a) for a in args])


def _own_options(technique):
    cmd = __import__("typer").main.get_command(app).commands[technique]
    return {p.name for p in cmd.params}


@pytest.mark.parametrize("technique", sorted(COMMANDS))
def test_every_expressible_field_of_every_method_is_a_documented_flag(technique):
    own = _own_options(technique) | set(COMMANDS[technique])
    flags = {f.name: f for f in fields.method_flags(technique, frozenset(own))}
    for method in method_names(technique):
        cls = get_method(technique, method).config
        hints = get_type_hints(cls)
        for f in dataclasses.fields(cls):
            if f.name in own or fields._cli_type(hints[f.name]) is None:
                continue
            assert f.name in flags, f"{technique} {method}.{f.name} has no flag"
            assert method in flags[f.name].methods
            text = flags[f.name].help.split(":", 1)[1].split("(default")[0].strip()
            assert text, f"{technique} {method}.{f.name} has no line in its config's Attributes docstring"


def test_help_lists_derived_options_in_their_panel():
    r = runner.invoke(app, ["quantize", "--help"], env={"COLUMNS": "200", "TERMINAL_WIDTH": "200"})
    assert r.exit_code == 0
    assert fields.PANEL.split(" (")[0] in r.output
    for flag in ("--overflow-fix", "--kmeans-iters", "--mixed-by-latency", "--qat-lr"):
        assert flag in r.output


def test_field_docs_reads_grouped_and_continued_lines():
    @dataclasses.dataclass
    class Demo:
        """Demo.

        Attributes:
            alpha: first line
                continued.
            lo / hi: a range.
            a, b: two at once.
        """

        alpha: float = 1.0

    docs = fields.field_docs(Demo)
    assert docs == {"alpha": "first line continued.", "lo": "a range.", "hi": "a range.", "a": "two at once.",
                    "b": "two at once."}  # fmt: skip


def test_a_flag_without_a_hand_written_entry_reaches_the_config(tmp_path):
    teacher = tmp_path / "t"
    r = invoke("train", "--model", "builtin:simple_cnn", "--width", "0.25", *SMALL, "--epochs", "1",
               "--weight-decay", "0.001", "--schedule", "constant", "--out", teacher)  # fmt: skip
    assert r.exit_code == 0, r.output
    step = json.loads((teacher / "manifest.json").read_text())["steps"][-1]
    assert step["params"]["weight_decay"] == 0.001 and step["params"]["schedule"] == "constant"

    out = tmp_path / "k"
    r = invoke("quantize", "--model", teacher, "--method", "kmeans", "--bits", "3", "--kmeans-iters", "2",
               "--skip", "14", "--skip", "^14$", *SMALL, "--out", out)  # fmt: skip
    assert r.exit_code == 0, r.output
    params = json.loads((out / "manifest.json").read_text())["steps"][-1]["params"]
    assert params["kmeans_iters"] == 2 and params["bits"] == 3 and params["skip"] == ["14", "^14$"]


@pytest.mark.parametrize(
    "args, message",
    [
        (
            ["quantize", "--method", "kmeans", "--qat-epochs", "1"],
            "--qat-epochs does not apply to quantize method 'kmeans'",
        ),
        (["quantize", "--method", "kmeans", "--lr", "0.1"], "--lr does not apply to quantize method 'kmeans'"),
        (
            ["distill", "--teacher", "x", "--student", "builtin:simple_cnn", "--method", "msd", "--scales", "1,x"],
            "--scales: 'x' is not a number",
        ),
        (
            ["distill", "--teacher", "x", "--student", "builtin:simple_cnn", "--method", "kd", "--mode", "consistent"],
            "--mode does not apply to distill method 'kd'",
        ),
        (["prune", "--method", "nm", "--ratio", "0.5"], "--ratio does not apply to prune method 'nm'"),
    ],
)
def test_a_flag_the_method_lacks_is_a_one_line_error(tmp_path, args, message):
    extra = [] if args[0] == "distill" else ["--model", "builtin:simple_cnn"]
    r = invoke(*args, *extra, "--data", "digits", "--out", tmp_path / "o")
    assert r.exit_code != 0
    assert message in r.output and len(r.output.strip().splitlines()) == 1, r.output
    assert not (tmp_path / "o").exists()


def test_lists_of_numbers_and_levels_split_on_commas():
    msd = get_method("distill", "msd").config
    params = {}
    fields.apply_fields("distill", "msd", msd, params, {"scales": ["1,2", "4"]})
    assert params == {"scales": [1, 2, 4]}
    dyn = get_method("prune", "dynamic-nm").config
    fields.apply_fields("prune", "dynamic-nm", dyn, params, {"levels": ["1:4,4:4"]})
    assert params["levels"] == ["1:4", "4:4"]
    q = get_method("quantize", "codebook").config
    fields.apply_fields("quantize", "codebook", q, params, {"skip": ["a{1,2}"]})  # patterns are not split
    assert params["skip"] == ["a{1,2}"]


def test_training_options_land_in_the_methods_training_section():
    params = {}
    nm = get_method("prune", "nm").config
    assert fields.route_shared(nm, params, strict={"epochs": 3, "lr": None}, loose={"seed": 7}) == []
    assert params == {"finetune": {"epochs": 3, "seed": 7}}
    params = {}
    bitwise = get_method("quantize", "bitwise").config
    fields.route_shared(bitwise, params, strict={"epochs": 2, "lr": 0.01}, loose={})
    assert params == {"epochs": 2, "lr": 0.01}  # its own fields, not a section
    kmeans = get_method("quantize", "kmeans").config
    assert fields.route_shared(kmeans, {}, strict={"epochs": 2}, loose={"seed": 1}) == ["epochs"]


def test_a_flag_typed_as_text_by_one_method_is_a_switch_for_another():
    nm = get_method("prune", "nm").config  # distill: bool here, a method name for channel pruning
    params = {}
    fields.apply_fields("prune", "nm", nm, params, {"distill": "true"})
    assert params == {"distill": True}
    with pytest.raises(Exception, match="takes true or false, got 'funmatch'"):
        fields.apply_fields("prune", "nm", nm, params, {"distill": "funmatch"})
    channel = get_method("prune", "channel").config
    fields.apply_fields("prune", "channel", channel, params, {"distill": "funmatch"})
    assert params["distill"] == "funmatch"
