"""Codebook quantization: JLCM (Yvinec, Dapogny, Bailly, ICLR 2024) and per-layer k-means (Deep Compression).

Every Conv/Linear weight becomes a b-bit index into a codebook of k = 2^b values. JLCM's three ideas,
as implemented here:
- **Neuron grouping**: the output channels of a layer are sorted by the standard deviation of their
  weights and cut into `groups` contiguous groups of similar spread; each group has its own codebook.
  A channel's group is one byte per output channel, so there is no per-weight mapping overhead.
- **Joint learning** of codebooks and assignments, initialised by k-means, by layer-wise output
  reconstruction on the calibration data (layers in order, each fed the inputs the already quantized
  layers produce): minimise ||conv(x, W_q) - conv(x, W)||^2 over the codebooks and a latent float
  copy of the weights whose nearest codeword is the assignment.
- **Proximal straight-through update**: the plain STE passes the gradient to the latent weight
  unchanged, which lets far codewords win; here it is scaled by exp(-d / (sigma * gap)), with d the
  distance of the latent weight from its current codeword and gap the mean distance between
  neighbouring codewords of its group. A move to a codeword at distance D thus gets weight
  exp(-D / (sigma * gap)) (the paper leaves the function open; `sigma` is a config field,
  sigma -> inf is the plain STE). A layer keeps the learned solution only if its reconstruction
  error on the calibration data is not above the k-means one.

`kmeans` is the baseline: one codebook per layer, 1-D k-means on the weights, nothing learned.

Storage: the layers `CodebookConv2d` / `CodebookLinear` (in `compress.layers.codebook`) hold the
indices bit-packed at b bits, the codebooks and the per-channel group ids, so `save_model` writes a
small checkpoint and the ONNX file keeps the packed indices too.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from compress.errors import RecipeError
from compress.layers import CodebookConv2d, CodebookLinear, CodebookWeight
from compress.methods import Context, Result, register_method
from compress.models.model import Model
from compress.quantize._common import (
    SIZE_FORMAT_NOTE,
    calibration_batches,
    file_size,
    ort_metrics,
    replace_module,
    runtime_metrics,
    weight_layers,
    workdir,
)


@dataclass
class CodebookConfig:
    """JLCM codebook quantization.

    Attributes:
        bits: index width b; each group's codebook has 2^b values.
        groups: neuron groups per layer (each with its own codebook); capped at the output channels.
        sigma: width of the proximal weight exp(-d / (sigma * gap)) of the straight-through update.
        steps: reconstruction steps per layer (0: k-means with grouping only).
        lr: Adam learning rate of the latent weights, relative to each layer's weight std.
        codebook_lr: Adam learning rate of the codebook values, relative to each layer's weight std.
        batch_size: calibration samples per reconstruction step.
        calib_size: calibration samples used.
        kmeans_iters: Lloyd iterations of the k-means initialisation.
        skip: regular expressions over module names kept in float (e.g. the first conv).
        seed: drives the sampling of calibration batches.
    """

    bits: int = 3
    groups: int = 4
    sigma: float = 1.0
    steps: int = 200
    lr: float = 1e-2
    codebook_lr: float = 1e-3
    batch_size: int = 32
    calib_size: int = 256
    kmeans_iters: int = 30
    skip: list[str] = field(default_factory=list)
    seed: int = 0

    def __post_init__(self) -> None:
        if not 1 <= self.bits <= 8:
            raise ValueError(f"bits must be in 1..8, got {self.bits}")
        if self.groups < 1 or self.steps < 0 or self.sigma <= 0:
            raise ValueError("groups must be >= 1, steps >= 0 and sigma > 0")


@dataclass
class KMeansConfig:
    """Per-layer k-means codebooks (Deep Compression): the baseline of `codebook`.

    Attributes:
        bits: index width b; one codebook of 2^b values per layer.
        kmeans_iters: Lloyd iterations.
        skip: regular expressions over module names kept in float.
    """

    bits: int = 3
    kmeans_iters: int = 30
    skip: list[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        if not 1 <= self.bits <= 8:
            raise ValueError(f"bits must be in 1..8, got {self.bits}")


# ------------------------------------------------------------------------------------------ algorithms
def group_channels(weight: torch.Tensor, groups: int) -> torch.Tensor:
    """Channel -> group id: output channels sorted by weight std and cut into equal contiguous groups."""
    out = weight.shape[0]
    groups = min(groups, out)
    order = weight.reshape(out, -1).std(1).argsort()
    gid = torch.empty(out, dtype=torch.int64)
    gid[order] = torch.arange(out) * groups // out
    return gid


def kmeans_1d(values: torch.Tensor, k: int, iters: int) -> torch.Tensor:
    """Sorted 1-D k-means centroids of `values`, initialised at the quantiles."""
    v = values.reshape(-1).double()
    k_eff = min(k, v.numel())
    c = torch.quantile(v, (torch.arange(k_eff, dtype=torch.float64) + 0.5) / k_eff)
    for _ in range(iters):
        a = (v[:, None] - c[None]).abs().argmin(1)
        sums = torch.zeros(k_eff, dtype=torch.float64).index_add_(0, a, v)
        counts = torch.zeros(k_eff, dtype=torch.float64).index_add_(0, a, torch.ones_like(v))
        c = torch.where(counts > 0, sums / counts.clamp_min(1), c)
    if k_eff < k:  # tiny layers: repeat the last codeword
        c = torch.cat([c, c[-1:].repeat(k - k_eff)])
    return c.sort().values.float()


def kmeans_codebooks(weight: torch.Tensor, gid: torch.Tensor, bits: int, iters: int) -> torch.Tensor:
    w = weight.reshape(weight.shape[0], -1)
    return torch.stack([kmeans_1d(w[gid == g], 2**bits, iters) for g in range(int(gid.max()) + 1)])


def assign(weight: torch.Tensor, gid: torch.Tensor, codebooks: torch.Tensor) -> torch.Tensor:
    """Nearest-codeword index of every weight within its channel's codebook, shape [out, -1]."""
    w = weight.reshape(weight.shape[0], -1)
    cb = codebooks[gid]  # [out, k]
    return (w[:, :, None] - cb[:, None, :]).abs().argmin(2)


def dequantize(idx: torch.Tensor, gid: torch.Tensor, codebooks: torch.Tensor, shape) -> torch.Tensor:
    k = codebooks.shape[1]
    return codebooks.reshape(-1)[(idx + gid[:, None] * k).reshape(-1)].reshape(shape)


class _ProximalSTE(torch.autograd.Function):
    """Forward: the quantized weight; backward: the gradient scaled by the proximal weight."""

    @staticmethod
    def forward(ctx, latent, quantized, prox):
        ctx.save_for_backward(prox)
        return quantized.detach().clone()

    @staticmethod
    def backward(ctx, grad):
        (prox,) = ctx.saved_tensors
        return grad * prox, None, None


def _apply(layer: nn.Module, x: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
    if isinstance(layer, nn.Conv2d):
        return F.conv2d(x, weight, None, layer.stride, layer.padding, layer.dilation, layer.groups)
    return F.linear(x, weight)


def reconstruction_error(layer: nn.Module, inputs: torch.Tensor, weight: torch.Tensor) -> float:
    """Mean squared error of the layer output (bias excluded) with `weight` vs its own weight."""
    with torch.no_grad():
        return float(F.mse_loss(_apply(layer, inputs, weight), _apply(layer, inputs, layer.weight)))


def jlcm_layer(
    layer: nn.Module, inputs: torch.Tensor, bits: int, groups: int, config: CodebookConfig, generator: torch.Generator
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, dict[str, float]]:
    """Jointly learned codebooks and assignments for one layer: (indices, group ids, codebooks, stats)."""
    w = layer.weight.detach()
    gid = group_channels(w, groups)
    cb0 = kmeans_codebooks(w, gid, bits, config.kmeans_iters)
    idx0 = assign(w, gid, cb0)
    err0 = reconstruction_error(layer, inputs, dequantize(idx0, gid, cb0, w.shape))
    if config.steps == 0 or inputs.shape[0] == 0:
        return idx0, gid, cb0, {"kmeans_mse": err0, "mse": err0}
    scale = float(w.std()) + 1e-12
    latent = nn.Parameter(w.clone())
    codebooks = nn.Parameter(cb0.clone())
    opt = torch.optim.Adam(
        [{"params": [latent], "lr": config.lr * scale}, {"params": [codebooks], "lr": config.codebook_lr * scale}]
    )
    with torch.no_grad():
        targets = _apply(layer, inputs, w)
    n = inputs.shape[0]
    for _ in range(config.steps):
        pick = torch.randint(0, n, (min(config.batch_size, n),), generator=generator)
        with torch.no_grad():
            cb_sorted = codebooks.detach()
            idx = assign(latent.detach(), gid, cb_sorted)
            gap = (
                (cb_sorted[:, 1:] - cb_sorted[:, :-1]).abs().mean(1).clamp_min(1e-12)
                if cb_sorted.shape[1] > 1
                else torch.ones(cb_sorted.shape[0])
            )
            near = dequantize(idx, gid, cb_sorted, w.shape)
            dist = (latent.detach() - near).abs()
            prox = torch.exp(-dist / (config.sigma * gap[gid].reshape(-1, *[1] * (w.ndim - 1))))
        wq_codebook = dequantize(idx, gid, codebooks, w.shape)  # gradient to the codebooks
        # value: the codebook weight; gradient: to the latent weight (proximal STE) and to the codebooks
        wq = _ProximalSTE.apply(latent, wq_codebook, prox) + (wq_codebook - wq_codebook.detach())
        out = _apply(layer, inputs[pick], wq)
        loss = F.mse_loss(out, targets[pick])
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        with torch.no_grad():
            lo = codebooks.min(1).values[gid].reshape(-1, *[1] * (w.ndim - 1))
            hi = codebooks.max(1).values[gid].reshape(-1, *[1] * (w.ndim - 1))
            latent.copy_(torch.minimum(torch.maximum(latent, lo), hi))
    cb1 = codebooks.detach().clone()
    idx1 = assign(latent.detach(), gid, cb1)
    err1 = reconstruction_error(layer, inputs, dequantize(idx1, gid, cb1, w.shape))
    if err1 <= err0:
        return idx1, gid, cb1, {"kmeans_mse": err0, "mse": err1}
    return idx0, gid, cb0, {"kmeans_mse": err0, "mse": err0}


# ------------------------------------------------------------------------------------------ the methods
def _codebook_layer(layer: nn.Module, bits: int, groups: int) -> CodebookWeight:
    if isinstance(layer, nn.Conv2d):
        return CodebookConv2d.from_conv(layer, bits, groups)
    return CodebookLinear.from_linear(layer, bits, groups)


def _layer_inputs(module: nn.Module, layer: nn.Module, batches: list[torch.Tensor]) -> torch.Tensor:
    captured: list[torch.Tensor] = []
    handle = layer.register_forward_hook(lambda _m, inp, _out: captured.append(inp[0].detach()))
    try:
        with torch.no_grad():
            for x in batches:
                module(x)
    finally:
        handle.remove()
    return torch.cat(captured)


def quantize_codebook(
    model: Model, config: CodebookConfig, batches: list[torch.Tensor] | None, *, learn: bool = True
) -> tuple[Model, dict[str, Any]]:
    """Replace every Conv2d/Linear (not skipped) by its codebook layer; returns the new model and stats."""
    out = model.copy()
    module = out.module.eval()
    generator = torch.Generator().manual_seed(config.seed)
    stats: dict[str, Any] = {}
    bits_total, weights_total = 0, 0
    for name, layer in weight_layers(module, config.skip):
        if learn and batches:
            inputs = _layer_inputs(module, layer, batches)
            idx, gid, cb, s = jlcm_layer(layer, inputs, config.bits, config.groups, config, generator)
        else:
            w = layer.weight.detach()
            gid = group_channels(w, config.groups)
            cb = kmeans_codebooks(w, gid, config.bits, config.kmeans_iters)
            idx, s = assign(w, gid, cb), {}
        new = _codebook_layer(layer, config.bits, int(cb.shape[0]))
        new.set_weight(idx, cb, gid)
        replace_module(module, name, new)
        stats[name] = s
        bits_total += new.storage_bits()
        weights_total += layer.weight.numel()
    if not weights_total:
        raise RecipeError("no Conv2d/Linear layer left to quantize (check `skip`)")
    return out, {
        "layers": stats,
        "quantized_weights": weights_total,
        "bits_per_weight": bits_total / weights_total,
        "quantized_bytes": math.ceil(bits_total / 8),
    }


def export_codebook_onnx(model: Model, path) -> dict[str, Any]:
    """ONNX keeping packed indices + codebooks (no constant folding), checked against torch in ORT; the parity."""
    from compress.export.onnx import ExportConfig, export_onnx

    config = ExportConfig(exporter="torchscript", opset=17, constant_folding=False, atol=1e-4, rtol=1e-4)
    return export_onnx(model, path, config)["parity"]


def _finish(out: Model, stats: dict[str, Any], ctx: Context, name: str, params: dict[str, Any]) -> Result:
    from compress.models.checkpoint import save_model

    folder = workdir(ctx, name)
    out = out.with_step(out.module, {"technique": "quantize", "method": name, "params": params})
    ckpt = save_model(out, folder / "model.pt")
    onnx_path = folder / "model.onnx"
    parity = export_codebook_onnx(out, onnx_path)
    metrics: dict[str, Any] = {
        "bits_per_weight": stats["bits_per_weight"],
        "quantized_weights": stats["quantized_weights"],
        "quantized_bytes": stats["quantized_bytes"],
        "size_bytes": file_size(ckpt),
        "onnx_bytes": file_size(onnx_path),
        "onnx_max_abs_diff": parity["max_abs_diff"],
    }
    metrics.update(runtime_metrics(onnx_path, out.input_shape))
    metrics["deploy_note"] = SIZE_FORMAT_NOTE.format(int8_ops=metrics["int8_ops"])
    mse = [s["mse"] for s in stats["layers"].values() if "mse" in s]
    if mse:
        metrics["mean_layer_mse"] = sum(mse) / len(mse)
        metrics["mean_layer_kmeans_mse"] = sum(s["kmeans_mse"] for s in stats["layers"].values()) / len(mse)
    if ctx.data is not None:
        metrics.update({k: v for k, v in ort_metrics(onnx_path, ctx.data).items() if k != "samples"})
    return Result(model=out, onnx=onnx_path, metrics=metrics)  # the pipeline saves `out` as model.pt


@register_method("quantize", "codebook", CodebookConfig)
def codebook(model: Model, config: CodebookConfig, ctx: Context) -> Result:
    """JLCM: grouped codebooks learned jointly with the assignments on calibration data."""
    from compress.config import to_dict

    base = model.copy()
    base.input_shape = tuple(ctx.data.input_shape)
    batches = calibration_batches(ctx.data, config.calib_size, 64) if config.steps > 0 else None
    out, stats = quantize_codebook(base, config, batches, learn=config.steps > 0)
    return _finish(out, stats, ctx, "codebook", to_dict(config))


@register_method("quantize", "kmeans", KMeansConfig, needs_data=False)
def kmeans(model: Model, config: KMeansConfig, ctx: Context) -> Result:
    """Deep Compression's per-layer k-means codebooks (one codebook per layer, nothing learned)."""
    from compress.config import to_dict

    base = model.copy()
    if ctx.data is not None:
        base.input_shape = tuple(ctx.data.input_shape)
    cfg = CodebookConfig(bits=config.bits, groups=1, steps=0, kmeans_iters=config.kmeans_iters, skip=config.skip)
    out, stats = quantize_codebook(base, cfg, None, learn=False)
    return _finish(out, stats, ctx, "kmeans", to_dict(config))
