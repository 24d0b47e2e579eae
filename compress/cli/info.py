"""`compress info`: parameters, MACs, size and a layer table of a model or ONNX file."""

from __future__ import annotations

import json
from pathlib import Path

import typer

from compress.cli import options as opt
from compress.cli.common import handle_errors, parse_shape


@handle_errors
@opt.with_model_loading
def info(
    model: str = typer.Argument(..., help="Model spec, checkpoint, run directory or .onnx file."),
    input_shape: str | None = opt.InputShape,
    num_classes: int | None = opt.NumClasses,
    layers: bool = typer.Option(True, "--layers/--no-layers", help="Show the per-layer table."),
    as_json: bool = typer.Option(False, "--json", help="Print JSON instead of tables."),
    qdq: bool = typer.Option(False, "--qdq", help="ONNX: Q/DQ counts, dtypes, symmetry and validity for --target."),
    target: str = typer.Option("tensorrt", "--target", help="With --qdq: tensorrt or onnxruntime rules."),
    prunable: bool = typer.Option(
        False, "--prunable", help="Pruning coverage: channel groups, what is kept whole and why."
    ),
    runtime: str | None = typer.Option(
        None,
        "--runtime",
        help="ONNX: what this runtime really runs (onnxruntime: integer vs float kernels, time share).",
    ),
    sparsity: bool = typer.Option(
        False, "--sparsity", help="Per layer: does the N:M pattern hold, is it eligible for sparse kernels, why not."
    ),
    pattern: str = typer.Option("2:4", "--pattern", help="With --sparsity: the N:M pattern to check."),
    trust_code: bool = opt.TrustCode,
    loading: opt.ModelLoading = None,
) -> None:
    """Describe a model: params, MACs, size on disk, layers (or ONNX ops and initializers)."""
    from rich.table import Table

    from compress.cli.common import console
    from compress.models.sources import is_onnx_spec, resolve_model_path
    from compress.report.build import fmt_bytes, fmt_count

    out = console()
    if is_onnx_spec(model):
        from compress.analysis import onnx_summary
        from compress.errors import CompressError

        torch_only = [flag for flag, given in (("--prunable", prunable), ("--weights", loading.weights)) if given]
        if torch_only:
            raise CompressError(f"{torch_only[0]} needs a PyTorch model; {model} is an ONNX model")

        path = resolve_model_path(model, "onnx")
        if sparsity:
            return _sparsity(out, path, pattern, as_json)
        summary = onnx_summary(path)
        if qdq:
            from compress.quantize.qdq import check_qdq

            summary["qdq"] = check_qdq(path, target)
        if runtime:
            summary["runtime"] = _runtime_report(runtime, path, parse_shape(input_shape))
        if as_json:
            typer.echo(json.dumps(summary, indent=2))
            return
        t = Table(title=f"{path}", show_header=False)
        t.add_row("size", fmt_bytes(summary["bytes"]))
        t.add_row("params", f"{summary['params']:,}")
        t.add_row("opset", str(summary["opset"]))
        t.add_row("inputs", ", ".join(f"{i['name']} {i['shape']}" for i in summary["inputs"]))
        t.add_row("initializers", ", ".join(f"{k}: {fmt_count(v)}" for k, v in summary["initializer_dtypes"].items()))
        t.add_row("nodes", str(summary["nodes"]))
        t.add_row("ops", ", ".join(f"{k}×{v}" for k, v in summary["ops"].items()))
        out.print(t)
        if qdq:
            _print_qdq(out, summary["qdq"], target)
        if runtime:
            _print_runtime(out, summary["runtime"])
        return

    from compress.analysis import layer_table, model_summary
    from compress.models.preprocess import describe_preprocessing
    from compress.pipeline import load_input

    net = load_input(
        model,
        num_classes=num_classes,
        input_shape=parse_shape(input_shape),
        trust_code=trust_code,
        **loading.kwargs(),
    )
    shape = parse_shape(input_shape) or net.input_shape
    summary = model_summary(net.module, shape)
    summary.update(
        {
            "model": model,
            "source": net.arch,
            "task": net.task,
            "history": [f"{s['technique']}:{s['method']}" for s in net.history],
            "preprocessing": net.preprocessing,
        }
    )
    path = Path(model)
    if path.exists():
        file = resolve_model_path(model, "torch")
        summary["file_bytes"] = file.stat().st_size
    if sparsity:
        return _sparsity(out, net.module, pattern, as_json, name=model)
    if prunable:
        from compress.prune.report import prunable_report

        report = prunable_report(net, shape)
        if as_json:
            typer.echo(json.dumps(report, indent=2, default=str))
        else:
            _print_prunable(out, report, model)
        return
    rows = layer_table(net.module, shape) if layers else []
    if as_json:
        typer.echo(json.dumps({**summary, "layers": rows}, indent=2, default=str))
        return
    t = Table(title=model, show_header=False)
    t.add_row("architecture", f"{net.arch.get('source')}:{net.arch.get('name')} {net.arch.get('kwargs') or ''}")
    t.add_row("input", str(list(shape)))
    t.add_row("params", f"{summary['params']:,} ({fmt_count(summary['params'])})")
    t.add_row("MACs", f"{summary['macs']:,} ({fmt_count(summary['macs'])})")
    t.add_row("fp32 size", fmt_bytes(summary["fp32_bytes"]))
    if "file_bytes" in summary:
        t.add_row("file size", fmt_bytes(summary["file_bytes"]))
    if summary["history"]:
        t.add_row("history", " → ".join(summary["history"]))
    t.add_row("preprocessing", describe_preprocessing(net.preprocessing))
    out.print(t)
    if rows:
        lt = Table(title="layers")
        for col in ("name", "type", "output", "params", "MACs"):
            lt.add_column(col, justify="right" if col in ("params", "MACs") else "left")
        for r in rows:
            lt.add_row(r["name"], r["type"], str(r["output"] or ""), f"{r['params']:,}", f"{r['macs']:,}")
        out.print(lt)


def _runtime_report(runtime: str, path: Path, shape: tuple[int, ...] | None) -> dict:
    from compress.errors import RecipeError

    if runtime != "onnxruntime":
        raise RecipeError(f"unknown --runtime '{runtime}'; available: onnxruntime")
    from compress.backends.onnxruntime import runtime_report

    report = runtime_report(path, input_shape=shape)
    report.pop("node_times_us", None)
    return report


def _print_runtime(out, report: dict) -> None:
    from rich.table import Table

    out.print(f"{report['runtime']}, {report['threads']} threads, input {report['input_shape']}: {report['summary']}")
    t = Table(title="time share by op type (ORT profiler)")
    t.add_column("op")
    t.add_column("kind")
    t.add_column("nodes", justify="right")
    t.add_column("time", justify="right")
    integer = set(report["integer_ops"])
    for op, share in report["time_share"].items():
        kind = "integer" if op in integer else "conversion" if op in report["conversion_ops"] else "float"
        t.add_row(op, kind, str(report["ops"].get(op, "")), f"{share:.1%}")
    out.print(t)
    for name in report["float_compute_nodes"][:20]:
        out.print(f"  [yellow]float[/yellow] {name}")


def _print_qdq(out, report: dict, target: str) -> None:
    from rich.table import Table

    t = Table(title=f"Q/DQ ({target} rules)", show_header=False)
    for key, value in report.items():
        if key in ("violations", "warnings"):
            continue
        t.add_row(key, str(value))
    out.print(t)
    verdict = "[green]valid[/green]" if report.get("valid") else "[red]not valid[/red]"
    out.print(f"{verdict} for {target}")
    for v in report.get("violations", []):
        out.print(f"  [red]violation[/red] {v}")
    for w in report.get("warnings", []):
        out.print(f"  [yellow]warning[/yellow] {w}")


def _print_prunable(out, report: dict, model: str) -> None:
    from rich.table import Table

    t = Table(title=f"{model}: prunable channel groups")
    for col in ("group", "layers", "channels", "prunable", "status", "reasons"):
        t.add_column(col)
    for r in report["rows"]:
        t.add_row(
            str(r.get("name")),
            str(r.get("layers")),
            str(r.get("channels")),
            f"{r.get('prunable_units')}/{r.get('units')}",
            str(r.get("status")),
            "; ".join(r.get("reasons") or []),
        )
    out.print(t)
    out.print(report.get("summary"))
    for note in report.get("notes") or []:
        out.print(f"  note: {note}")
    if report.get("opaque_modules"):
        out.print(f"  kept whole (untraceable): {', '.join(report['opaque_modules'])}")


def _sparsity(out, source, pattern: str, as_json: bool, name: str | None = None) -> None:
    from rich.table import Table

    from compress.errors import RecipeError
    from compress.sparsity import pattern_report
    from compress.sparsity.check import SPARSE_KERNEL_NOTE

    try:
        report = pattern_report(source, pattern)
    except ValueError as e:
        raise RecipeError(str(e)) from None
    report["sparse_kernels"] = SPARSE_KERNEL_NOTE
    if as_json:
        typer.echo(json.dumps(report, indent=2, default=str))
        return
    t = Table(title=f"{name or source}: {report['pattern']} sparsity by layer")
    for col in ("layer", "op", "weight", "pattern", "sparse kernels", "why not"):
        t.add_column(col)
    for r in report["layers"]:
        holds = "n/a" if r["holds"] is None else "holds" if r["holds"] else "no"
        kernel = "eligible" if r["eligible"] else "no"
        t.add_row(r["name"], r["op"], str(r["shape"]), holds, kernel, r["kernel_reason"] or r["reason"])
    out.print(t)
    out.print(
        f"{report['sparse_layers']} of {report['eligible_layers']} layers that can carry {report['pattern']} hold it; "
        f"{report['kernel_eligible']} eligible for sparse kernels"
    )
    out.print(report["sparse_kernels"])
