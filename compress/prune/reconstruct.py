"""Layer-wise reconstruction: re-fit the layers of a pruned network to the original's outputs.

After channels are removed, every layer downstream sees inputs that differ from what its weights
were trained on, and the errors compound: a pretrained EfficientNet-Lite0 with 30% of each group's
channels removed agrees with the original on no held-out image. Re-fitting each layer by least
squares to reproduce the original layer's output, in execution order and on the pruned network's
own inputs (so each fit also absorbs the error left by the layers before it), is the channel
reconstruction of He et al., "Channel Pruning for Accelerating Very Deep Neural Networks" (ICCV
2017) and ThiNet (Luo et al., ICCV 2017). It needs no labels and a few hundred images, and it takes
one forward pass of each network over them instead of thousands of training steps.

For a layer with weight W0 (the kept columns) the fit is a ridge regression pulled towards W0,
    W = argmin ||X W - Y||^2 + lam ||W - W0||^2,    lam = damping * trace(X^T X) / dim,
so a layer with fewer input rows than weights (a classifier on a few hundred images) moves only
as far as its data supports. Removed input columns stay zero, so the result is still exactly the
masked network that `graph.apply` slices. Convolutions are fitted on unfolded patches (grouped and
depthwise convolutions one group at a time), linear layers on their inputs' last dimension.

Both networks are traced with the pruner's tracer and run node by node over the whole calibration
set in lockstep; a layer is fitted when its node is reached, then the pruned network continues
with the fitted weights. Layers inside opaque leaves, functional convolutions and layers called
more than once are left as they are.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import fx, nn


@dataclass
class ReconstructConfig:
    """Layer-wise reconstruction after pruning.

    Attributes:
        images: calibration images used for the fit (from the data's calibration split, then train).
        damping: ridge strength towards the layer's current weights, relative to the mean diagonal
            of X^T X (larger: smaller moves).
        max_rows: about this many output positions per image enter a convolution's fit.
        batch_size: images per chunk when the normal equations are accumulated.
        min_rows: a layer is fitted only with at least this many rows per weight of one output (a
            classifier on a few hundred images would fit them exactly and generalise worse).
    """

    images: int = 256
    damping: float = 0.01
    max_rows: int = 256
    batch_size: int = 32
    min_rows: float = 8.0


def _fit(a: torch.Tensor, b: torch.Tensor, w0: torch.Tensor, damping: float) -> torch.Tensor:
    """Ridge solution of (A + lam I) W = B + lam W0 for A [..., d, d], B and W0 [..., d, k]."""
    d = a.shape[-1]
    diag = torch.diagonal(a, dim1=-2, dim2=-1)
    lam = damping * diag.mean(-1).clamp_min(1e-12)[..., None, None]
    eye = torch.eye(d, dtype=a.dtype, device=a.device)
    return torch.linalg.solve(a + lam * eye, b + lam * w0)


def _patches(layer: nn.Conv2d, x: torch.Tensor, y: torch.Tensor, max_rows: int, gen) -> tuple:
    """(input patches [n, C*kk, P], outputs [n, out, P]) at about `max_rows` output positions per image:
    every q-th row and column from a random offset, each kernel tap taken as one strided slice (in
    F.unfold's order: channel-major, then kernel row, then kernel column)."""
    h, w = y.shape[-2:]
    q = max(1, math.ceil(math.sqrt(h * w / max_rows)))
    oy, ox = (int(v) for v in torch.randint(q, (2,), generator=gen))
    target = y[:, :, oy::q, ox::q]
    th, tw = target.shape[-2:]
    (sh, sw), (ph, pw), (dh, dw) = layer.stride, layer.padding, layer.dilation
    xp = F.pad(x, (pw, pw, ph, ph)) if ph or pw else x
    taps = [
        xp[:, :, oy * sh + ky * dh :: sh * q, ox * sw + kx * dw :: sw * q][:, :, :th, :tw]
        for ky in range(layer.kernel_size[0])
        for kx in range(layer.kernel_size[1])
    ]
    cols = torch.stack(taps, 2).reshape(x.shape[0], -1, th * tw)
    return cols, target.flatten(2)


@torch.no_grad()
def _refit_conv(layer: nn.Conv2d, x: torch.Tensor, y: torch.Tensor, cfg: ReconstructConfig, gen) -> bool:
    """Fit `layer` (in place) so that layer(x) approximates y; returns False when it was skipped."""
    if layer.padding_mode != "zeros" or isinstance(layer.padding, str):
        return False
    g = layer.groups
    cin, cout = layer.in_channels // g, layer.out_channels // g
    kk = layer.kernel_size[0] * layer.kernel_size[1]
    has_bias = layer.bias is not None
    positions = min(y.shape[-2] * y.shape[-1], cfg.max_rows) * y.shape[0]
    if positions < cfg.min_rows * (cin * kk + int(has_bias)):
        return False
    w = layer.weight.detach().double()  # [out, cin, kh, kw]
    live = w.reshape(g, cout, cin * kk).abs().sum(1) > 0  # [g, cin*kk] columns the pruning kept
    d = cin * kk + int(has_bias)
    a = torch.zeros(g, d, d, dtype=torch.float64)
    b = torch.zeros(g, d, cout, dtype=torch.float64)
    rows = 0
    for xs, ys in zip(x.split(cfg.batch_size), y.split(cfg.batch_size), strict=True):
        cols, target = _patches(layer, xs, ys, cfg.max_rows, gen)
        n, _, n_pos = cols.shape
        cols = cols.float().reshape(n, g, cin * kk, n_pos).permute(1, 0, 3, 2).reshape(g, n * n_pos, cin * kk)
        if has_bias:
            cols = torch.cat([cols, torch.ones(g, n * n_pos, 1, dtype=cols.dtype)], -1)
        target = target.float().reshape(n, g, cout, n_pos).permute(1, 0, 3, 2).reshape(g, n * n_pos, cout)
        # products in float32 (the rows of one chunk), sums over chunks in float64
        a += (cols.transpose(1, 2) @ cols).double()
        b += (cols.transpose(1, 2) @ target).double()
        rows += n * n_pos
    w0 = w.reshape(g, cout, cin * kk).transpose(1, 2)  # [g, cin*kk, cout]
    if has_bias:
        w0 = torch.cat([w0, layer.bias.detach().double().reshape(g, 1, cout)], 1)
    keep = torch.cat([live, torch.ones(g, int(has_bias), dtype=torch.bool)], 1)  # [g, d]
    new = torch.zeros_like(w0)
    if bool((keep == keep[:1]).all()):  # every group keeps the same columns: one batched solve
        k = keep[0]
        new[:, k] = _fit(a[:, k][:, :, k], b[:, k], w0[:, k], cfg.damping)
    else:
        for gi in range(g):
            k = keep[gi]
            new[gi, k] = _fit(a[gi][k][:, k], b[gi][k], w0[gi][k], cfg.damping)
    weight = new[:, : cin * kk].transpose(1, 2).reshape(layer.weight.shape)
    layer.weight.copy_(weight.to(layer.weight.dtype))
    if has_bias:
        layer.bias.copy_(new[:, -1].reshape(-1).to(layer.bias.dtype))
    return rows > 0


@torch.no_grad()
def _refit_linear(layer: nn.Linear, x: torch.Tensor, y: torch.Tensor, cfg: ReconstructConfig) -> bool:
    has_bias = layer.bias is not None
    w0 = layer.weight.detach().double().t()  # [in, out]
    live = w0.abs().sum(1) > 0
    if x.reshape(-1, x.shape[-1]).shape[0] < cfg.min_rows * (x.shape[-1] + int(has_bias)):
        return False
    xs = x.reshape(-1, x.shape[-1]).double()
    ys = y.reshape(-1, y.shape[-1]).double()
    if has_bias:
        xs = torch.cat([xs, torch.ones(len(xs), 1, dtype=xs.dtype)], 1)
        w0 = torch.cat([w0, layer.bias.detach().double()[None]], 0)
        live = torch.cat([live, torch.ones(1, dtype=torch.bool)])
    xs = xs[:, live]
    new = torch.zeros_like(w0)
    new[live] = _fit(xs.t() @ xs, xs.t() @ ys, w0[live], cfg.damping)
    layer.weight.copy_(new[: layer.in_features].t().to(layer.weight.dtype))
    if has_bias:
        layer.bias.copy_(new[-1].to(layer.bias.dtype))
    return True


def _refit(layer: nn.Module, x: torch.Tensor, y: torch.Tensor, cfg: ReconstructConfig, gen) -> bool:
    if type(layer) is nn.Conv2d:
        return _refit_conv(layer, x, y, cfg, gen)
    if type(layer) is nn.Linear:
        return _refit_linear(layer, x, y, cfg)
    return False


class _Stepper(fx.Interpreter):
    """An fx interpreter that runs one node at a time and frees values after their last use."""

    def __init__(self, gm: fx.GraphModule, x: torch.Tensor, extra: dict) -> None:
        super().__init__(gm, garbage_collect_values=True)
        self.env = {}
        self.args_iter = iter([x])
        self.extra = extra

    def placeholder(self, target, args, kwargs):
        if target in self.extra:
            return self.extra[target]
        return super().placeholder(target, args, kwargs)

    def step(self, node: fx.Node, value=None):
        self.env[node] = self.run_node(node) if value is None else value
        for dead in self.user_to_last_uses.get(node, []):
            del self.env[dead]


@torch.no_grad()
def reconstruct(pruned: nn.Module, original: nn.Module, images: torch.Tensor, cfg: ReconstructConfig) -> dict:
    """Re-fit `pruned` (the masked, same-shape network, in place) to `original` on `images`.

    Returns {"layers": fitted layer count, "skipped": layers left as they were, "mse_before" /
    "mse_after": mean squared error of the final output against the original's}.
    """
    from compress.prune.graph import optional_args, trace

    was_p, was_o = pruned.training, original.training
    pruned.eval()
    original.eval()
    try:
        gm_p, _ = trace(pruned)
        gm_o = fx.GraphModule(original, gm_p.graph)
        before = _mse(pruned(images), original(images))
        calls: dict[str, int] = {}
        for node in gm_p.graph.nodes:
            if node.op == "call_module":
                calls[node.target] = calls.get(node.target, 0) + 1
        extra = optional_args(pruned)
        sp, so = _Stepper(gm_p, images, extra), _Stepper(gm_o, images, extra)
        gen = torch.Generator().manual_seed(0)
        fitted, skipped = 0, 0
        mods_p = dict(pruned.named_modules())
        out = None
        for node in gm_p.graph.nodes:
            if node.op == "output":
                out = (sp.run_node(node), so.run_node(node))
                break
            target = node.target if node.op == "call_module" else None
            layer = mods_p.get(target) if target is not None else None
            if isinstance(layer, (nn.Conv2d, nn.Linear)) and calls[target] == 1 and node.args:
                x_p = sp.env[node.args[0]]
                so.step(node)
                if isinstance(x_p, torch.Tensor) and _refit(layer, x_p, so.env[node], cfg, gen):
                    fitted += 1
                else:
                    skipped += 1
                sp.step(node)
            else:
                if isinstance(layer, (nn.Conv2d, nn.Linear, nn.Conv1d, nn.Conv3d)):
                    skipped += 1
                sp.step(node)
                so.step(node)
        after = _mse(out[0], out[1]) if out is not None else float("nan")
    finally:
        pruned.train(was_p)
        original.train(was_o)
    return {"layers": fitted, "skipped": skipped, "mse_before": before, "mse_after": after}


def _mse(a, b) -> float:
    if not (isinstance(a, torch.Tensor) and isinstance(b, torch.Tensor)):
        return float("nan")
    return float(F.mse_loss(a.float(), b.float()))
