import pytest
import torch
from torch import nn

from compress.distill.taps import FeatureTaps, auto_layers, pair_layers, resolve_layers
from compress.errors import RecipeError
from compress.models.builtin import dncnn, resnet_tiny, simple_cnn


def test_auto_layers_pick_stage_outputs():
    assert auto_layers(resnet_tiny(), (3, 32, 32)) == ["layer1", "layer2", "layer3"]
    # simple_cnn is one flat Sequential: the last activation at each resolution
    assert auto_layers(simple_cnn(), (3, 32, 32)) == ["2", "8", "11"]
    # a dense net: the feature trunk, not the output conv
    assert auto_layers(dncnn(), (1, 16, 16)) == ["features"]
    assert auto_layers(resnet_tiny(), (3, 32, 32), max_layers=1) == ["layer3"]


def test_taps_capture_named_outputs_and_remove_cleanly():
    net = resnet_tiny().eval()
    x = torch.randn(2, 3, 16, 16)
    taps = FeatureTaps(net, ["layer2", "layer3"])
    net(x)
    assert taps["layer2"].shape == (2, 32, 8, 8)
    assert torch.equal(taps["layer3"], net.layer3(net.layer2(net.layer1(net.stem(x)))))
    taps.remove()
    taps.outputs.clear()
    net(x)
    assert taps.outputs == {}


def test_wrong_layer_name_lists_candidates():
    with pytest.raises(RecipeError) as e:
        resolve_layers(resnet_tiny(), "layer9", (3, 32, 32), role="student")
    msg = str(e.value)
    assert "layer9" in msg and "did you mean" in msg and "layer2.conv1" in msg
    assert resolve_layers(resnet_tiny(), "layer1, layer3", (3, 32, 32)) == ["layer1", "layer3"]


def test_auto_fails_clearly_without_feature_maps():
    mlp = nn.Sequential(nn.Flatten(), nn.Linear(12, 4))
    with pytest.raises(RecipeError, match="candidates"):
        auto_layers(mlp, (3, 2, 2))


def test_pairing_by_depth():
    guide = ["g0", "g1", "g2", "g3"]
    target = ["t0", "t1"]
    # i * (Lt - 1) / (Lg - 1) = 0, 1/3, 2/3, 1 -> rounded 0, 0, 1, 1
    assert pair_layers(guide, target) == [("g0", "t0"), ("g1", "t0"), ("g2", "t1"), ("g3", "t1")]
    assert pair_layers(["g0", "g1"], ["t0", "t1", "t2", "t3", "t4"]) == [("g0", "t0"), ("g1", "t4")]
    assert pair_layers(["g"], ["a", "b"]) == [("g", "b")]
