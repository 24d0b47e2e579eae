"""INT8 post-training quantization and QAT through NNCF, written as a Q/DQ ONNX model.

Two routes produce the deployed Q/DQ graph:
- `onnx` (default): export the float model, fold BatchNorm into the convolutions with ONNX Runtime's
  basic graph optimisation, then `nncf.quantize` the ONNX model. Measured on this project's CPU
  (see benchmarks/quantize_int8.py) it gives the faster graph: every Conv is quantized with BN
  already folded, so ONNX Runtime fuses the Q/DQ pairs into QLinearConv.
- `torch`: fold BN in torch (torch.fx), `nncf.quantize` the torch model, optionally fine-tune it
  (QAT, `qat_epochs`) through the shared training loop, replace NNCF's quantizers with torch's
  native fake-quant ops and export them with the TorchScript exporter (fake-quant does not export
  under dynamo), which writes QuantizeLinear/DequantizeLinear. QAT always takes this route.

Accuracy budget: with `max_accuracy_drop`, the drop of the task's primary metric (measured through
ONNX Runtime on the validation split) is checked; while it exceeds the budget the most sensitive
layers (ranked by the metric regained when that layer alone is kept in float) are added to the
ignored scope, one at a time, and the model is re-quantized. The layers kept in float are reported.
"""

from __future__ import annotations

import contextlib
import io
import logging
import re
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import torch
from torch import nn

from compress.errors import CompressError, RecipeError
from compress.methods import Context, Result, register_method
from compress.models.model import Model
from compress.quantize._common import (
    calibration_batches,
    file_size,
    ort_metrics,
    primary,
    quantizable_layers,
    workdir,
)


@dataclass
class Int8Config:
    """INT8 quantization settings.

    Attributes:
        route: onnx (quantize the exported ONNX model; default, measured faster) or torch (quantize the
            torch model, then export; QAT always uses it).
        calib_size: calibration samples taken from the data's calibration split.
        preset: performance (symmetric activations and weights) or mixed (asymmetric activations).
        target: onnxruntime or tensorrt (forces symmetric signed INT8 per TensorRT's Q/DQ rules, and
            the result is checked with `check_qdq`).
        ignored: regular expressions over module names (e.g. "fc", "layer1\\..*") kept in float.
        qat_epochs: > 0 fine-tunes the quantized model through the shared training loop (QAT).
        qat_lr: learning rate of QAT (Adam).
        batch_size: QAT and calibration batch size.
        max_accuracy_drop: allowed drop of the primary metric (accuracy as a fraction, e.g. 0.01 =
            1 point; PSNR in dB); None: no budget.
        max_float_layers: at most this many layers are put back into float to meet the budget.
        seed: QAT seed.
    """

    route: Literal["onnx", "torch"] = "onnx"
    calib_size: int = 300
    preset: Literal["performance", "mixed"] = "performance"
    target: Literal["onnxruntime", "tensorrt"] = "onnxruntime"
    ignored: list[str] = field(default_factory=list)
    qat_epochs: int = 0
    qat_lr: float = 1e-4
    batch_size: int = 32
    max_accuracy_drop: float | None = None
    max_float_layers: int = 8
    seed: int = 0

    def __post_init__(self) -> None:
        if self.calib_size < 1:
            raise ValueError("calib_size must be >= 1")
        if self.qat_epochs < 0:
            raise ValueError("qat_epochs must be >= 0")
        if self.target == "tensorrt" and self.preset != "performance":
            raise ValueError("target tensorrt needs preset performance (TensorRT rejects asymmetric Q/DQ)")
        for p in self.ignored:
            try:
                re.compile(p)
            except re.error as e:
                raise ValueError(f"ignored pattern {p!r} is not a regular expression ({e})") from None


@register_method("quantize", "int8", Int8Config)
def int8(model: Model, config: Int8Config, ctx: Context) -> Result:
    """Quantize weights and activations to INT8; returns the Q/DQ ONNX model and its metrics."""
    from compress.quantize.qdq import check_qdq

    out_dir = workdir(ctx, "int8")
    base = model.copy()
    base.input_shape = tuple(ctx.data.input_shape)
    route = "torch" if config.qat_epochs > 0 else config.route
    calib = calibration_batches(ctx.data, config.calib_size, config.batch_size)
    layer_names = [n for n, _ in quantizable_layers(base.module)]
    ignored = _match(layer_names, config.ignored)

    float_path = out_dir / "float.onnx"
    _export_float(base, float_path)
    metric_name, higher = primary(base.task)
    float_metrics = ort_metrics(float_path, ctx.data)
    out_path = out_dir / "model.onnx"

    def build(ignore: list[str]) -> Path:
        if route == "onnx":
            _quantize_onnx(float_path, out_path, calib, config, ignore)
        else:
            _quantize_torch(base, out_path, calib, config, ignore, ctx)
        return out_path

    def drop_of(metrics: dict[str, float]) -> float:
        d = float_metrics[metric_name] - metrics[metric_name]
        return d if higher else -d

    build(ignored)
    metrics = ort_metrics(out_path, ctx.data)
    restored: list[str] = []
    if config.max_accuracy_drop is not None and drop_of(metrics) > config.max_accuracy_drop:
        candidates = [n for n in layer_names if n not in ignored]
        ranking = []
        for name in candidates:  # sensitivity: what keeping this layer alone in float regains
            build([*ignored, name])
            m = ort_metrics(out_path, ctx.data)
            ranking.append((-drop_of(m), -m.get("loss", 0.0) if "loss" in m else 0.0, name))
        ranking.sort(reverse=True)
        for _, _, name in ranking[: config.max_float_layers]:
            restored.append(name)
            build([*ignored, *restored])
            metrics = ort_metrics(out_path, ctx.data)
            if drop_of(metrics) <= config.max_accuracy_drop:
                break
        else:
            build([*ignored, *restored])
            metrics = ort_metrics(out_path, ctx.data)
    qdq = check_qdq(out_path, config.target)
    if config.target == "tensorrt" and not qdq["valid"]:
        raise CompressError(f"the INT8 model breaks TensorRT's Q/DQ rules: {qdq['violations'][0]}")
    float_layers = [*ignored, *restored]
    n_float = sum(m.weight.numel() for n, m in quantizable_layers(base.module) if n in float_layers)
    n_all = sum(m.weight.numel() for _, m in quantizable_layers(base.module))
    result_metrics: dict[str, Any] = {
        **{k: v for k, v in metrics.items() if k != "samples"},
        f"float_{metric_name}": float_metrics[metric_name],
        f"{metric_name}_drop": drop_of(metrics),
        "bits_per_weight": (8 * (n_all - n_float) + 32 * n_float) / max(n_all, 1),
        "size_bytes": file_size(out_path),
        "float_size_bytes": file_size(float_path),
        "route": route,
        "qat_epochs": config.qat_epochs,
        "float_layers": float_layers,
        "budget_restored_layers": restored,
        "qdq_nodes": qdq["quantize_linear"] + qdq["dequantize_linear"],
        "qdq_valid": qdq["valid"],
        "qdq_target": config.target,
        "budget_met": None if config.max_accuracy_drop is None else drop_of(metrics) <= config.max_accuracy_drop,
    }
    return Result(model=None, onnx=out_path, metrics=result_metrics, files={"float_onnx": float_path})


def _match(names: list[str], patterns: list[str]) -> list[str]:
    out = [n for n in names if any(re.fullmatch(p, n) for p in patterns)]
    unmatched = [p for p in patterns if not any(re.fullmatch(p, n) for n in names)]
    if unmatched:
        raise RecipeError(
            f"ignored pattern {unmatched[0]!r} matches no Conv/Linear layer; layers: {', '.join(names[:8])}"
            + (", ..." if len(names) > 8 else "")
        )
    return out


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


def _export_float(model: Model, path: Path) -> None:
    """Float ONNX with the TorchScript exporter, so node names carry module paths (/layer1/conv1/Conv)."""
    from compress.export.onnx import ExportConfig, export_onnx

    export_onnx(model, path, ExportConfig(exporter="torchscript", opset=17))


def _fold_batchnorm_onnx(src: Path, dst: Path) -> None:
    """ONNX Runtime's basic optimisation folds BN (and constants) into the convolutions; standard ops only."""
    import onnxruntime as ort

    so = ort.SessionOptions()
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_BASIC
    so.optimized_model_filepath = str(dst)
    so.log_severity_level = 3
    ort.InferenceSession(str(src), so, providers=["CPUExecutionProvider"])


def _nncf_params(config: Int8Config) -> dict[str, Any]:
    nncf = _nncf()

    preset = nncf.QuantizationPreset.PERFORMANCE if config.preset == "performance" else nncf.QuantizationPreset.MIXED
    # NNCF's fast bias correction (its full variant is not supported for these backends)
    return {"preset": preset, "subset_size": config.calib_size, "fast_bias_correction": True}


def to_signed_int8(path: Path) -> int:
    """Rewrite symmetric UINT8 Q/DQ pairs (zero-point 0, e.g. after ReLU) as signed INT8 for TensorRT.

    A uint8 range [0, 255*s] becomes int8 [-128*s', 127*s'] with s' = 255/127 * s, i.e. one bit of
    resolution is given up on non-negative activations, which is what TensorRT's signed INT8 costs
    anyway. (NNCF's `signedness_to_force` conflicts with its own hardware config for the ANY device.)
    Returns the number of Q/DQ nodes rewritten.
    """
    import numpy as np
    import onnx
    from onnx import numpy_helper

    model = onnx.load(str(path))
    graph = model.graph
    for node in [n for n in graph.node if n.op_type == "Constant"]:  # TorchScript writes scales as Constants
        if len(node.attribute) == 1 and node.attribute[0].name == "value":
            t = onnx.TensorProto()
            t.CopyFrom(node.attribute[0].t)
            t.name = node.output[0]
            graph.initializer.append(t)
            graph.node.remove(node)
    inits = {t.name: t for t in graph.initializer}
    done: dict[tuple[str, str], tuple[str, str]] = {}
    count = 0
    for node in graph.node:
        if node.op_type not in ("QuantizeLinear", "DequantizeLinear") or len(node.input) < 3:
            continue
        s_name, z_name = node.input[1], node.input[2]
        if z_name not in inits or s_name not in inits:
            continue
        zp = numpy_helper.to_array(inits[z_name])
        if zp.dtype != np.uint8:
            continue
        if np.any(zp != 0):
            raise CompressError(f"{node.name}: asymmetric uint8 quantization cannot be made TensorRT-valid")
        if (s_name, z_name) not in done:
            scale = numpy_helper.to_array(inits[s_name]).astype(np.float32) * np.float32(255.0 / 127.0)
            new_s, new_z = f"{s_name}_s8", f"{z_name}_s8"
            graph.initializer.append(numpy_helper.from_array(scale, new_s))
            graph.initializer.append(numpy_helper.from_array(np.zeros_like(zp, dtype=np.int8), new_z))
            done[(s_name, z_name)] = (new_s, new_z)
        node.input[1], node.input[2] = done[(s_name, z_name)]
        count += 1
    used = {i for n in graph.node for i in n.input}
    for t in list(graph.initializer):
        if t.name not in used:
            graph.initializer.remove(t)
    del graph.value_info[:]  # stale uint8 type annotations; ONNX Runtime re-infers them
    onnx.save(model, str(path))
    return count


def _quantize_onnx(
    float_path: Path, out: Path, calib: list[torch.Tensor], config: Int8Config, ignored: list[str]
) -> None:
    nncf = _nncf()
    import onnx

    folded = out.with_name("float_folded.onnx")
    _fold_batchnorm_onnx(float_path, folded)
    model = onnx.load(str(folded))
    input_name = model.graph.input[0].name
    node_names = [n.name for n in model.graph.node if n.op_type in ("Conv", "Gemm", "MatMul", "ConvTranspose")]
    names = [n for n in node_names if any(n.startswith("/" + layer.replace(".", "/") + "/") for layer in ignored)]
    scope = nncf.IgnoredScope(names=names) if names else None
    dataset = nncf.Dataset(calib, lambda x: {input_name: x.numpy()})
    with _quiet():
        q = _nncf_quantize(nncf, model, dataset, scope, config)
    onnx.save(q, str(out))
    folded.unlink(missing_ok=True)
    if config.target == "tensorrt":
        to_signed_int8(out)


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


def _quantize_torch(
    base: Model, out: Path, calib: list[torch.Tensor], config: Int8Config, ignored: list[str], ctx: Context
) -> None:
    nncf = _nncf()
    from nncf.torch.function_hook.wrapper import get_hook_storage
    from nncf.torch.quantization.layers import BaseQuantizer

    from compress.export.onnx import ExportConfig, export_onnx

    module = _Root(_fold_batchnorm_torch(base.module))
    patterns = [f"^net/{re.escape(layer.replace('.', '/'))}/.*" for layer in ignored]
    scope = nncf.IgnoredScope(patterns=patterns, validate=False) if patterns else None
    with _quiet():
        q = _nncf_quantize(nncf, module, nncf.Dataset(calib), scope, config)
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
    if config.target == "tensorrt":
        to_signed_int8(out)


def fold_weight_quantizers(path: Path) -> int:
    """Replace `float initializer -> QuantizeLinear` by the integer initializer it computes.

    The TorchScript exporter writes fake-quantized weights as float weights followed by Q/DQ; storing
    the integers instead makes the file ~4x smaller and gives the same DQ output bit for bit.
    Returns the number of weights folded.
    """
    import numpy as np
    import onnx
    from onnx import numpy_helper

    model = onnx.load(str(path))
    graph = model.graph
    inits = {t.name: t for t in graph.initializer}
    consts = {}
    for node in graph.node:
        if node.op_type == "Constant":
            consts[node.output[0]] = numpy_helper.to_array(node.attribute[0].t)
    uses: dict[str, int] = {}
    for node in graph.node:
        for name in node.input:
            uses[name] = uses.get(name, 0) + 1

    alias = {n.output[0]: n.input[0] for n in graph.node if n.op_type == "Identity"}

    def const(name: str):
        while name in alias:
            name = alias[name]
        return numpy_helper.to_array(inits[name]) if name in inits else consts.get(name)

    folded, keep = 0, []
    for node in graph.node:
        if node.op_type == "QuantizeLinear" and node.input[0] in inits and uses.get(node.input[0]) == 1:
            w, scale = const(node.input[0]), const(node.input[1])
            zp = const(node.input[2]) if len(node.input) > 2 else None
            if scale is not None and zp is not None:
                axis = next((a.i for a in node.attribute if a.name == "axis"), 1)
                shape = [1] * w.ndim
                if scale.size > 1:
                    shape[axis % w.ndim] = scale.size
                info = np.iinfo(zp.dtype)
                q = np.clip(np.rint(w / scale.reshape(shape)) + zp.reshape(shape).astype(np.int32), info.min, info.max)
                graph.initializer.remove(inits[node.input[0]])
                graph.initializer.append(numpy_helper.from_array(q.astype(zp.dtype), node.output[0]))
                folded += 1
                continue
        keep.append(node)
    if folded:
        del graph.node[:]
        graph.node.extend(keep)
        onnx.save(model, str(path))
    return folded


class _Root(nn.Module):
    """NNCF attaches its hook storage to the root; an nn.Sequential root would then call it in forward."""

    def __init__(self, net: nn.Module) -> None:
        super().__init__()
        self.net = net

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


def _fold_batchnorm_torch(module: nn.Module) -> nn.Module:
    """A copy with each BatchNorm that directly follows a Conv folded into it (the BN becomes Identity).

    The pairs are found by tracing with torch.fx; a module that cannot be traced is returned unfolded.
    The result stays a plain nn.Module (NNCF would treat an fx.GraphModule as a torch.fx model).
    """
    import copy

    import torch.fx
    from torch.nn.utils.fusion import fuse_conv_bn_eval

    module = copy.deepcopy(module).eval()
    try:
        graph = torch.fx.symbolic_trace(module).graph
    except Exception:  # not fx-traceable: quantize with BN unfolded
        return module
    mods = dict(module.named_modules())
    users: dict[str, int] = {}
    for node in graph.nodes:
        for arg in node.all_input_nodes:
            users[arg.name] = users.get(arg.name, 0) + 1
    for node in graph.nodes:
        if node.op != "call_module" or not isinstance(mods.get(node.target), nn.BatchNorm2d):
            continue
        src = node.args[0]
        if not (isinstance(src, torch.fx.Node) and src.op == "call_module" and users.get(src.name) == 1):
            continue
        conv = mods.get(src.target)
        if not isinstance(conv, nn.Conv2d) or type(conv) is not nn.Conv2d:
            continue
        fused = fuse_conv_bn_eval(conv, mods[node.target])
        _replace(module, src.target, fused)
        _replace(module, node.target, nn.Identity())
    return module


def _replace(root: nn.Module, path: str, new: nn.Module) -> None:
    parent, _, name = path.rpartition(".")
    setattr(root.get_submodule(parent) if parent else root, name, new)


def _nncf_quantize(nncf, model, dataset, scope, config: Int8Config):
    """nncf.quantize, with its internal failures turned into one line that names the settings."""
    try:
        return nncf.quantize(model, dataset, ignored_scope=scope, **_nncf_params(config))
    except Exception as e:  # NNCF raises RuntimeError, ValueError, its own errors...
        from compress.errors import BackendError

        first = str(e).strip().splitlines()[0][:200] if str(e).strip() else type(e).__name__
        raise BackendError(
            f"NNCF quantization failed (route {config.route}, preset {config.preset}): {first}"
        ) from None


def _nncf():
    """Import NNCF quietly: through torch's cpp_extension it warns about CUDA_HOME on CPU-only machines."""
    import logging

    logging.getLogger("torch.utils.cpp_extension").setLevel(logging.ERROR)
    try:
        import nncf
    except ImportError:
        from compress.errors import MissingDependencyError

        raise MissingDependencyError("int8 quantization needs NNCF: pip install nncf") from None
    return nncf
