"""Channel pruning of a representative set of torchvision models: shape, size, reload, ONNX parity."""

from __future__ import annotations

import pytest
import torch

from compress.export.onnx import ExportConfig, export_onnx
from compress.methods import Context, get_method
from compress.models.checkpoint import load_checkpoint, save_model
from compress.models.model import Model
from compress.models.sources import load_model
from compress.prune.channel import ChannelConfig, prune_channels

SHAPE = (3, 32, 32)
ONNX = ExportConfig(exporter="torchscript", parity_batch=2)


def prune(model: Model, **cfg):
    return get_method("prune", "channel").fn(model, ChannelConfig(**cfg), Context())


def tv(name: str) -> Model:
    return load_model(f"torchvision:{name}", num_classes=10, input_shape=SHAPE)


@pytest.fixture(scope="module")
def resnet18():
    model = tv("resnet18")
    return model, prune(model, ratio=0.5, round_to=8)


def check_reload(model: Model, result, tmp_path) -> None:
    x = torch.randn(2, *SHAPE)
    with torch.no_grad():
        y = result.model.module.eval()(x)
    assert y.shape == (2, 10)
    path = save_model(result.model, tmp_path / "p.pt")
    dense = save_model(model, tmp_path / "d.pt")
    assert path.stat().st_size < 0.75 * dense.stat().st_size
    with torch.no_grad():
        torch.testing.assert_close(load_checkpoint(path).module(x), y)


def test_resnet18_shrinks_reloads_and_exports(resnet18, tmp_path):
    model, result = resnet18
    m = result.metrics
    assert m["verified"] == "exact" and m["params_ratio"] < 0.4 and m["macs_ratio"] < 0.4
    convs = [c for c in result.model.module.modules() if isinstance(c, torch.nn.Conv2d) and c.in_channels > 3]
    assert all(c.out_channels % 8 == 0 for c in convs)  # round_to
    check_reload(model, result, tmp_path)
    report = export_onnx(result.model, tmp_path / "p.onnx", ONNX)
    assert report["parity"]["ok"]
    assert report["bytes"] < 0.4 * sum(p.numel() * 4 for p in model.module.parameters())


@pytest.mark.parametrize("name", ["mobilenet_v3_small", "shufflenet_v2_x0_5"])
def test_mobile_nets_prune_reload_and_export(name, tmp_path):
    model = tv(name)
    result = prune(model, ratio=0.5)
    assert result.metrics["verified"] == "exact"
    assert result.metrics["params_ratio"] < 0.75 and result.metrics["macs_ratio"] < 0.75
    check_reload(model, result, tmp_path)
    assert export_onnx(result.model, tmp_path / "p.onnx", ONNX)["parity"]["ok"]


def test_target_macs_is_reached_with_global_allocation():
    result = prune(tv("resnet18"), target_macs=0.4, allocation="global", importance="l1")
    assert 0.3 < result.metrics["macs_ratio"] <= 0.4


def test_vit_heads_and_mlp_shrink_reload_and_export(tmp_path):
    from torchvision.models.vision_transformer import VisionTransformer

    from compress.layers import PrunableAttention

    vit = VisionTransformer(
        image_size=32, patch_size=8, num_layers=2, num_heads=4, hidden_dim=32, mlp_dim=64, num_classes=10
    ).eval()
    model = Model(vit, {"source": "test", "name": "vit", "kwargs": {}}, SHAPE)
    pruned, metrics = prune_channels(model, ChannelConfig(ratio=0.5))
    assert metrics["verified"] == "exact"  # heads removed whole: equal to the masked unpruned model
    layer = pruned.module.encoder.layers[0]
    assert isinstance(layer.self_attention, PrunableAttention)
    assert layer.self_attention.get_config()["num_heads"] == 2 and layer.self_attention.q_proj.out_features == 16
    assert layer.mlp[0].out_features == 32 and layer.mlp[3].in_features == 32
    groups = {g["name"]: g for g in metrics["report"]["groups"]}
    assert not groups["conv_proj"]["prunable_units"] and groups["conv_proj"]["reasons"]  # residual stream whole
    assert export_onnx(pruned, tmp_path / "vit.onnx", ONNX)["parity"]["ok"]


@pytest.mark.slow
def test_vit_b_16_checkpoint_round_trip(tmp_path):
    """The real vit_b_16 (86M parameters) with heads removed reloads from its checkpoint (~30 s)."""
    model = load_model("torchvision:vit_b_16", num_classes=10, input_shape=SHAPE, kwargs={"image_size": 32})
    pruned, metrics = prune_channels(model, ChannelConfig(ratio=0.5, verify=False))
    assert metrics["params_ratio"] < 0.6
    x = torch.randn(1, *SHAPE)
    path = save_model(pruned, tmp_path / "vit.pt")
    with torch.no_grad():
        torch.testing.assert_close(load_checkpoint(path).module(x), pruned.module.eval()(x))
