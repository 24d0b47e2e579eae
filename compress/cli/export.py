"""`compress export`: a PyTorch model to ONNX, checked against ONNX Runtime."""

from __future__ import annotations

from pathlib import Path

import typer

from compress.cli import options as opt
from compress.cli.common import handle_errors, parse_shape
from compress.errors import CompressError


@handle_errors
@opt.with_model_loading
def export(
    model: str = typer.Argument(..., help="Checkpoint, run directory or model spec."),
    out: Path = typer.Option(..., "--out", "-o", help="The .onnx file to write."),
    opset: int = typer.Option(18, "--opset", help="ONNX opset (the TorchScript fallback caps it at 17)."),
    exporter: str = typer.Option("auto", "--exporter", help="auto, dynamo or torchscript."),
    static_batch: bool = typer.Option(False, "--static-batch", help="Fix the batch axis instead of a dynamic one."),
    atol: float = typer.Option(1e-3, "--atol", help="Parity tolerance (absolute)."),
    bake_preprocessing: bool = typer.Option(
        False, "--bake-preprocessing", help="Put the model's mean/std into the graph: deployed inputs are [0, 1]."
    ),
    input_shape: str | None = opt.InputShape,
    num_classes: int | None = opt.NumClasses,
    force: bool = opt.Force,
    trust_code: bool = opt.TrustCode,
    loading: opt.ModelLoading = None,
) -> None:
    """Export to ONNX with a dynamic batch axis; onnx.checker and an ORT-vs-torch parity check must pass.

    If OUT lies inside the model's run directory, the run's manifest gains the `onnx` artifact.
    """
    from compress.cli.common import console
    from compress.config import from_dict
    from compress.export.onnx import ExportConfig, export_onnx
    from compress.io import atomic_write_json, sha256_file
    from compress.models.sources import resolve_model_path
    from compress.pipeline import load_input
    from compress.runs import read_manifest

    if out.suffix != ".onnx":
        raise CompressError(f"--out must end in .onnx, got {out}")
    source = resolve_model_path(model, "torch") if Path(model).exists() else None
    if source is not None and out.resolve() == source.resolve():
        raise CompressError(f"--out {out} is the input model; choose another path")
    if out.exists() and not force:
        raise CompressError(f"{out} exists; pass --force to replace it")
    net = load_input(
        model,
        num_classes=num_classes,
        input_shape=parse_shape(input_shape),
        trust_code=trust_code,
        **loading.kwargs(),
    )
    cfg = from_dict(
        ExportConfig,
        {
            "opset": opset,
            "exporter": exporter,
            "dynamic_batch": not static_batch,
            "atol": atol,
            "bake_preprocessing": bake_preprocessing,
        },
        where="export options",
    )
    report = export_onnx(net, out, cfg)
    run_dir = Path(model) if Path(model).is_dir() else None
    if run_dir is not None and out.resolve().parent == run_dir.resolve():
        manifest = read_manifest(run_dir)
        manifest["artifacts"]["onnx"] = {"path": out.name, "sha256": sha256_file(out), "bytes": out.stat().st_size}
        manifest["export"] = report
        atomic_write_json(run_dir / "manifest.json", manifest)
    p = report["parity"]
    console().print(
        f"[green]exported[/green] {out} ({report['exporter']}, opset {report['opset']}, {report['bytes']:,} bytes); "
        f"parity max|Δ| {p['max_abs_diff']:.2e}"
        + (f", top-1 agreement {p['top1_agreement']:.3f}" if "top1_agreement" in p else "")
    )
