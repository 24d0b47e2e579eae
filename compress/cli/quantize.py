"""`compress quantize`: INT8 (NNCF PTQ / QAT), codebook (JLCM, k-means) or bit-wise quantization into a run dir."""

from __future__ import annotations

from pathlib import Path

import typer

from compress.cli import options as opt
from compress.cli.common import data_config, handle_errors


@handle_errors
@opt.with_model_loading
def quantize(
    model: str = typer.Option(
        ..., "--model", "-m", help="Model spec: checkpoint, run dir, builtin:NAME, torchvision:NAME."
    ),
    out: Path = opt.Out,
    method: str = typer.Option("int8", "--method", help="int8, codebook, kmeans or bitwise."),
    data: str = opt.Data,
    calib_size: int | None = typer.Option(None, "--calib-size", help="Calibration samples (int8, codebook)."),
    target: str | None = typer.Option(None, "--target", help="int8: onnxruntime or tensorrt (TensorRT Q/DQ rules)."),
    preset: str | None = typer.Option(None, "--preset", help="int8: performance, mixed (asymmetric) or auto."),
    route: str | None = typer.Option(None, "--route", help="int8: onnx (quantize the exported ONNX) or torch."),
    overflow_fix: str | None = typer.Option(
        None,
        "--overflow-fix",
        help="int8: half-range weights: auto (on x86 CPUs without VNNI, whose u8s8 kernels saturate), enable, "
        "first_layer or disable.",
    ),
    ignore: list[str] | None = typer.Option(
        None, "--ignore", help="int8: module-name regex kept in float (repeatable)."
    ),
    qat_epochs: int | None = typer.Option(None, "--qat-epochs", help="int8: quantization-aware fine-tuning epochs."),
    max_accuracy_drop: float | None = typer.Option(
        None, "--max-accuracy-drop", help="int8: allowed drop of the primary metric (0.01 = 1 accuracy point)."
    ),
    require_speedup: bool | None = typer.Option(
        None,
        "--require-speedup/--no-require-speedup",
        help="int8: an INT8 model measured slower than float (ONNX Runtime CPU) is an error naming the slow ops "
        "(default off here: reported; on in recipes).",
    ),
    mixed_by_latency: bool | None = typer.Option(
        None,
        "--mixed-by-latency/--no-mixed-by-latency",
        help="int8: keep in float the kinds of layer (depthwise, grouped, linear), then single layers, whose INT8 "
        "kernels are slower than float, where that measures faster (default: when all-INT8 is not measurably "
        "faster, or the profiler finds a kind slower in INT8).",
    ),
    speed_check: bool | None = typer.Option(
        None, "--speed-check/--no-speed-check", help="int8: measure float vs INT8, interleaved (default on)."
    ),
    bits: int | None = typer.Option(None, "--bits", help="codebook/kmeans: index bits; bitwise: bits incl. sign."),
    groups: int | None = typer.Option(None, "--groups", help="codebook: neuron groups (codebooks) per layer."),
    sigma: float | None = typer.Option(None, "--sigma", help="codebook: width of the proximal STE weight."),
    steps: int | None = typer.Option(None, "--steps", help="codebook: reconstruction steps per layer."),
    train_bits: str | None = typer.Option(None, "--train-bits", help="bitwise: all or msb:K."),
    epochs: int | None = typer.Option(None, "--epochs", help="bitwise: training epochs."),
    lr: float | None = typer.Option(None, "--lr", help="bitwise/codebook learning rate, int8 QAT learning rate."),
    task: str | None = opt.Task,
    image_size: int | None = opt.ImageSize,
    channels: int | None = opt.Channels,
    limit: int | None = opt.Limit,
    seed: int | None = opt.Seed,
    config: Path | None = opt.MethodConfig,
    force: bool = opt.Force,
    resume: bool = opt.Resume,
    trust_code: bool = opt.TrustCode,
    loading: opt.ModelLoading = None,
) -> None:
    """Quantize a model; writes DIR/model.onnx (Q/DQ or codebook graph), the checkpoint and the figures."""
    from compress.cli.runs import execute, load_yaml_params
    from compress.config import from_dict
    from compress.errors import RecipeError
    from compress.methods import get_method

    spec = get_method("quantize", method)
    params = load_yaml_params(config)
    options = {
        "int8": {
            "calib_size": calib_size,
            "target": target,
            "preset": preset,
            "route": route,
            "overflow_fix": overflow_fix,
            "ignored": list(ignore) if ignore else None,
            "qat_epochs": qat_epochs,
            "max_accuracy_drop": max_accuracy_drop,
            "qat_lr": lr,
            "seed": seed,
            "require_speedup": require_speedup,
            "mixed_by_latency": mixed_by_latency,
            "speed_check": speed_check,
        },
        "codebook": {
            "bits": bits,
            "groups": groups,
            "sigma": sigma,
            "steps": steps,
            "calib_size": calib_size,
            "lr": lr,
            "seed": seed,
        },
        "kmeans": {"bits": bits},
        "bitwise": {"bits": bits, "train_bits": train_bits, "epochs": epochs, "lr": lr, "seed": seed},
    }.get(method, {})
    flags = {
        "--calib-size": ("calib_size", calib_size),
        "--target": ("target", target),
        "--preset": ("preset", preset),
        "--route": ("route", route),
        "--overflow-fix": ("overflow_fix", overflow_fix),
        "--ignore": ("ignored", ignore or None),
        "--qat-epochs": ("qat_epochs", qat_epochs),
        "--max-accuracy-drop": ("max_accuracy_drop", max_accuracy_drop),
        "--require-speedup": ("require_speedup", require_speedup),
        "--mixed-by-latency": ("mixed_by_latency", mixed_by_latency),
        "--speed-check": ("speed_check", speed_check),
        "--bits": ("bits", bits),
        "--groups": ("groups", groups),
        "--sigma": ("sigma", sigma),
        "--steps": ("steps", steps),
        "--train-bits": ("train_bits", train_bits),
        "--epochs": ("epochs", epochs),
    }
    for flag, (key, value) in flags.items():
        if value is not None and key not in options:
            raise RecipeError(f"{flag} does not apply to --method {method}")
    for key, value in options.items():
        if value is not None:
            params[key] = value
    if method == "int8":  # the CLI reports a slow INT8 model; recipes and the library fail on it
        params.setdefault("require_speedup", False)
    method_config = from_dict(spec.config, params, where=str(config) if config else f"quantize {method} options")
    data_cfg = data_config(
        data, task=task, image_size=image_size, channels=channels, limit=limit, calib_size=calib_size, seed=seed
    )
    execute(
        "quantize",
        method,
        method_config,
        model=model,
        out=out,
        data_cfg=data_cfg,
        force=force,
        resume=resume,
        trust_code=trust_code,
        loading=loading,
        export=False,
        summary_keys=(
            "accuracy",
            "psnr",
            "bits_per_weight",
            "size_bytes",
            "accuracy_drop",
            "sparsity",
            "qdq_valid",
            "float_layers",
            "int8_summary",
        ),
    )
