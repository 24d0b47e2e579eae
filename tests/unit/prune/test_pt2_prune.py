"""Pruning `torch.export` programs (`.pt2`): the ATen graph rebuilt with layers, pruned, saved as a program."""

import json

import torch
import torch.nn.functional as F
from torch import nn
from typer.testing import CliRunner

from compress.api import prune
from compress.cli.main import app
from compress.models import load_model
from compress.models.model import Model
from compress.models.pt2 import inspect_archive, is_export_archive
from compress.prune.channel import ChannelConfig, prune_channels
from compress.prune.exported import prunable_module, rebuild_layers

SHAPE = (3, 16, 16)


class Net(nn.Module):
    """Conv-BN-ReLU, a depthwise conv in a residual, a squeeze-excitation gate, `view(size(0), -1)`."""

    def __init__(self) -> None:
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(3, 16, 3, padding=1), nn.BatchNorm2d(16), nn.ReLU())
        self.dw = nn.Conv2d(16, 16, 3, padding=1, groups=16)
        self.bn = nn.BatchNorm2d(16)
        self.se = nn.Conv2d(16, 16, 1)
        self.proj = nn.Conv2d(16, 24, 3, stride=2, padding=1)
        self.fc = nn.Linear(24 * 2 * 2, 5)

    def forward(self, x):
        x = self.stem(x)
        x = x + F.hardswish(self.bn(self.dw(x)))
        x = x * torch.sigmoid(self.se(x.mean((2, 3), keepdim=True)))
        x = F.adaptive_avg_pool2d(F.relu(self.proj(x)), 2)
        return self.fc(x.view(x.size(0), -1))


def _net() -> nn.Module:
    torch.manual_seed(0)
    net = Net()
    for m in net.modules():  # running statistics that matter, so a wrong batch norm shows
        if isinstance(m, nn.BatchNorm2d):
            m.running_mean.uniform_(-0.5, 0.5)
            m.running_var.uniform_(0.5, 2.0)
            m.weight.data.uniform_(0.5, 1.5)
    return net.eval()


def _save(net: nn.Module, path, *, decompose: bool = False):
    program = torch.export.export(net, (torch.randn(1, *SHAPE),))  # batch 1: `size(0)` becomes a literal
    if decompose:
        program = program.run_decompositions()
    torch.export.save(program, path)
    return path


def invoke(*args):
    return CliRunner().invoke(app, [str(a) for a in args])


def test_prune_cli_on_a_pt2_shrinks_it_and_saves_a_program_that_reloads_without_trust(tmp_path):
    path = _save(_net(), tmp_path / "net.pt2")
    out = tmp_path / "pruned"
    r = invoke("prune", "--model", path, "--ratio", "0.5", "--input-shape", "3,16,16", "--out", out)
    assert r.exit_code == 0, r.output
    metrics = json.loads((out / "manifest.json").read_text())["metrics"]
    assert metrics["macs_after"] < 0.6 * metrics["macs_before"]
    assert metrics["verified"] == "exact"  # the pruned graph equals the masked dense one
    saved = out / "model.pt"
    assert is_export_archive(saved)  # a torch.export program again, not a pickle
    assert inspect_archive(saved.read_bytes(), str(saved)) == []  # the trust gate lets it through
    reloaded = load_model(str(out))
    in_memory = prune(load_model(str(path)), ChannelConfig(ratio=0.5)).model.module.eval()
    x = torch.randn(3, *SHAPE)
    with torch.no_grad():
        torch.testing.assert_close(reloaded.module(x), in_memory(x))
    assert reloaded.input_shape == SHAPE
    r = invoke("info", out)
    assert r.exit_code == 0, r.output


def test_a_pt2_prunes_like_the_module_it_was_exported_from(tmp_path):
    net = _net()
    model = load_model(str(_save(net, tmp_path / "net.pt2")))
    direct, m_direct = prune_channels(Model(net, {"source": "test"}, SHAPE), ChannelConfig(ratio=0.5))
    via_pt2, m_pt2 = prune_channels(Model(prunable_module(model.module), model.arch, SHAPE), ChannelConfig(ratio=0.5))
    assert m_pt2["macs_after"] == m_direct["macs_after"]
    assert m_pt2["groups_prunable"] == m_direct["groups_prunable"]
    assert via_pt2.module.dw.groups == direct.module.dw.groups < 16  # whole depthwise groups went
    x = torch.randn(2, *SHAPE)
    with torch.no_grad():
        torch.testing.assert_close(via_pt2.module.eval()(x), direct.module.eval()(x))


def test_rebuilt_layers_are_modules_and_the_batch_follows_the_input(tmp_path):
    for decompose in (False, True):  # training IR (aten.conv2d, batch_norm, linear) and core ATen
        net = _net()
        program = torch.export.load(_save(net, tmp_path / f"net{decompose}.pt2", decompose=decompose))
        rebuilt = rebuild_layers(program.module()).eval()
        kinds = {type(m) for m in rebuilt.modules()}
        assert {nn.Conv2d, nn.BatchNorm2d, nn.Linear} <= kinds
        assert rebuilt.get_submodule("stem.0").weight.shape == (16, 3, 3, 3)  # named after the original
        x = torch.randn(4, *SHAPE)  # exported at batch 1; the literal batch in view() now follows x
        with torch.no_grad():
            torch.testing.assert_close(rebuilt(x), net(x))


class Flipped(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.a = nn.Conv2d(3, 8, 3, padding=1)
        self.b = nn.Conv2d(8, 8, 3, padding=1)
        self.c = nn.Conv2d(8, 4, 3, padding=1)

    def forward(self, x):
        return self.c(torch.relu(self.b(torch.flip(self.a(x), [1]))))  # aten.flip: unknown to the pruner


def test_an_aten_op_the_pruner_does_not_know_keeps_its_channels_whole(tmp_path):
    torch.manual_seed(0)
    net = Flipped().eval()
    path = tmp_path / "flip.pt2"
    torch.export.save(torch.export.export(net, (torch.randn(1, *SHAPE),)), path)
    result = prune(load_model(str(path)), ChannelConfig(ratio=0.5))
    module = result.model.module
    assert module.a.out_channels == 8  # flipped channels: left whole
    assert module.b.out_channels == 4  # understood: pruned
    x = torch.randn(2, *SHAPE)
    assert result.metrics["verified"] == "exact"
    assert module(x).shape == (2, 4, 16, 16)


def test_nm_pruning_works_on_a_pt2(tmp_path):
    from compress.prune.nm import NMConfig

    model = load_model(str(_save(_net(), tmp_path / "net.pt2")))
    result = prune(model, NMConfig())
    assert result.metrics["pattern_holds"]
    assert result.metrics["sparse_layers"] >= 3


def test_a_pt2_with_two_inputs_is_a_one_line_error(tmp_path):
    class Two(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.a = nn.Linear(4, 4)

        def forward(self, x, y):
            return self.a(x) + y

    path = tmp_path / "two.pt2"
    torch.export.save(torch.export.export(Two().eval(), (torch.randn(1, 4), torch.randn(1, 4))), path)
    r = invoke("prune", "--model", path, "--ratio", "0.5", "--out", tmp_path / "out")
    assert r.exit_code == 2, r.output
    assert "Traceback" not in r.output
    assert "takes 2 inputs" in r.output and len(r.output.strip().splitlines()) == 1
