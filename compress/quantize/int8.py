"""INT8 post-training quantization and QAT through NNCF, written as a Q/DQ ONNX model placed for its runtime.

The jobs live in their own modules:
- `nncf_adapter`: the two routes. `onnx` (default): export the float model, fold BatchNorm with ONNX
  Runtime's basic optimisation, `nncf.quantize` the ONNX model. `torch`: fold BN in torch, quantize
  the torch model, optionally fine-tune it (QAT, `qat_epochs`) and export native fake-quant ops.
- `targets` + the target's backend: where Q/DQ must sit for the runtime (for ONNX Runtime CPU:
  per-tensor activations, one activation type, Relu/Clip absorbed into the quantization range, so
  every Conv fuses into QLinearConv), applied by the rewrites of `rewrite`.
- `budget`: the accuracy budget (sensitive layers back to float) and latency-aware mixed precision.
- `speed`: the speed guard, float vs INT8 interleaved with `compress check`'s statistics.
- `compress.backends.onnxruntime.runtime_report`: what ORT really ran (integer kernels vs float, time
  share by op type), recorded in the metrics.
"""

from __future__ import annotations

import re
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from compress.errors import CompressError, RecipeError
from compress.methods import Context, Result, register_method
from compress.models.model import Model
from compress.quantize._common import (
    calibration_batches,
    file_size,
    metric_for,
    ort_metrics,
    quantizable_layers,
    workdir,
)
from compress.quantize.bnfold import fold_batchnorm_onnx as _fold_batchnorm_onnx  # noqa: F401  (benchmarks)
from compress.quantize.rewrite import fold_weight_quantizers, to_signed_int8  # noqa: F401  (public as before)
from compress.quantize.speed import FASTER, SLOWER, UNDECIDED


@dataclass
class Int8Config:
    """INT8 quantization settings.

    Attributes:
        route: onnx (quantize the exported ONNX model; default, measured faster) or torch (quantize the
            torch model, then export; QAT always uses it).
        calib_size: calibration samples taken from the data's calibration split.
        preset: performance (symmetric activations and weights), mixed (asymmetric activations) or auto
            (the target's: mixed for onnxruntime, whose uint8 kernels take any zero-point, performance
            for tensorrt, which rejects asymmetric Q/DQ).
        target: onnxruntime or tensorrt (forces symmetric signed INT8 per TensorRT's Q/DQ rules, and
            the result is checked with `check_qdq`).
        overflow_fix: weights in half the int8 range (NNCF's overflow fix): enable (every conv /
            matmul), first_layer (NNCF's default), disable, or auto: enable where ONNX Runtime's x86
            u8 x s8 kernels saturate (a CPU without VNNI: top-1 agreement of random-init resnet18 with
            float 77% -> 88%), else first_layer. The deployment CPU is assumed to be this one.
        output_ranges: how the tensors compress quantizes itself for the target (conv / matmul outputs
            read by float ops, squeeze-excitation operands, pooled vectors) get their ranges: mse (the
            clipped range whose grid has the least squared error), percentile (the 0.01% / 99.99%
            points of the calibration values) or mean_minmax (NNCF's mean of per-sample extremes).
            Top-1 agreement with float, mse vs mean_minmax: convnext_tiny 94.5 vs 89.1%,
            efficientnet_b0 61.3 vs 58.6% (random init, see `rewrite.tensor_ranges`).
        ignored: regular expressions over module names (e.g. "fc", "layer1\\..*") kept in float.
        qat_epochs: > 0 fine-tunes the quantized model through the shared training loop (QAT).
        qat_lr: learning rate of QAT (Adam).
        batch_size: QAT and calibration batch size.
        max_accuracy_drop: allowed drop of the primary metric (accuracy as a fraction, e.g. 0.01 =
            1 point; PSNR in dB); None: no budget.
        max_float_layers: at most this many layers are put back into float to meet the budget.
        seed: QAT seed.
        speed_check: measure float vs INT8 on ONNX Runtime CPU, interleaved (target onnxruntime).
        speed_rounds: interleaved rounds of the speed check.
        require_speedup: the speed guard: an INT8 model that measures slower than float is an error
            naming the slow ops. None (the default): on whenever the speed check runs, so recipe
            steps and library calls get it unless they set false; the `quantize` CLI passes false
            unless --require-speedup (it reports). An inconclusive measurement (interval straddling
            1.0 after a second, twice as long one) is reported as "not measurably faster", not an error.
        mixed_by_latency: keep in float the layers whose INT8 kernels take longer than their float
            kernel (ONNX Runtime's profiler): first whole kinds of layer (depthwise convs, grouped
            convs, linear layers), then single layers, one candidate at a time (at most
            `latency_trials`), each only if the whole model then measures faster. None (the default):
            when the all-INT8 model is not measurably faster than float, or a kind of layer is slower
            in INT8 by the profiler; true: always; false: never.
        latency_trials: at most this many candidates (kinds or layers) are tried in float by mixed_by_latency.
        threads: intra-op threads of the speed check and the runtime report (0: physical cores).
    """

    route: Literal["onnx", "torch"] = "onnx"
    calib_size: int = 300
    preset: Literal["auto", "performance", "mixed"] = "auto"
    target: Literal["onnxruntime", "tensorrt"] = "onnxruntime"
    overflow_fix: Literal["auto", "enable", "first_layer", "disable"] = "auto"
    output_ranges: Literal["mse", "percentile", "mean_minmax"] = "mse"
    ignored: list[str] = field(default_factory=list)
    qat_epochs: int = 0
    qat_lr: float = 1e-4
    batch_size: int = 32
    max_accuracy_drop: float | None = None
    max_float_layers: int = 8
    seed: int = 0
    speed_check: bool = True
    speed_rounds: int = 8
    require_speedup: bool | None = None
    mixed_by_latency: bool | None = None
    latency_trials: int = 4
    threads: int = 0

    def __post_init__(self) -> None:
        if self.calib_size < 1:
            raise ValueError("calib_size must be >= 1")
        if self.qat_epochs < 0:
            raise ValueError("qat_epochs must be >= 0")
        if self.latency_trials < 1:
            raise ValueError("latency_trials must be >= 1")
        if self.speed_rounds < 5:
            raise ValueError("speed_rounds must be >= 5 (fewer cannot reach significance)")
        if self.require_speedup and not self.speed_check:
            raise ValueError("require_speedup needs speed_check")
        if self.target == "tensorrt" and self.preset == "mixed":
            raise ValueError("target tensorrt needs preset performance (TensorRT rejects asymmetric Q/DQ)")
        for p in self.ignored:
            try:
                re.compile(p)
            except re.error as e:
                raise ValueError(f"ignored pattern {p!r} is not a regular expression ({e})") from None


@register_method("quantize", "int8", Int8Config)
def int8(model: Model, config: Int8Config, ctx: Context) -> Result:
    """Quantize weights and activations to INT8; returns the Q/DQ ONNX model, what the runtime ran and its speed."""
    from compress.env import cpu_isa
    from compress.quantize.budget import sensitivity_search
    from compress.quantize.nncf_adapter import overflow_fix_for, quantize_onnx, quantize_torch
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
    metric_name, higher = metric_for(base.task, ctx.data)
    float_metrics = ort_metrics(float_path, ctx.data, reference=float_path)
    out_path = out_dir / "model.onnx"
    placement: dict[str, int] = {}

    def build(ignore: list[str]) -> dict[str, float]:
        if route == "onnx":
            placement.update(quantize_onnx(float_path, out_path, calib, config, ignore))
        else:
            placement.update(quantize_torch(base, out_path, calib, config, ignore, ctx))
        return ort_metrics(out_path, ctx.data, reference=float_path)

    def drop_of(metrics: dict[str, float]) -> float:
        d = float_metrics[metric_name] - metrics[metric_name]
        return d if higher else -d

    metrics = build(ignored)
    restored: list[str] = []
    if config.max_accuracy_drop is not None and drop_of(metrics) > config.max_accuracy_drop:
        restored, budget_metrics = sensitivity_search(
            layer_names, ignored, build, drop_of, config.max_accuracy_drop, config.max_float_layers
        )
        metrics = budget_metrics or build(ignored)
    float_layers = [*ignored, *restored]
    runtime: dict[str, Any] = {}
    speed: dict[str, Any] | None = None
    latency_layers: list[str] = []
    latency_trial: dict[str, Any] | None = None
    if config.target == "onnxruntime":
        runtime, speed = _measure(float_path, out_path, base.input_shape, config)
        busy = config.mixed_by_latency is None and speed is not None and speed.get("busy_machine")
        candidates = (
            _latency_candidates(float_path, base, layer_names, float_layers, runtime, speed, config)
            if not busy and config.mixed_by_latency is not False and (speed is not None or config.mixed_by_latency)
            else []
        )
        if busy:  # the default plan is not tried (`wants_latency_plan`), nor its float profile taken
            latency_trial = {"skipped": "busy machine: other processes took the CPU the trials would be timed on"}
        if wants_latency_plan(config, speed, candidates):
            first_placement = dict(placement)
            kept = _mixed_by_latency(
                float_path, out_path, base.input_shape, candidates, float_layers, build, drop_of, config
            )
            latency_trial = kept.pop("trial", None) if kept else None
            if kept and kept.get("accepted"):
                latency_layers, metrics = kept["layers"], kept["metrics"]
                float_layers = [*float_layers, *latency_layers]
                runtime, speed = _measure(float_path, out_path, base.input_shape, config)
            else:  # the file is the first build again
                placement.clear()
                placement.update(first_placement)
    qdq = check_qdq(out_path, config.target)
    if config.target == "tensorrt" and not qdq["valid"]:
        raise CompressError(f"the INT8 model breaks TensorRT's Q/DQ rules: {qdq['violations'][0]}")
    summary = _summary(config.target, runtime, speed)
    if latency_trial and "skipped" in latency_trial:
        summary += "; latency-aware mixed precision not tried (busy machine)"
    if guards_speed(config) and speed is not None and speed["verdict"] == SLOWER:
        from compress.quantize.speed import slow_ops

        raise CompressError(
            f"{summary}; slow ops: {', '.join(slow_ops(runtime)) or 'none found'} "
            "(speed guard: require_speedup: false in the step's params, or --no-require-speedup, to keep it)"
        )
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
        "latency_float_layers": latency_layers,
        "mixed_by_latency_trial": latency_trial,
        "qdq_nodes": qdq["quantize_linear"] + qdq["dequantize_linear"],
        "qdq_valid": qdq["valid"],
        "qdq_target": config.target,
        "qdq_placement": dict(placement),
        "overflow_fix": overflow_fix_for(config),
        "cpu_isa": list(cpu_isa()),
        "budget_met": None if config.max_accuracy_drop is None else drop_of(metrics) <= config.max_accuracy_drop,
        "int8_summary": summary,
        "speed_guard": guards_speed(config) and speed is not None,
    }
    if runtime:
        result_metrics["int8_ops"] = f"{runtime['integer_compute_ops']}/{runtime['compute_ops']}"
        result_metrics["runtime"] = {k: v for k, v in runtime.items() if k not in ("node_times_us", "ops", "path")}
    if speed is not None:
        result_metrics.update(
            {"speedup": speed["speedup"], "speedup_ci": speed["speedup_ci"], "speed_verdict": speed["verdict"]}
        )
        result_metrics["speed"] = speed
    return Result(model=None, onnx=out_path, metrics=result_metrics, files={"float_onnx": float_path})


def _measure(float_path: Path, path: Path, shape: tuple[int, ...], config: Int8Config):
    """The runtime report of the INT8 file and (with speed_check) its speedup over float."""
    from compress.backends.onnxruntime import runtime_report
    from compress.quantize.speed import measure_speedup

    runtime = runtime_report(path, input_shape=(1, *shape), threads=config.threads)
    speed = None
    if config.speed_check:
        speed = measure_speedup(
            float_path, path, tuple(shape), rounds=config.speed_rounds, threads=config.threads, seed=config.seed
        )
        if speed["verdict"] == UNDECIDED and not speed.get("busy_machine"):  # too noisy to decide: once more, longer
            first = speed
            speed = measure_speedup(
                float_path, path, tuple(shape), rounds=2 * config.speed_rounds, threads=config.threads, seed=config.seed
            )
            speed["first_attempt"] = {k: first[k] for k in ("speedup", "speedup_ci", "verdict", "rounds")}
    return runtime, speed


def guards_speed(config: Int8Config) -> bool:
    """Whether the speed guard is on: require_speedup, or by default whenever the speed check runs."""
    return config.speed_check if config.require_speedup is None else config.require_speedup


def wants_latency_plan(config: Int8Config, speed: dict[str, Any] | None, candidates: list[dict[str, Any]]) -> bool:
    """Whether to try latency-aware mixed precision: asked for, or (default) all-INT8 is not measurably faster,
    or a kind of layer (depthwise, grouped, linear) runs slower in INT8 than in float by the profiler. Not by
    default on a busy machine: no trial can measure faster there (see `speed`), so none could be kept."""
    if not candidates:
        return False
    if config.mixed_by_latency is None:
        if speed is None or speed.get("busy_machine"):
            return False
        return speed["verdict"] != FASTER or any(c.get("group") for c in candidates)
    return config.mixed_by_latency


def _latency_candidates(float_path, model, layer_names, float_layers, runtime, speed, config) -> list[dict[str, Any]]:
    """What latency-aware mixed precision tries, in order: kinds of layer, then single layers.

    Each: {"label", "layers", "group", "cost_us"}; at most `latency_trials`. Kinds (depthwise convs,
    grouped convs, linear layers) whose INT8 kernels cost more than their float kernels in ORT's
    profiler come first, worst first (every kind when the all-INT8 model is not measurably faster
    than float: the profiler misses the reorders around a kind's kernels); then single layers the
    same way, outside those kinds.
    """
    from compress.backends.onnxruntime import runtime_report
    from compress.quantize.budget import latency_candidates, latency_groups, layer_kind

    if not runtime or "node_times_us" not in runtime:
        return []
    free = [n for n in layer_names if n not in float_layers]
    modules = dict(model.module.named_modules())
    kinds: dict[str, list[str]] = {}
    for name in free:
        kind = layer_kind(modules[name])
        if kind is not None:
            kinds.setdefault(kind, []).append(name)
    every = speed is not None and speed["verdict"] != FASTER
    if not every and config.mixed_by_latency is None and not any(len(v) > 1 for v in kinds.values()):
        return []  # a faster all-INT8 model with no kind to try: nothing the default would try; no float profile
    float_report = runtime_report(float_path, input_shape=(1, *model.input_shape), threads=config.threads)
    groups = latency_groups(kinds, runtime, float_report, every=every)
    out = [{**g, "group": True} for g in groups if len(g["layers"]) > 1]
    grouped = {n for g in out for n in g["layers"]}
    singles = [c for c in latency_candidates(free, runtime, float_report) if c["layer"] not in grouped]
    out += [{"label": c["layer"], "layers": [c["layer"]], "group": False, "cost_us": c["cost_us"]} for c in singles]
    return out[: config.latency_trials]


def _mixed_by_latency(float_path, out_path, shape, candidates, float_layers, build, drop_of, config):
    """Keep in float, one candidate (a kind of layer, or one layer) at a time, what makes the model faster.

    Each candidate of `_latency_candidates` is re-quantized in float on top of those already kept and
    measured interleaved against the best file so far; it is kept if the model measures faster (and
    within the accuracy budget), else the best file is restored. Returns None (no candidate) or
    {"accepted", "layers", "metrics", "trial"}.
    """
    from compress.quantize.speed import measure_speedup

    if not candidates:
        return None
    best = out_path.with_name("best_int8.onnx")
    shutil.copyfile(out_path, best)
    kept: list[str] = []
    kept_metrics: dict[str, float] = {}
    trials = []
    for cand in candidates:
        metrics = build([*float_layers, *kept, *cand["layers"]])
        budget_ok = config.max_accuracy_drop is None or drop_of(metrics) <= config.max_accuracy_drop
        cmp = measure_speedup(best, out_path, tuple(shape), rounds=config.speed_rounds, threads=config.threads)
        accepted = budget_ok and cmp["verdict"] == FASTER
        trials.append(
            {
                "candidate": cand["label"],
                "layers": cand["layers"],
                "speedup_over_best": cmp,
                "accuracy_budget_met": budget_ok,
                "kept": accepted,
            }
        )
        if accepted:
            kept.extend(cand["layers"])
            kept_metrics = metrics
            shutil.copyfile(out_path, best)
    shutil.move(best, out_path)
    trial = {"candidates": [c["label"] for c in candidates], "trials": trials}
    if kept:
        return {"accepted": True, "layers": kept, "metrics": kept_metrics, "trial": trial}
    return {"accepted": False, "trial": trial}


def _summary(target: str, runtime: dict[str, Any], speed: dict[str, Any] | None) -> str:
    if not runtime:
        return f"INT8 for {target}: not run here (the speed check measures onnxruntime CPU only)"
    from compress.quantize.speed import describe

    text = (
        f"INT8: {runtime['integer_compute_ops']}/{runtime['compute_ops']} compute ops run as integer kernels "
        "on onnxruntime CPU"
    )
    return f"{text}; {describe(speed)}" if speed is not None else text


def _match(names: list[str], patterns: list[str]) -> list[str]:
    out = [n for n in names if any(re.fullmatch(p, n) for p in patterns)]
    unmatched = [p for p in patterns if not any(re.fullmatch(p, n) for n in names)]
    if unmatched:
        raise RecipeError(
            f"ignored pattern {unmatched[0]!r} matches no Conv/Linear layer; layers: {', '.join(names[:8])}"
            + (", ..." if len(names) > 8 else "")
        )
    return out


def _export_float(model: Model, path: Path) -> None:
    """Float ONNX with the TorchScript exporter, so node names carry module paths (/layer1/conv1/Conv)."""
    from compress.export.onnx import ExportConfig, export_onnx

    export_onnx(model, path, ExportConfig(exporter="torchscript", opset=17))
