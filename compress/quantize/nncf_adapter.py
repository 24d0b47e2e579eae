"""The NNCF adapter: `nncf.quantize` on the exported ONNX model (route onnx) or on the torch model (route torch,
with optional QAT), asked for the Q/DQ layout the target's rules want, and the result rewritten for it."""

from __future__ import annotations

import contextlib
import io
import logging
import re
import warnings
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from torch import nn

from compress.errors import CompressError
from compress.methods import Context
from compress.models.model import Model
from compress.quantize.bnfold import fold_batchnorm_onnx, fold_batchnorm_torch
from compress.quantize.budget import nodes_of
from compress.quantize.rewrite import apply_rewrites, fold_weight_quantizers, to_signed_int8
from compress.quantize.targets import rules_for

if TYPE_CHECKING:
    from compress.quantize.int8 import Int8Config


@contextlib.contextmanager
def _quiet():
    """NNCF and the exporters print progress bars and warnings; keep the CLI output clean."""
    nncf_logger = logging.getLogger("nncf")
    level = nncf_logger.level
    nncf_logger.setLevel(logging.ERROR)
    with (
        warnings.catch_warnings(),
        contextlib.redirect_stdout(io.StringIO()),
        contextlib.redirect_stderr(io.StringIO()),
    ):
        warnings.simplefilter("ignore")
        try:
            yield
        finally:
            nncf_logger.setLevel(level)


def _nncf_params(config: Int8Config) -> dict[str, Any]:
    nncf = nncf_module()

    name = preset_for(config)
    preset = nncf.QuantizationPreset.PERFORMANCE if name == "performance" else nncf.QuantizationPreset.MIXED
    # NNCF's fast bias correction (its full variant is not supported for these backends)
    params: dict[str, Any] = {"preset": preset, "subset_size": config.calib_size, "fast_bias_correction": True}
    from nncf.quantization.advanced_parameters import (
        AdvancedQuantizationParameters,
        OverflowFix,
        QuantizationParameters,
    )

    advanced = AdvancedQuantizationParameters(overflow_fix=OverflowFix[overflow_fix_for(config).upper()])
    if rules_for(config.target).activations_per_tensor:
        # NNCF quantizes the input of a depthwise conv per channel, which no QLinearConv accepts
        advanced.activations_quantization_params = QuantizationParameters(per_channel=False)
    params["advanced_parameters"] = advanced
    return params


def overflow_fix_for(config: Int8Config) -> str:
    """NNCF's overflow fix: the config's, or with `auto` enable (half-range weights everywhere) where the
    target's integer kernels saturate on this CPU, else NNCF's default (the first layer only)."""
    if config.overflow_fix != "auto":
        return config.overflow_fix
    return "enable" if rules_for(config.target).weights_half_range else "first_layer"


def preset_for(config: Int8Config) -> str:
    """The NNCF preset to use: the config's, or with `auto` the target's (`QdqRules.preset`)."""
    return rules_for(config.target).preset if config.preset == "auto" else config.preset


def single_samples(calib: list[torch.Tensor]) -> list[torch.Tensor]:
    """The calibration batches as batch-1 items, the way NNCF's range estimators expect them.

    NNCF's per-tensor activation ranges (MEAN_MINMAX) are the mean over dataset items of each item's
    min and max. Handed batches of 32 it averaged the extremes of ~10 batches (each over 32 images):
    wider ranges than over 300 single images, a coarser grid on every activation. On random-init
    mobilenet_v3_large (3 photo-crop seeds, 32 calibration crops) the relative logit error of
    compress's INT8 went from 0.391 +- 0.015 to 0.341 +- 0.013 (paired: -0.043 to -0.055 on every
    seed); NNCF's defaults, fed single images, 0.319.
    """
    return [x[i : i + 1] for x in calib for i in range(len(x))]


def place_for_target(
    path: Path, target: str, calib: list[torch.Tensor] | None = None, output_ranges: str = "mse"
) -> dict[str, int]:
    """Rewrite the Q/DQ file at `path` the way `target`'s rules want; counts per rewrite.

    `output_ranges`: how the tensors the rewrites quantize get their ranges (`rewrite.tensor_ranges`).
    """
    rules = rules_for(target)
    counts = apply_rewrites(path, rules.rewrites, [x.numpy() for x in calib] if calib else None, output_ranges)
    if rules.signed_only:
        counts["to_signed_int8"] = to_signed_int8(path)
    return counts


def quantize_onnx(
    float_path: Path, out: Path, calib: list[torch.Tensor], config: Int8Config, ignored: list[str]
) -> dict[str, int]:
    """Route onnx: fold BN in the exported graph, `nncf.quantize` it, place Q/DQ for the target."""
    nncf = nncf_module()
    import onnx

    folded = out.with_name("float_folded.onnx")
    fold_batchnorm_onnx(float_path, folded)
    model = onnx.load(str(folded))
    input_name = model.graph.input[0].name
    node_names = [n.name for n in model.graph.node if n.op_type in ("Conv", "Gemm", "MatMul", "ConvTranspose")]
    names = [n for layer in ignored for n in nodes_of(layer, node_names)]
    scope = nncf.IgnoredScope(names=names) if names else None
    dataset = nncf.Dataset(single_samples(calib), lambda x: {input_name: x.numpy()})
    with _quiet():
        q = _nncf_quantize(nncf, model, dataset, scope, config)
    onnx.save(q, str(out))
    folded.unlink(missing_ok=True)
    return place_for_target(out, config.target, calib, config.output_ranges)


class _NativeFakeQuant(nn.Module):
    """One NNCF quantizer as torch's native fake-quant op (exports to QuantizeLinear/DequantizeLinear)."""

    def __init__(self, scale: torch.Tensor, zero_point: torch.Tensor, qmin: int, qmax: int, axis: int | None) -> None:
        super().__init__()
        self.register_buffer("scale", scale.detach().float().reshape(-1))
        self.register_buffer("zero_point", zero_point.detach().reshape(-1).to(torch.int32))
        self.qmin, self.qmax, self.axis = qmin, qmax, axis

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.axis is None:
            return torch.fake_quantize_per_tensor_affine(
                x, float(self.scale[0]), int(self.zero_point[0]), self.qmin, self.qmax
            )
        return torch.fake_quantize_per_channel_affine(x, self.scale, self.zero_point, self.axis, self.qmin, self.qmax)


def _to_native(quantizer: nn.Module) -> _NativeFakeQuant:
    """NNCF quantizer -> native fake-quant with a full int8/uint8 range (what ONNX Q/DQ computes)."""
    import numpy as np

    quantizer.set_levels()
    qmin, qmax, scale, zp = quantizer.get_parameters_for_torch_fq()
    axis = int(np.argmax(quantizer.scale_shape)) if quantizer.per_channel else None
    lo, hi = (-128, 127) if qmin < 0 else (0, 255)
    # NNCF may use a narrow or half range; the clamp below keeps the values it produces
    native = _NativeFakeQuant(scale, zp, lo, hi, axis)
    native.nncf_range = (int(qmin), int(qmax))
    return native


def quantize_torch(
    base: Model, out: Path, calib: list[torch.Tensor], config: Int8Config, ignored: list[str], ctx: Context
) -> dict[str, int]:
    """Route torch: fold BN in torch, `nncf.quantize` (and QAT), export native fake-quant, place Q/DQ."""
    nncf = nncf_module()
    from nncf.torch.function_hook.wrapper import get_hook_storage
    from nncf.torch.quantization.layers import BaseQuantizer

    from compress.export.onnx import ExportConfig, export_onnx

    module = _Root(fold_batchnorm_torch(base.module))
    patterns = [f"^net/{re.escape(layer.replace('.', '/'))}/.*" for layer in ignored]
    scope = nncf.IgnoredScope(patterns=patterns, validate=False) if patterns else None
    with _quiet():
        q = _nncf_quantize(nncf, module, nncf.Dataset(single_samples(calib)), scope, config, route="torch")
    if config.qat_epochs > 0:
        from compress.train.loop import TrainConfig, train

        tc = TrainConfig(
            epochs=config.qat_epochs,
            batch_size=config.batch_size,
            optimizer="adam",
            lr=config.qat_lr,
            weight_decay=0.0,
            schedule="cosine",
            seed=config.seed,
            eval_every=0,
        )
        train(q, ctx.data, tc, checkpoint=ctx.checkpoint("qat"), description="qat")
    q.eval()
    storage = get_hook_storage(q)
    with torch.no_grad():
        for name, hook in list(storage.named_hooks()):
            if isinstance(hook, BaseQuantizer):
                if hook.num_bits != 8:
                    raise CompressError(f"unexpected {hook.num_bits}-bit quantizer at {name}")
                storage.set_submodule(name, _to_native(hook))
    export_onnx(
        Model(q, base.arch, base.input_shape, base.task),
        out,
        ExportConfig(exporter="torchscript", opset=17, atol=5e-2, rtol=5e-2, min_top1_agreement=0.9),
    )
    fold_weight_quantizers(out)
    return place_for_target(out, config.target, calib, config.output_ranges)


class _Root(nn.Module):
    """NNCF attaches its hook storage to the root; an nn.Sequential root would then call it in forward."""

    def __init__(self, net: nn.Module) -> None:
        super().__init__()
        self.net = net

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


def _nncf_quantize(nncf, model, dataset, scope, config: Int8Config, route: str = "onnx"):
    """nncf.quantize, with its internal failures turned into one line that names the settings."""
    try:
        return nncf.quantize(model, dataset, ignored_scope=scope, **_nncf_params(config))
    except Exception as e:  # NNCF raises RuntimeError, ValueError, its own errors...
        from compress.errors import BackendError

        first = str(e).strip().splitlines()[0][:200] if str(e).strip() else type(e).__name__
        raise BackendError(f"NNCF quantization failed (route {route}, preset {preset_for(config)}): {first}") from None


def nncf_module():
    """Import NNCF quietly: through torch's cpp_extension it warns about CUDA_HOME on CPU-only machines."""
    import logging
    import os

    # NNCF builds its torch extension on first use and gives up after 60 s, which a busy 2-core runner exceeds
    os.environ.setdefault("NNCF_EXTENSION_LOAD_TIMEOUT", "600")

    logging.getLogger("torch.utils.cpp_extension").setLevel(logging.ERROR)
    try:
        import nncf
    except ImportError:
        from compress.errors import MissingDependencyError

        raise MissingDependencyError("int8 quantization needs NNCF: pip install nncf") from None
    return nncf
