"""`compress compare A B`: the same inputs through two artifacts or backends; PASS/FAIL on output tolerance.

Exit codes: 0 pass, 1 fail, 2 usage or user error.
"""

from __future__ import annotations

from pathlib import Path

import typer

from compress.cli import options as opt
from compress.cli.common import data_config, handle_errors, parse_shape
from compress.errors import CompressError


@handle_errors
def compare(
    a: str = typer.Argument(..., help="Reference: an .onnx/.pt/engine file or a run directory."),
    b: str = typer.Argument(..., help="Candidate: an .onnx/.pt/engine file or a run directory."),
    backends: str = typer.Option(
        "onnxruntime,onnxruntime", "--backends", help="Backends of A and B (one name: both), e.g. onnxruntime,tensorrt."
    ),
    device: str = typer.Option("cpu", "--device", help="cpu or cuda, for onnxruntime and torch."),
    atol: float = typer.Option(1e-3, "--atol", help="An element fails when off by more than atol..."),
    rtol: float = typer.Option(1e-3, "--rtol", help="...and by more than rtol relative to A."),
    min_top1: float | None = typer.Option(
        None, "--min-top1-agreement", help="Also fail when classifiers agree on fewer top-1 than this share."
    ),
    data: str | None = opt.DataOptional,
    task: str | None = opt.Task,
    image_size: str | None = opt.ImageSize,
    channels: int | None = opt.Channels,
    limit: int | None = opt.Limit,
    samples: int = typer.Option(32, "--samples", help="Random inputs without --data."),
    batch_size: int = typer.Option(8, "--batch-size", "-b", help="Inputs per call."),
    input_shape: str | None = opt.InputShape,
    seed: int = typer.Option(0, "--seed", help="Seed of the random inputs."),
    via: str = typer.Option(
        "compress", "--via", help="compress (any backend) or polygraphy (its Comparator: onnxruntime, tensorrt)."
    ),
    json_out: Path | None = typer.Option(None, "--json", help="Write every figure to this JSON file."),
    force: bool = opt.Force,
) -> None:
    """Run the same inputs (random, or the data's validation split) through A and B and compare every
    output: abs/rel error (max, mean, median, p99), top-1 agreement for classifiers, and PASS when no
    element is off by more than --atol and --rtol at once (Polygraphy's rule). Exit 0 pass, 1 fail."""
    from compress.cli.common import check_output_file, console
    from compress.compare import CompareConfig, compare_polygraphy
    from compress.compare import compare as run_compare
    from compress.data import load_data
    from compress.env import environment
    from compress.io import atomic_write_json

    names = [n.strip() for n in backends.split(",") if n.strip()]
    if len(names) == 1:
        names *= 2
    if len(names) != 2:
        raise CompressError(f"--backends takes one or two names, got '{backends}'")
    if via not in ("compress", "polygraphy"):
        raise CompressError(f"unknown --via '{via}'; available: compress, polygraphy")
    check_output_file(json_out, force=force, inputs=(a, b))
    bundle = None
    if data is not None:
        bundle = load_data(data_config(data, task=task, image_size=image_size, channels=channels, limit=limit))
    cfg = CompareConfig(
        backends=(names[0], names[1]),
        device=device,
        atol=atol,
        rtol=rtol,
        batch_size=batch_size,
        samples=samples,
        input_shape=parse_shape(input_shape),
        seed=seed,
        min_top1_agreement=min_top1,
    )
    result = (compare_polygraphy if via == "polygraphy" else run_compare)(a, b, cfg, data=bundle)
    result["data"] = data
    result["environment"] = environment()
    console().print(render(result))
    if json_out is not None:
        atomic_write_json(json_out, result)
        typer.echo(f"wrote {json_out}", err=True)
    raise typer.Exit(0 if result["passed"] else 1)


def render(result: dict):
    from rich.table import Table

    tol = result["tolerance"]
    title = (
        f"A {Path(result['a']['path']).name} ({result['a']['backend']}) vs "
        f"B {Path(result['b']['path']).name} ({result['b']['backend']}) · {result['inputs']['samples']} "
        f"{result['inputs']['source']} inputs · atol {tol['atol']:g} rtol {tol['rtol']:g}"
    )
    table = Table(title=title)
    for col in ("output", "shape", "max |Δ|", "mean |Δ|", "p99 |Δ|", "max rel", "median rel", "top-1 agr.", ""):
        table.add_column(col)
    for name, o in result["outputs"].items():
        table.add_row(
            name,
            "x".join(str(d) for d in o["shape"]),
            f"{o['abs']['max']:.3e}",
            f"{o['abs']['mean']:.3e}",
            f"{o['abs']['p99']:.3e}",
            f"{o['rel']['max']:.3e}",
            f"{o['rel']['median']:.3e}",
            f"{o['top1_agreement']:.4f}" if "top1_agreement" in o else "-",
            "[green]PASS[/green]" if o["passed"] else f"[red]FAIL[/red] ({o['failed_elements']} elements)",
        )
    table.caption = "PASS" if result["passed"] else "FAIL"
    return table
