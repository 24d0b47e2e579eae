"""Bit-wise training (Ivan, "Bit-wise Training of Neural Network Weights", arXiv 2202.09571).

Each weight is w = alpha * sign(s) * sum_i H(b_i) * 2^i over n-1 magnitude bits, with real-valued
virtual bits b_i, H(b) = 1[b > 0] with an identity (straight-through) gradient, a sign variable s
(also straight-through) and one constant alpha per layer: from scratch alpha makes std(w) =
sqrt(2 / fan_in); from a trained model alpha is fitted (the clip ratio minimising the rounding
error) and the bits are the nearest bit pattern of w / alpha. `train_bits: "msb:K"` trains the K
most significant bits of the n-bit word, the sign counted as the most significant (msb:3 = sign and
the two top magnitude bits); the other bits keep their values. A weight whose magnitude bits are all
off is exactly zero, so sparsity emerges and is reported.

The weights are integers (|q| <= 2^(n-1) - 1, n <= 8) times alpha, so the ONNX export stores them as
INT8 initializers with a DequantizeLinear (zero-point 0, alpha repeated per output channel on axis
0), whose output equals the torch weights bit for bit.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from compress.errors import RecipeError
from compress.layers import BitwiseConv2d, BitwiseLinear, BitwiseWeight, ConvGeometry
from compress.methods import Context, Result, register_method
from compress.models.model import Model
from compress.quantize._common import (
    SIZE_FORMAT_NOTE,
    file_size,
    ort_metrics,
    replace_module,
    runtime_metrics,
    weight_layers,
    workdir,
)


@dataclass
class BitwiseConfig:
    """Bit-wise training settings.

    Attributes:
        bits: bits per weight including the sign (2..8).
        train_bits: "all" or "msb:K" (the K most significant bits, sign included).
        init: "model" (nearest bit pattern of the trained weights) or "scratch" (random bits,
            std(w) = sqrt(2/fan_in)).
        epochs: training epochs through the shared loop.
        lr: Adam learning rate of the virtual bits and the other parameters.
        batch_size: training batch size.
        skip: regular expressions over module names kept in float.
        seed: training seed and random bits.
    """

    bits: int = 6
    train_bits: str = "all"
    init: str = "model"
    epochs: int = 5
    lr: float = 1e-3
    batch_size: int = 64
    skip: list[str] = field(default_factory=list)
    seed: int = 0

    def __post_init__(self) -> None:
        if not 2 <= self.bits <= 8:
            raise ValueError(f"bits must be in 2..8, got {self.bits}")
        trainable_count(self.train_bits, self.bits)
        if self.init not in ("model", "scratch"):
            raise ValueError(f"init must be 'model' or 'scratch', got {self.init!r}")


def trainable_count(train_bits: str, bits: int) -> int:
    """How many of the `bits` bits are trained (sign first, then magnitude bits from the top)."""
    if train_bits == "all":
        return bits
    m = re.fullmatch(r"msb:(\d+)", train_bits)
    if not m or not 1 <= int(m.group(1)) <= bits:
        raise ValueError(f"train_bits must be 'all' or 'msb:K' with 1 <= K <= {bits}, got {train_bits!r}")
    return int(m.group(1))


def fit_alpha(w: torch.Tensor, bits: int) -> float:
    """The scale whose rounding of w / alpha to n-bit integers has the least squared error."""
    qmax = 2 ** (bits - 1) - 1
    wmax = float(w.abs().max()) or 1.0
    best, best_err = wmax / qmax, math.inf
    for ratio in torch.linspace(0.3, 1.0, 36).tolist():
        alpha = ratio * wmax / qmax
        err = float(((w / alpha).round().clamp(-qmax, qmax) * alpha - w).pow(2).sum())
        if err < best_err:
            best, best_err = alpha, err
    return best


def to_bitwise(module: nn.Module, config: BitwiseConfig) -> list[str]:
    """Replace Conv2d/Linear layers in place by bit-wise layers; returns their names."""
    trained = trainable_count(config.train_bits, config.bits)
    qmax = 2 ** (config.bits - 1) - 1
    gen = torch.Generator().manual_seed(config.seed)
    names = []
    for name, layer in weight_layers(module, config.skip):
        if isinstance(layer, nn.Conv2d):
            if isinstance(layer.padding, str):
                raise RecipeError(f"{name}: bit-wise layers need numeric padding")
            new: BitwiseWeight = BitwiseConv2d(**ConvGeometry.conv_args(layer), bits=config.bits, trained_bits=trained)
        else:
            new = BitwiseLinear(layer.in_features, layer.out_features, layer.bias is not None, config.bits, trained)
        w = layer.weight.detach()
        if config.init == "model":
            alpha = fit_alpha(w, config.bits)
            q = (w / alpha).round().clamp(-qmax, qmax)
        else:
            q = torch.randint(-qmax, qmax + 1, w.shape, generator=gen).float()
            fan_in = w[0].numel()
            alpha = math.sqrt(2.0 / fan_in) / float(q.std())
        new.set_from_integers(q, alpha)
        if layer.bias is not None:
            new.bias.data.copy_(layer.bias.data)
        replace_module(module, name, new)
        names.append(name)
    if not names:
        raise RecipeError("no Conv2d/Linear layer to train bit-wise (check `skip`)")
    return names


def weight_sparsity(module: nn.Module) -> dict[str, float]:
    """Share of exact zeros over all bit-wise weights (and the count)."""
    zeros = total = 0
    for m in module.modules():
        if isinstance(m, BitwiseWeight):
            q = m.int8_weight()
            zeros += int((q == 0).sum())
            total += q.numel()
    return {"sparsity": zeros / max(total, 1), "zero_weights": zeros, "bitwise_weights": total}


def export_bitwise_onnx(model: Model, path: str | Path) -> dict[str, Any]:
    """Q/DQ ONNX: each bit-wise weight an INT8 initializer + DequantizeLinear (scale alpha, zero-point 0); the parity.

    The layers are exported as plain convs / linears with weight alpha * integers (no constant folding,
    so each weight keeps its parameter name), then each such weight is replaced by its integers behind
    a DequantizeLinear, which gives the same values bit for bit.
    """
    import dataclasses

    from compress.export.onnx import ExportConfig, export_onnx

    module = model.module.eval()
    ints = {
        f"{n}.weight": (m.int8_weight().numpy(), float(m.alpha))
        for n, m in module.named_modules()
        if isinstance(m, BitwiseWeight)
    }
    plain = dataclasses.replace(model, module=_plain_copy(module))
    config = ExportConfig(exporter="torchscript", opset=17, constant_folding=False, atol=1e-4, rtol=1e-4)
    return export_onnx(plain, path, config, rewrite=lambda p: _integer_weights(p, ints))["parity"]


def _integer_weights(path: Path, ints: dict[str, tuple[Any, float]]) -> None:
    """Replace each named float initializer of the ONNX file by its INT8 integers + DequantizeLinear."""
    import numpy as np
    import onnx
    from onnx import helper, numpy_helper

    from compress.errors import BackendError

    onnx_model = onnx.load(str(path))
    graph = onnx_model.graph
    replaced = 0
    for init in list(graph.initializer):
        if init.name not in ints:
            continue
        q, alpha = ints[init.name]
        if not np.array_equal(q.astype(np.float32) * np.float32(alpha), numpy_helper.to_array(init)):
            raise BackendError(f"{init.name}: exported weight is not alpha * integers")
        graph.initializer.remove(init)
        out_ch = q.shape[0]
        graph.initializer.extend(
            [
                numpy_helper.from_array(q, f"{init.name}_int8"),
                numpy_helper.from_array(np.full(out_ch, alpha, np.float32), f"{init.name}_scale"),
                numpy_helper.from_array(np.zeros(out_ch, np.int8), f"{init.name}_zp"),
            ]
        )
        graph.node.insert(
            0,
            helper.make_node(
                "DequantizeLinear",
                [f"{init.name}_int8", f"{init.name}_scale", f"{init.name}_zp"],
                [init.name],
                name=f"DequantizeLinear_{init.name}",
                axis=0,
            ),
        )
        replaced += 1
    if replaced != len(ints):
        raise BackendError(f"ONNX export kept {replaced} of {len(ints)} bit-wise weights as named initializers")
    onnx.save(onnx_model, str(path))


def _plain_copy(module: nn.Module) -> nn.Module:
    import copy

    plain = copy.deepcopy(module)
    for name, m in list(plain.named_modules()):
        if isinstance(m, BitwiseWeight):
            replace_module(plain, name, m.to_float())
    return plain.eval()


@register_method("quantize", "bitwise", BitwiseConfig)
def bitwise(model: Model, config: BitwiseConfig, ctx: Context) -> Result:
    """Train the weights bit by bit; export as INT8 Q/DQ weights, bit-exact with torch."""
    from compress.config import to_dict
    from compress.models.checkpoint import save_model
    from compress.train.loop import TrainConfig, train

    out = model.copy()
    out.input_shape = tuple(ctx.data.input_shape)
    names = to_bitwise(out.module, config)
    before = weight_sparsity(out.module)["sparsity"]
    tc = TrainConfig(
        epochs=config.epochs,
        batch_size=config.batch_size,
        optimizer="adam",
        lr=config.lr,
        weight_decay=0.0,
        seed=config.seed,
        eval_every=0,
    )
    result = train(out.module, ctx.data, tc, checkpoint=ctx.checkpoint("bitwise"), description="bitwise")
    out = out.with_step(out.module, {"technique": "quantize", "method": "bitwise", "params": to_dict(config)})
    folder = workdir(ctx, "bitwise")
    ckpt = save_model(out, folder / "model.pt")
    onnx_path = folder / "model.onnx"
    parity = export_bitwise_onnx(out, onnx_path)
    sp = weight_sparsity(out.module)
    n_weights = sp["bitwise_weights"]
    metrics: dict[str, Any] = {
        **{k: v for k, v in ort_metrics(onnx_path, ctx.data).items() if k != "samples"},
        "torch_" + next(iter(result.metrics)): next(iter(result.metrics.values())),
        "sparsity": sp["sparsity"],
        "initial_sparsity": before,
        "zero_weights": sp["zero_weights"],
        "bits_per_weight": config.bits + 32 * len(names) / max(n_weights, 1),
        "trained_bits": trainable_count(config.train_bits, config.bits),
        "size_bytes": file_size(onnx_path),
        "checkpoint_bytes": file_size(ckpt),
        "onnx_max_abs_diff": parity["max_abs_diff"],
        "layers": len(names),
    }
    metrics.update(runtime_metrics(onnx_path, out.input_shape))
    metrics["deploy_note"] = SIZE_FORMAT_NOTE.format(int8_ops=metrics["int8_ops"])
    return Result(model=out, onnx=onnx_path, metrics=metrics)  # the pipeline saves `out` as model.pt
