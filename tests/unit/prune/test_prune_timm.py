"""Channel pruning of timm networks at small sizes: pruned, run, exported to ONNX with ORT parity.

One representative per structure the analysis has to follow: functional BatchNormAct2d
(efficientnet_lite0), vision transformers with optional forward arguments and heads
sized by `self.num_heads` (deit), windowed attention with pad / roll / relative position bias (a
small swin), literal splits whose size is a module attribute (res2net, cspnet), a layer scale
reshaped to an attribute tuple (poolformer) and MobileViT blocks that branch on the feature-map size
and unfold / fold patches (mobilevit).
"""

from __future__ import annotations

import pytest
import torch

from compress.export.onnx import ExportConfig, export_onnx
from compress.models.model import Model
from compress.prune.channel import ChannelConfig, prune_channels

timm = pytest.importorskip("timm")

ONNX = ExportConfig(exporter="torchscript", parity_batch=2)


def _swin():
    from timm.models.swin_transformer import SwinTransformer

    return SwinTransformer(
        img_size=32, patch_size=4, window_size=4, embed_dim=32, depths=(2, 2), num_heads=(2, 4), num_classes=10
    )


def _deit():
    return timm.create_model("deit_tiny_patch16_224", pretrained=False, img_size=32, depth=2, num_classes=10)


def _res2net():
    from timm.models.res2net import Bottle2neck
    from timm.models.resnet import ResNet

    return ResNet(
        Bottle2neck, [1, 1, 1, 1], base_width=14, block_args={"scale": 4}, channels=(16, 32, 32, 32), num_classes=10
    )


def _cspnet():
    return timm.create_model("cspresnet50", pretrained=False, num_classes=10)


def _efficientnet():
    from timm.models.efficientnet import _gen_efficientnet_lite

    return _gen_efficientnet_lite("efficientnet_lite0", channel_multiplier=0.5, depth_multiplier=0.5, num_classes=10)


def _poolformer():
    from timm.layers import GroupNorm1
    from timm.models.metaformer import MetaFormer

    return MetaFormer(
        depths=(1, 1, 1, 1),
        dims=(16, 32, 48, 64),
        downsample_norm=None,
        norm_layers=GroupNorm1,
        layer_scale_init_values=1e-5,
        use_mlp_head=False,
        num_classes=10,
    )


def _mobilevit():
    return timm.create_model("mobilevit_xxs", pretrained=False, num_classes=10)


# name: (builder, input size, verification: "exact" where nothing normalises across pruned channels)
NETS = {
    "efficientnet_lite0": (_efficientnet, 32, "exact"),
    "deit_tiny": (_deit, 32, "shape"),
    "swin": (_swin, 32, "shape"),
    "res2net": (_res2net, 32, "exact"),
    "poolformer": (_poolformer, 32, "shape"),
    "mobilevit": (_mobilevit, 64, "shape"),
}


@pytest.mark.parametrize("name", list(NETS))
def test_timm_net_prunes_runs_and_exports(name, tmp_path):
    build, size, verified = NETS[name]
    torch.manual_seed(0)
    shape = (3, size, size)
    model = Model(build().eval(), {"source": "timm", "name": name, "kwargs": {}}, shape)
    pruned, metrics = prune_channels(model, ChannelConfig(ratio=0.5, round_to=8))
    assert metrics["macs_ratio"] < 0.6, metrics["report"]["groups"][:3]
    assert metrics["verified"] == verified  # the pruned model ran (and matched the masked dense one)
    x = torch.randn(2, *shape)
    with torch.no_grad():
        assert pruned.module.eval()(x).shape == (2, 10)
    assert export_onnx(pruned, tmp_path / "p.onnx", ONNX)["parity"]["ok"]


def test_deit_heads_follow_num_heads():
    model = Model(_deit().eval(), {"source": "timm", "name": "deit", "kwargs": {}}, (3, 32, 32))
    pruned, _ = prune_channels(model, ChannelConfig(ratio=0.5))
    attn = pruned.module.blocks[0].attn
    assert attn.num_heads < 3 and attn.qkv.out_features == 3 * attn.num_heads * attn.head_dim
    assert attn.proj.in_features == attn.num_heads * attn.head_dim == attn.attn_dim
