"""Dependency groups on hand-built networks, and exactness of the physical removal."""

from __future__ import annotations

import copy

import numpy as np
import pytest
import torch
from prune_nets import (
    Attention,
    Concat,
    Depthwise,
    LiteralReshape,
    Residual,
    Shuffle,
    Untraceable,
    randomise_norms,
)

from compress.prune.graph import analyze, masked_reference

SHAPE = (3, 16, 16)


def group_of(graph, module: str):
    return next(g for g in graph.groups if module in g.modules)


def prune_half(net: torch.nn.Module, shape=SHAPE, seed: int = 0):
    """Remove a random half of every removable unit; returns (pruned, masked reference, graph, keep)."""
    net = randomise_norms(net)
    work = copy.deepcopy(net)
    graph = analyze(work, shape)
    rng = np.random.default_rng(seed)
    keep = np.ones(graph.num_classes, dtype=bool)
    units = graph.prunable_classes()
    keep[units[rng.random(units.size) < 0.5]] = False
    keep = graph.repair(keep, rng.random(graph.num_classes))
    ref = masked_reference(net, graph, keep)
    graph.apply(keep)
    return work, ref, graph, keep


def assert_exact(work, ref, shape=SHAPE):
    x = torch.randn(4, *shape)
    with torch.no_grad():
        y, yr = work(x), ref(x)
    assert y.shape == yr.shape
    torch.testing.assert_close(y, yr, rtol=1e-4, atol=1e-5)


def test_residual_add_couples_all_branches():
    graph = analyze(Residual().eval(), SHAPE)
    stream = group_of(graph, "stem.0")
    assert {"stem.0", "a2", "b2"} <= set(stream.modules)  # every branch of the adds shares indices
    assert group_of(graph, "a1.0") is not stream  # the inner width is independent
    assert len(stream.prunable) == 16
    fc = group_of(graph, "fc")
    assert not fc.prunable and "reaches the model output" in fc.reasons


def test_residual_pruned_is_exact_and_smaller():
    work, ref, _, _ = prune_half(Residual())
    assert_exact(work, ref)
    assert work.stem[0].out_channels < 16 and work.a2.out_channels == work.stem[0].out_channels
    assert work.fc.in_features == work.stem[0].out_channels and work.fc.out_features == 5


def test_concat_offsets_and_flatten_linear():
    graph = analyze(Concat().eval(), SHAPE)
    left, right = group_of(graph, "left.0"), group_of(graph, "right.0")
    assert left is not right  # concat inputs are independent groups
    work, ref, _, _ = prune_half(Concat())
    assert_exact(work, ref)
    assert work.mix[0].in_channels == work.left[0].out_channels + work.right[0].out_channels
    assert work.fc.in_features == work.mix[0].out_channels * 64  # flatten keeps 8x8 positions per channel


def test_depthwise_se_and_grouped_conv():
    graph = analyze(Depthwise().eval(), SHAPE)
    expand = group_of(graph, "expand.0")
    assert "se2" in expand.modules  # the excitation gate multiplies the expanded channels
    grouped = group_of(graph, "grouped.0")
    assert all(graph.class_size[c] >= 4 for c in grouped.classes)  # whole conv groups are the units
    work, ref, _, _ = prune_half(Depthwise())
    assert_exact(work, ref)
    assert work.dw[0].groups == work.dw[0].in_channels == work.expand[0].out_channels
    assert work.grouped[0].groups <= 4 and work.grouped[0].out_channels % work.grouped[0].groups == 0


def test_channel_shuffle_is_followed_exactly():
    graph = analyze(Shuffle().eval(), SHAPE)
    assert group_of(graph, "b1.0.0").prunable  # the branch bottlenecks are free
    for seed in range(3):
        work, ref, _, keep = prune_half(Shuffle(), seed=seed)
        assert (~keep).any()
        assert_exact(work, ref)


def test_literal_reshape_is_left_whole_with_reason():
    graph = analyze(LiteralReshape().eval(), SHAPE)
    conv = group_of(graph, "conv.0")
    assert not conv.prunable and any("literal" in r for r in conv.reasons)
    assert group_of(graph, "head.0").prunable is not None
    work, ref, _, _ = prune_half(LiteralReshape())
    assert_exact(work, ref)


def test_attention_mlp_prunable_and_mha_reported():
    graph = analyze(Attention().eval(), SHAPE)
    assert group_of(graph, "mlp.0").prunable
    stream = group_of(graph, "embed")
    assert not stream.prunable and any("MultiheadAttention" in r for r in stream.reasons)
    work, _, _, _ = prune_half(Attention())
    assert work.mlp[0].out_features < 32 and work.mlp[2].in_features == work.mlp[0].out_features
    assert work(torch.randn(2, *SHAPE)).shape == (2, 5)


def test_untraceable_submodule_becomes_opaque():
    graph = analyze(Untraceable().eval(), SHAPE)
    assert graph.opaque == ["gate"]
    assert not group_of(graph, "a.0").prunable  # feeds the opaque module
    assert group_of(graph, "b.0").prunable
    work, ref, _, _ = prune_half(Untraceable())
    assert_exact(work, ref)


def test_ignore_patterns_keep_layers_whole():
    graph = analyze(Residual().eval(), SHAPE, ignore=["a1.*"])
    g = group_of(graph, "a1.0")
    assert not g.prunable and any("ignored" in r for r in g.reasons)


def test_estimate_matches_flop_counter():
    from compress.analysis import count_macs, count_params

    net = randomise_norms(Depthwise())
    work = copy.deepcopy(net)
    graph = analyze(work, SHAPE)
    dense_macs, dense_params = count_macs(work, SHAPE), count_params(work)
    keep = np.ones(graph.num_classes, dtype=bool)
    keep[graph.prunable_classes()[::2]] = False
    keep = graph.repair(keep, np.zeros(graph.num_classes))
    macs, params = graph.estimate(keep, dense_macs, dense_params)
    graph.apply(keep)
    assert macs == count_macs(work, SHAPE) and params == count_params(work)
    assert macs < dense_macs


def test_wrong_input_shape_is_a_model_error():
    from compress.errors import ModelError

    with pytest.raises(ModelError, match="does not run on input shape"):
        analyze(Residual().eval(), (5, 16, 16))


def test_prunable_report_rows_and_summary():
    from compress.prune.report import prunable_report

    report = prunable_report(Attention().eval(), SHAPE)
    rows = {r["name"]: r for r in report["rows"]}
    assert rows["mlp.0"]["status"] == "prunable" and rows["mlp.0"]["prunable_units"] == 32
    assert rows["embed"]["status"] == "kept whole" and rows["embed"]["reasons"]
    assert report["summary"]["prunable_groups"] == sum(r["status"] == "prunable" for r in report["rows"])


def _half(graph):
    keep = np.ones(graph.num_classes, dtype=bool)
    keep[graph.prunable_classes()[::2]] = False
    return graph.repair(keep, np.zeros(graph.num_classes))


def test_verification_refuses_a_pruned_model_that_disagrees(monkeypatch):
    from compress.errors import ModelError
    from compress.prune.common import remove_units
    from compress.prune.graph import DependencyGraph

    apply = DependencyGraph.apply

    def off_by_a_little(self, keep):  # a removal that slices one kept weight wrongly
        out = apply(self, keep)
        with torch.no_grad():
            self.module.fc.weight[0, 0] += 0.5
        return out

    graph = analyze(randomise_norms(Residual()).eval(), SHAPE)
    monkeypatch.setattr(DependencyGraph, "apply", off_by_a_little)
    with pytest.raises(ModelError, match="disagrees with the masked unpruned model"):
        remove_units(graph, _half(graph), np.zeros(graph.num_classes), SHAPE)


def test_masked_reference_leaves_the_network_unchanged_and_matches_the_removal():
    from compress.prune.graph import masked_params

    net = randomise_norms(Residual()).eval()
    before = {k: v.clone() for k, v in net.state_dict().items()}
    graph = analyze(net, SHAPE)
    keep = _half(graph)
    masked = masked_params(net, graph, keep)
    assert masked and all(torch.equal(v, net.state_dict()[k]) for k, v in before.items())
    x = torch.randn(3, *SHAPE)
    with torch.no_grad():
        expected = torch.func.functional_call(net, masked, (x,))
        graph.apply(keep)
        torch.testing.assert_close(net(x), expected, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize(
    "net, verify, verdict", [(Residual, True, "exact"), (Residual, False, "skipped"), (Attention, True, "exact")]
)
def test_macs_counted_on_the_verification_forwards_equal_the_flop_counter(net, verify, verdict):
    """Counted while verifying (or, without a verification or with nn.MultiheadAttention, by their own pass)."""
    from compress.analysis import count_macs
    from compress.prune.common import remove_units

    work = randomise_norms(net()).eval()
    dense_macs = count_macs(work, SHAPE)
    graph = analyze(work, SHAPE)
    info = remove_units(graph, _half(graph), np.zeros(graph.num_classes), SHAPE, verify=verify, count_macs=True)
    assert info.verified == verdict
    assert info.macs_before == dense_macs and info.macs_after == count_macs(work, SHAPE) < dense_macs


@pytest.mark.parametrize("net, devices", [(Residual, ["meta"]), (Attention, ["meta"]), (Untraceable, ["meta", "cpu"])])
def test_shapes_propagate_on_meta_tensors_and_for_real_where_the_model_reads_values(net, devices, monkeypatch):
    from torch.fx.passes.shape_prop import ShapeProp

    from compress.prune import graph as graph_module

    seen = []
    forward = graph_module._OnDevice.forward
    monkeypatch.setattr(
        graph_module._OnDevice, "forward", lambda self, x: seen.append(x.device.type) or forward(self, x)
    )
    graph = analyze(net().eval(), SHAPE)
    assert seen == devices  # Untraceable's gate branches on a value: no meta run
    gm = graph.gm
    meta = {n: n.meta.get("tensor_meta") for n in gm.graph.nodes}
    with torch.no_grad():
        ShapeProp(gm).propagate(torch.randn(2, *SHAPE))
    real = {n: n.meta.get("tensor_meta") for n in gm.graph.nodes}
    assert all(getattr(meta[n], "shape", None) == getattr(real[n], "shape", None) for n in real)
    assert any(hasattr(m, "shape") for m in meta.values())
