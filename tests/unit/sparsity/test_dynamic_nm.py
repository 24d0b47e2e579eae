"""dynamic-nm: nested masks, hard routing per sample, the exported graph runs the routing in ORT."""

import numpy as np
import pytest
import torch
from torch import nn

from compress.models.model import Model
from compress.prune.dynamic_nm import DynamicNMConfig, RoutedNM, Router, level_flops
from compress.prune.nm import nm_layers
from compress.sparsity import pattern_report


class ScaleRouter(nn.Module):
    def forward(self, x):
        m = x.abs().mean(dim=(1, 2, 3))
        return torch.stack([-m, -(m - 1.5).abs(), m - 3.0], dim=1)


def _routed():
    torch.manual_seed(0)
    base = nn.Sequential(
        nn.Conv2d(4, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU(), nn.Conv2d(8, 4, 3, padding=1)
    ).eval()
    masked, _ = nm_layers(base, 4)
    levels = [(1, 4), (2, 4), (4, 4)]
    return RoutedNM(base, Router(4, 3, 4), levels, masked).eval()


def test_masks_are_nested_and_flops_fall_with_n():
    r = _routed()
    for name in r.masked:
        m1, m2, m4 = (getattr(r, f"mask{i}__{name}") for i in range(3))
        assert (m1 <= m2).all() and (m2 <= m4).all() and m4.all()
        assert m1.float().mean() == 0.25 and m2.float().mean() == 0.5
    f = level_flops(r.base, r.router, r.masked, [(1, 4), (2, 4), (4, 4)], (4, 6, 6))
    assert f["level_macs"][0] < f["level_macs"][1] < f["level_macs"][2] == f["dense_macs"] + f["router_macs"]


def test_hard_routing_picks_each_samples_level_and_the_export_runs_it(tmp_path):
    from compress.export.onnx import ExportConfig, export_onnx

    r = _routed()
    r.router = ScaleRouter()  # small inputs to 1:4, medium to 2:4, large to dense
    x = torch.randn(16, 4, 6, 6) * torch.linspace(0.05, 8, 16).view(-1, 1, 1, 1)
    choice = r.router(x).argmax(1)
    assert set(choice.tolist()) == {0, 1, 2}
    with torch.no_grad():
        y = r(x)
    for i in range(16):
        expect = r.run_level(int(choice[i]), x[i : i + 1])
        assert torch.allclose(y[i : i + 1], expect, atol=1e-5)
    deployed = r.deployable()
    assert torch.allclose(deployed(x), y, atol=1e-5)
    path = tmp_path / "routed.onnx"
    report = export_onnx(Model(deployed, {}, (4, 6, 6), "denoising"), path, ExportConfig(exporter="torchscript"))
    assert report["parity"]["ok"]
    import onnxruntime as ort

    out = ort.InferenceSession(str(path)).run(None, {"input": x.numpy()})[0]
    assert np.allclose(out, y.numpy(), atol=1e-4)
    rep = pattern_report(path, "1:4")
    assert rep["sparse_layers"] >= 1  # the 1:4 level's conv weights carry their pattern into the file


def test_config_rules():
    with pytest.raises(ValueError, match="one M"):
        DynamicNMConfig(levels=["1:4", "2:8"])
    with pytest.raises(ValueError, match="at least two"):
        DynamicNMConfig(levels=["2:4"])
    with pytest.raises(ValueError, match="shares"):
        DynamicNMConfig(shares=[1.0])
