"""Masks survive fine-tuning (fixed and SR-STE), permutation keeps the function, folding on save."""

import numpy as np
import torch
from torch import nn

from compress.prune.nm import NMObjective, apply_masks, nm_layers, permute_channels, search_permutation
from compress.sparsity import pattern_report
from compress.train.loop import StepContext, TaskObjective


def _net():
    torch.manual_seed(0)
    return nn.Sequential(
        nn.Conv2d(4, 8, 3, padding=1),
        nn.BatchNorm2d(8),
        nn.ReLU(),
        nn.Conv2d(8, 8, 3, padding=1),
        nn.BatchNorm2d(8),
        nn.ReLU(),
        nn.AdaptiveAvgPool2d(1),
        nn.Flatten(),
        nn.Linear(8, 4),
    )


def _steps(net, objective, optimizer, steps, after_step=True):
    ctx = StepContext(0, 0, steps, torch.device("cpu"), torch.Generator())
    g = torch.Generator().manual_seed(1)
    for _ in range(steps):
        batch = (torch.randn(8, 4, 6, 6, generator=g), torch.randint(0, 4, (8,), generator=g))
        loss, _ = objective.loss(net, None, batch, ctx)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        if after_step:
            objective.after_step(net, ctx)


def test_fixed_mask_survives_adam_state_from_dense_training():
    net = _net()
    opt = torch.optim.AdamW(net.parameters(), lr=0.05, weight_decay=0.01)
    _steps(net, TaskObjective("classification"), opt, 3)  # dense steps: Adam moments are nonzero everywhere
    layers, skipped = nm_layers(net, 4)
    assert sorted(layers) == ["0", "3", "8"] and skipped == []
    apply_masks(layers, 2, 4)
    zeros = {k: (m.weight == 0).clone() for k, m in layers.items()}
    obj = NMObjective(TaskObjective("classification"), layers, 2, 4, "fixed", 0.0)
    obj.setup(net, torch.device("cpu"))
    _steps(net, obj, opt, 3, after_step=False)
    # gradient hooks alone do not stop Adam's momentum: the pruned weights moved
    assert any((m.weight[zeros[k]] != 0).any() for k, m in layers.items())
    apply_masks(layers, 2, 4)
    obj = NMObjective(TaskObjective("classification"), layers, 2, 4, "fixed", 0.0)
    obj.setup(net, torch.device("cpu"))
    _steps(net, obj, opt, 3)
    obj.finish()
    assert pattern_report(net, "2:4")["sparse_layers"] == 3
    for k, m in layers.items():
        assert (m.weight[obj.masks[k] == 0] == 0).all()
        assert m.weight.grad is not None and (m.weight.grad[obj.masks[k] == 0] == 0).all()


def test_srste_trains_dense_weights_and_folds_a_plain_nm_weight():
    net = _net()
    layers, _ = nm_layers(net, 4)
    obj = NMObjective(TaskObjective("classification"), layers, 2, 4, "srste", 1e-2)
    obj.setup(net, torch.device("cpu"))
    assert "3.parametrizations.weight.original" in net.state_dict()
    before = net[3].parametrizations.weight.original.detach().clone()
    _steps(net, obj, torch.optim.SGD(net.parameters(), lr=0.1), 2)
    after = net[3].parametrizations.weight.original.detach()
    assert ((after != before) & (after != 0)).sum() > after.numel() // 2  # dense weights keep training
    obj.finish()
    assert "3.weight" in net.state_dict() and not any("parametrizations" in k for k in net.state_dict())
    assert pattern_report(net, "2:4")["sparse_layers"] == 3


def test_permutation_search_gains_magnitude_on_a_bad_order():
    a = np.zeros((8, 3))
    a[:4] = 10.0  # the four big channels share one group of 4: a 2:4 mask must drop two of them
    a[4:] = 1.0
    perm = search_permutation(a, 2, 4)
    assert sorted(perm.tolist()) == list(range(8))
    groups = a[perm].reshape(2, 4, 3)
    kept = np.sort(groups, axis=1)[:, 2:, :].sum()
    assert kept == 4 * 10.0 * 3  # every big channel kept


def test_permute_channels_keeps_the_function_and_the_magnitude_grows():
    net = _net().eval()
    with torch.no_grad():
        net[3].weight[:, :4] *= 20  # big input channels bunched in the first group
        net[1].running_mean.uniform_(-1, 1)
    x = torch.randn(2, 4, 6, 6)
    y0 = net(x)
    layers, _ = nm_layers(net, 4)
    info = permute_channels(net, (4, 6, 6), layers, 2, 4)
    assert info["groups"] >= 1 and info["kept_after"] > info["kept_before"]
    assert torch.allclose(net(x), y0, atol=1e-5)
