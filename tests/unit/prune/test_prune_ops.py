"""One tiny module per op handler of `compress.prune.ops`: labels flow, removal is consistent."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from test_prune_graph import assert_exact, group_of, prune_half
from torch import nn

from compress.errors import ModelError
from compress.prune.graph import analyze
from compress.prune.ops import register_module, register_resize
from compress.prune.ops.layers import linear, resize_in_place

SHAPE = (3, 8, 8)


class FunctionalConvBN(nn.Module):
    """timm style: subclasses whose forward calls F.conv2d / F.batch_norm / F.linear on their params."""

    class Conv(nn.Conv2d):
        def forward(self, x):
            return F.conv2d(x, self.weight, self.bias, self.stride, self.padding, self.dilation, self.groups)

    class BNAct(nn.BatchNorm2d):
        def forward(self, x):
            x = F.batch_norm(x, self.running_mean, self.running_var, self.weight, self.bias, False, 0.1, self.eps)
            return F.relu(x)

    class Linear(nn.Linear):
        def forward(self, x):
            return F.linear(x, self.weight, self.bias)

    def __init__(self) -> None:
        super().__init__()
        self.c1, self.b1 = self.Conv(3, 16, 3, padding=1), self.BNAct(16)
        self.dw, self.b2 = self.Conv(16, 16, 3, padding=1, groups=16), self.BNAct(16)
        self.fc1, self.fc2 = self.Linear(16, 12), self.Linear(12, 5)

    def forward(self, x):
        x = self.b2(self.dw(self.b1(self.c1(x))))
        return self.fc2(F.relu(self.fc1(x.mean((2, 3)))))


def test_functional_conv_batchnorm_linear_are_coupled_to_their_params():
    graph = analyze(FunctionalConvBN().eval(), SHAPE)
    g = group_of(graph, "c1")
    assert {"c1", "dw"} <= set(g.modules) and len(g.prunable) == 16  # depthwise ties in to out
    assert len(group_of(graph, "fc1").prunable) == 12
    work, ref, _, _ = prune_half(FunctionalConvBN(), SHAPE)
    assert_exact(work, ref, SHAPE)
    n = work.c1.out_channels
    assert n < 16 and work.b1.weight.shape == work.b1.running_var.shape == (n,) and work.b1.num_features == n
    assert work.dw.groups == work.dw.in_channels == n and work.fc1.in_features == n
    assert isinstance(work.c1, FunctionalConvBN.Conv)  # subclasses are resized in place


class LayerNorm2d(nn.LayerNorm):
    """timm's LayerNorm2d: channels-last F.layer_norm on an NCHW tensor."""

    def forward(self, x):
        x = F.layer_norm(x.permute(0, 2, 3, 1), self.normalized_shape, self.weight, self.bias, self.eps)
        return x.permute(0, 3, 1, 2)


class Norms(nn.Module):
    """F.group_norm (grouped and GroupNorm1) and a channels-last F.layer_norm (timm LayerNorm2d)."""

    def __init__(self) -> None:
        super().__init__()
        self.c1, self.g1 = nn.Conv2d(3, 16, 1), nn.GroupNorm(4, 16)
        self.c2, self.g2 = nn.Conv2d(16, 8, 1), nn.GroupNorm(1, 8)
        self.ln = LayerNorm2d(8)
        self.c3 = nn.Conv2d(8, 4, 1)

    def forward(self, x):
        x = F.group_norm(self.c1(x), 4, self.g1.weight, self.g1.bias)
        x = F.group_norm(self.c2(x), 1, self.g2.weight, self.g2.bias)
        return self.c3(self.ln(x)).mean((2, 3))


def test_functional_group_and_layer_norm():
    graph = analyze(Norms().eval(), SHAPE)
    assert len(group_of(graph, "c1").prunable) == 4  # groups of 4 channels go whole
    assert len(group_of(graph, "c2").prunable) == 8  # GroupNorm1 / LayerNorm: per channel
    assert {"g2.weight", "ln.weight"} <= {f"{s.module}.{s.param}" for s in graph.slots if s.role == "norm"}
    work, _, _, keep = prune_half(Norms(), SHAPE)
    assert work.c1.out_channels % 4 == 0 and work.g1.weight.shape[0] == work.c1.out_channels
    assert work.ln.weight.shape[0] == work.c2.out_channels == work.c3.in_channels < 8
    assert work.ln.normalized_shape == (work.c2.out_channels,)
    assert work(torch.randn(2, *SHAPE)).shape == (2, 4)


class HeadsAttention(nn.Module):
    """timm Attention: optional forward args, heads from self.num_heads, SDPA, reshape(B, N, C)."""

    def __init__(self, dim: int = 16, heads: int = 4) -> None:
        super().__init__()
        self.num_heads, self.head_dim = heads, dim // heads
        self.embed = nn.Conv2d(3, dim, 2, 2)
        self.qkv, self.proj = nn.Linear(dim, 3 * dim), nn.Linear(dim, dim)
        self.fc = nn.Linear(dim, 5)

    def forward(self, x, attn_mask=None, is_causal: bool = False):
        x = self.embed(x).flatten(2).transpose(1, 2)
        B, N, C = x.shape
        qkv = self.qkv(x).reshape(B, N, 3, self.num_heads, self.head_dim).permute(2, 0, 3, 1, 4)
        q, k, v = qkv.unbind(0)
        y = F.scaled_dot_product_attention(q, k, v, attn_mask=attn_mask, is_causal=is_causal)
        x = x + self.proj(y.transpose(1, 2).reshape(B, N, C))
        return self.fc(x.mean(1))


def test_optional_args_bound_and_heads_follow_num_heads():
    graph = analyze(HeadsAttention().eval(), SHAPE)  # three forward args: two bound as constants
    assert len(group_of(graph, "qkv").prunable) == 4  # one unit per head
    work, ref, _, _ = prune_half(HeadsAttention(), SHAPE)
    assert_exact(work, ref, SHAPE)
    assert work.num_heads < 4 and work.qkv.out_features == 3 * work.num_heads * work.head_dim
    assert work.proj.in_features == work.num_heads * work.head_dim


class SizeFromOther(nn.Module):
    """edgenext: reshape(B, N, C) with C read from the residual's shape ties both widths."""

    def __init__(self) -> None:
        super().__init__()
        self.stem, self.inner = nn.Linear(3, 8), nn.Linear(8, 8)
        self.fc = nn.Linear(8, 5)

    def forward(self, x):
        x = self.stem(x.flatten(2).transpose(1, 2))
        B, N, C = x.shape
        y = self.inner(x).transpose(1, 2).reshape(B, C, N).transpose(1, 2).reshape(B, N, C)
        return self.fc((x + y).mean(1))


def test_size_read_from_a_shape_stays_tied_to_its_tensor():
    graph = analyze(SizeFromOther().eval(), SHAPE)
    assert group_of(graph, "stem") is group_of(graph, "inner")
    work, ref, _, _ = prune_half(SizeFromOther(), SHAPE)
    assert_exact(work, ref, SHAPE)
    assert work.stem.out_features == work.inner.out_features < 8


class Splits(nn.Module):
    """Literal split sizes that are attributes: res2net (int width), mixnet (list), cspnet (half)."""

    def __init__(self) -> None:
        super().__init__()
        self.width, self.splits, self.expand = 4, [4, 8], 16
        self.c1 = nn.Conv2d(3, 12, 1)
        self.a, self.b, self.c = nn.Conv2d(4, 4, 3, padding=1), nn.Conv2d(4, 4, 3, padding=1), nn.Conv2d(8, 8, 1)
        self.c2 = nn.Conv2d(12, 16, 1)
        self.fc = nn.Linear(8, 5)

    def forward(self, x):
        x = self.c1(x)
        s0, s1, s2 = torch.split(x, self.width, 1)
        x = torch.cat([self.a(s0), self.b(s1 + self.a(s0)), s2], 1)
        p, q = torch.split(x, self.splits, 1)
        x = self.c2(torch.cat([p, self.c(q)], 1))
        h0, h1 = x.split(self.expand // 2, dim=1)
        return self.fc((h0 * h1).mean((2, 3)))


def test_literal_splits_bound_to_attributes_are_updated():
    work, ref, graph, _ = prune_half(Splits(), SHAPE)
    assert not [r for g in graph.groups for r in g.reasons if "split" in r]
    assert_exact(work, ref, SHAPE)
    assert work.width == work.a.out_channels and work.c1.out_channels == 3 * work.width
    assert work.splits == [work.width, work.c.out_channels] and work.expand == work.c2.out_channels


class Windows(nn.Module):
    """swin: pad / roll on spatial axes, a bias table gathered with a constant index, full slices."""

    def __init__(self) -> None:
        super().__init__()
        self.out_chs = 8
        self.c1 = nn.Conv2d(3, 8, 1)
        self.table = nn.Parameter(torch.randn(9, 8))
        self.register_buffer("index", torch.randint(0, 9, (4,)))
        self.fc = nn.Linear(8, 5)

    def forward(self, x):
        x = self.c1(x).permute(0, 2, 3, 1)
        B, H, W, C = x.shape
        x = torch.roll(F.pad(x, (0, 0, 0, 1, 0, 1)), shifts=(1, 1), dims=(1, 2))[:, :H, :W, :]
        x = x + self.table[self.index].view(4, -1).mean(0)
        return self.fc(x.permute(0, 3, 1, 2)[:, : self.out_chs].mean((2, 3)))


def test_pad_roll_gather_and_full_slices_keep_channels_prunable():
    graph = analyze(Windows().eval(), SHAPE)
    assert len(group_of(graph, "c1").prunable) == 8
    work, ref, _, _ = prune_half(Windows(), SHAPE)
    assert_exact(work, ref, SHAPE)
    assert work.table.shape[1] == work.c1.out_channels < 8


class FlattenBN(nn.Module):
    """levit: bn(x.flatten(0, 1)).reshape_as(x), and a timm Scale: x * gamma.view(self.shape)."""

    def __init__(self) -> None:
        super().__init__()
        self.shape = (8, 1, 1)
        self.c1, self.bn = nn.Conv2d(3, 8, 1), nn.BatchNorm1d(8)
        self.gamma = nn.Parameter(torch.rand(8))
        self.fc = nn.Linear(8, 5)

    def forward(self, x):
        x = self.c1(x) * self.gamma.view(self.shape)
        t = x.flatten(2).transpose(1, 2)
        t = self.bn(t.flatten(0, 1)).reshape_as(t)
        return self.fc(F.normalize(t, dim=1).mean(1))


def test_flatten_bn_reshape_as_and_scale_view():
    graph = analyze(FlattenBN().eval(), SHAPE)
    assert len(group_of(graph, "c1").prunable) == 8
    work, ref, _, _ = prune_half(FlattenBN(), SHAPE)
    assert_exact(work, ref, SHAPE)
    assert work.shape == (work.c1.out_channels, 1, 1) and work.bn.num_features == work.c1.out_channels < 8


class PatchBlock(nn.Module):
    """mobilevit: the patch grid from the feature-map size, a branch on it, unfold / fold reshapes
    (B * C * n_h merges the batch with the channels) around a transformer-like residual MLP."""

    def __init__(self) -> None:
        super().__init__()
        self.patch_size, self.patch_area = (2, 2), 4
        self.conv_1x1 = nn.Conv2d(8, 8, 1, bias=False)
        self.fc1, self.fc2 = nn.Linear(8, 12), nn.Linear(12, 8)
        self.proj = nn.Conv2d(8, 8, 1)

    def forward(self, x):
        x = self.conv_1x1(x)
        patch_h, patch_w = self.patch_size
        B, C, H, W = x.shape
        new_h, new_w = math.ceil(H / patch_h) * patch_h, math.ceil(W / patch_w) * patch_w
        num_patch_h, num_patch_w = new_h // patch_h, new_w // patch_w
        num_patches = num_patch_h * num_patch_w
        interpolate = False
        if new_h != H or new_w != W:
            x = F.interpolate(x, size=(new_h, new_w), mode="bilinear", align_corners=False)
            interpolate = True
        x = x.reshape(B * C * num_patch_h, patch_h, num_patch_w, patch_w).transpose(1, 2)
        x = x.reshape(B, C, num_patches, self.patch_area).transpose(1, 3).reshape(B * self.patch_area, num_patches, -1)
        x = x + self.fc2(F.gelu(self.fc1(x)))
        x = x.contiguous().view(B, self.patch_area, num_patches, -1)
        x = x.transpose(1, 3).reshape(B * C * num_patch_h, num_patch_w, patch_h, patch_w)
        x = x.transpose(1, 2).reshape(B, C, num_patch_h * patch_h, num_patch_w * patch_w)
        if interpolate:
            x = F.interpolate(x, size=(H, W), mode="bilinear", align_corners=False)
        return self.proj(x)


class PatchNet(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.stem, self.block, self.fc = nn.Conv2d(3, 8, 3, padding=1), PatchBlock(), nn.Linear(16, 5)

    def forward(self, x):
        x = self.stem(x)
        return self.fc(torch.cat([x, self.block(x)], 1).mean((2, 3)))


def test_shape_branch_traced_on_the_example_input_and_patch_fold_follows_channels():
    graph = analyze(PatchNet().eval(), SHAPE)  # 8 x 8: the branch is not taken
    assert graph.opaque == []
    width = group_of(graph, "block.conv_1x1")
    assert {"block.conv_1x1", "block.fc2"} <= set(width.modules) and len(width.prunable) == 8
    assert len(group_of(graph, "block.fc1").prunable) == 12
    work, ref, _, _ = prune_half(PatchNet(), SHAPE)
    assert_exact(work, ref, SHAPE)  # batch 4, analysed at batch 2
    b = work.block
    assert b.conv_1x1.out_channels == b.fc1.in_features == b.fc2.out_features == b.proj.in_channels < 8
    odd = (3, 7, 7)  # the branch taken: interpolate, then the same reshapes
    work, ref, graph, _ = prune_half(PatchNet(), odd)
    assert graph.opaque == [] and len(group_of(graph, "block.conv_1x1").prunable) == 8
    assert_exact(work, ref, odd)


class WidthBranch(nn.Module):
    """A branch on a channel count: pruning would change the path, so that width stays whole."""

    def __init__(self) -> None:
        super().__init__()
        self.c1, self.c2, self.fc = nn.Conv2d(3, 8, 1), nn.Conv2d(8, 8, 1), nn.Linear(8, 5)

    def forward(self, x):
        x = self.c1(x)
        if x.shape[1] > 4:
            x = x * 2
        return self.fc(self.c2(x).mean((2, 3)))


class BatchBranch(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.c1 = nn.Conv2d(3, 8, 1)

    def forward(self, x):
        return self.c1(x) if x.shape[0] > 1 else self.c1(x) * 2


def test_values_fixed_when_tracing_never_come_from_widths_batch_or_data():
    graph = analyze(WidthBranch().eval(), SHAPE)
    c1 = group_of(graph, "c1")
    assert not c1.prunable and any("fixed when tracing" in r for r in c1.reasons)
    assert len(group_of(graph, "c2").prunable) == 8
    with pytest.raises(ModelError, match="cannot trace"):  # the path depends on the batch size
        analyze(BatchBranch().eval(), SHAPE)


class Gain(nn.Module):
    """A layer kind the analysis does not know: y = x @ w.T * g (its own parameters)."""

    def __init__(self, n_in: int, n_out: int) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.randn(n_out, n_in))

    def forward(self, x):
        return x @ self.weight.T


class WithGain(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.stem, self.gain, self.fc = nn.Linear(3, 8), Gain(8, 6), nn.Linear(6, 5)

    def forward(self, x):
        return self.fc(self.gain(self.stem(x.mean((2, 3)))))


def test_a_new_layer_kind_is_one_registered_handler(monkeypatch):
    from compress.prune.ops import registry

    monkeypatch.setattr(registry, "MODULES", dict(registry.MODULES))
    monkeypatch.setattr(registry, "RESIZE", dict(registry.RESIZE))

    @register_module(Gain)
    def gain_flow(g, node, m, args, kwargs):
        return linear(g, node, args[0], (node.target, "weight"), None, m.weight.shape)

    @register_resize(Gain)
    def gain_resize(old, params):
        resize_in_place(old, params)

    import compress.prune.graph as graph_mod

    monkeypatch.setattr(graph_mod._Tracer, "is_leaf_module", lambda self, m, q: isinstance(m, (Gain, nn.Linear)))
    graph = analyze(WithGain().eval(), SHAPE)
    assert len(group_of(graph, "gain").prunable) == 6 and len(group_of(graph, "stem").prunable) == 8
    keep = np.ones(graph.num_classes, dtype=bool)
    keep[graph.prunable_classes()[::2]] = False
    graph.apply(graph.repair(keep, np.ones(graph.num_classes)))
    net = graph.module
    assert net.gain.weight.shape == (net.fc.in_features, net.stem.out_features) and net.fc.in_features < 6
