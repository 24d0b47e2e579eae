"""`compress check`: the CI regression gate between a baseline and a candidate model.

Exit codes: 0 pass, 1 fail, 3 inconclusive (noise too large to decide), 2 usage or user error.
"""

from __future__ import annotations

from pathlib import Path

import typer

from compress.cli import options as opt
from compress.cli.common import data_config, handle_errors, parse_fraction
from compress.errors import CompressError

_STYLE = {"pass": "green", "fail": "bold red", "inconclusive": "yellow", "skipped": "dim"}


@handle_errors
def check(
    baseline: str | None = typer.Option(None, "--baseline", "-a", help="Baseline .onnx file or run directory."),
    candidate: str | None = typer.Option(None, "--candidate", "-b", help="Candidate .onnx file or run directory."),
    baseline_json: Path | None = typer.Option(None, "--baseline-json", help="Saved `compress bench --json` result."),
    candidate_json: Path | None = typer.Option(None, "--candidate-json", help="Saved result to compare with it."),
    data: str | None = opt.DataOptional,
    max_slowdown: str = typer.Option("10%", "--max-slowdown", help="Allowed slowdown ('10%' or 0.1); 'off' to skip."),
    max_accuracy_drop: str = typer.Option(
        "0.5", "--max-accuracy-drop", help="Allowed drop in accuracy points (PSNR: dB); 'off' to skip."
    ),
    max_params_increase: str = typer.Option("10%", "--max-params-increase", help="Allowed parameter increase; 'off'."),
    max_macs_increase: str = typer.Option("10%", "--max-macs-increase", help="Allowed MACs increase; 'off'."),
    max_size_increase: str = typer.Option("10%", "--max-size-increase", help="Allowed file-size increase; 'off'."),
    expect_int8: bool = typer.Option(False, "--expect-int8", help="The candidate must keep its INT8 (Q/DQ) layers."),
    expect_sparsity: str | None = typer.Option(None, "--expect-sparsity", help="N:M pattern to keep, e.g. 2:4."),
    rounds: int = typer.Option(20, "--rounds", help="Interleaved A/B rounds (more: narrower interval)."),
    iters: int = typer.Option(20, "--iters", help="Timed calls per model per round."),
    confidence: float = typer.Option(0.95, "--confidence", help="Confidence level of the slowdown interval."),
    unpaired: bool = typer.Option(False, "--unpaired", help="Decide on the ratio of medians (Mann-Whitney U)."),
    backend: str = typer.Option("onnxruntime", "--backend", help="Runtime backend."),
    device: str = typer.Option("cpu", "--device", help="cpu or cuda."),
    threads: int = typer.Option(0, "--threads", help="Intra-op threads (0: physical cores)."),
    batch_size: int = typer.Option(1, "--batch-size", help="Batch size of the latency input."),
    seed: int = typer.Option(0, "--seed", help="Seed of the latency input and the bootstrap."),
    task: str | None = opt.Task,
    image_size: str | None = opt.ImageSize,
    channels: int | None = opt.Channels,
    limit: int | None = opt.Limit,
    junit: Path | None = typer.Option(None, "--junit", help="Write JUnit XML (one testcase per gate)."),
    summary: Path | None = typer.Option(None, "--summary", help="Write a Markdown summary (CI job summary)."),
    json_out: Path | None = typer.Option(None, "--json", help="Write every figure to this JSON file."),
    force: bool = typer.Option(False, "--force", help="Replace existing --junit/--summary/--json files."),
    reference: str | None = typer.Option(
        None, "--reference", help="Fidelity reference (.onnx, run directory or PyTorch spec; default: the baseline)."
    ),
    min_top1_agreement: str | None = typer.Option(
        None, "--min-top1-agreement", help="Gate: the candidate's top-1 must match the reference's ('99%' or 0.99)."
    ),
    weights: Path | None = typer.Option(None, "--weights", help="Weights for a --reference architecture spec."),
    output_atol: float | None = typer.Option(
        None, "--output-atol", help="Gate: candidate outputs within this of the baseline's (as compress compare)."
    ),
    output_rtol: float = typer.Option(1e-3, "--output-rtol", help="Relative tolerance of the output gate."),
) -> None:
    """Gate a candidate model against a baseline: interleaved A/B latency with a confidence interval,
    plus accuracy, params, MACs, size and structure; with --reference or --min-top1-agreement (and on data
    without labels), the candidate's fidelity to the reference (default: the baseline).
    Exit 0 pass, 1 fail, 3 inconclusive, 2 usage error."""
    from compress.check.gate import compare_bench_json, config_from_options, run_check
    from compress.check.report import write_outputs
    from compress.cli.common import console

    models = baseline is not None or candidate is not None
    saved = baseline_json is not None or candidate_json is not None
    if models == saved:
        raise CompressError("give either --baseline and --candidate, or --baseline-json and --candidate-json")
    cfg = config_from_options(
        {
            "max_slowdown": _threshold(max_slowdown, "--max-slowdown", percent=True),
            "max_accuracy_drop": _threshold(max_accuracy_drop, "--max-accuracy-drop", percent=False),
            "max_params_increase": _threshold(max_params_increase, "--max-params-increase", percent=True),
            "max_macs_increase": _threshold(max_macs_increase, "--max-macs-increase", percent=True),
            "max_size_increase": _threshold(max_size_increase, "--max-size-increase", percent=True),
            "expect_int8": expect_int8,
            "expect_sparsity": expect_sparsity,
            "rounds": rounds,
            "iters": iters,
            "confidence": confidence,
            "paired": not unpaired,
            "backend": backend,
            "device": device,
            "threads": threads,
            "batch_size": batch_size,
            "seed": seed,
            "min_top1_agreement": parse_fraction(min_top1_agreement, "--min-top1-agreement"),
            "output_atol": output_atol,
            "output_rtol": output_rtol,
        }
    )
    import dataclasses

    off = {  # 'off' is None, which config_from_options reads as "use the default": set it after
        k: None
        for k, text in (
            ("max_slowdown", max_slowdown),
            ("max_accuracy_drop", max_accuracy_drop),
            ("max_params_increase", max_params_increase),
            ("max_macs_increase", max_macs_increase),
            ("max_size_increase", max_size_increase),
        )
        if text.strip().lower() in ("off", "none", "-")
    }
    cfg = dataclasses.replace(cfg, **off)
    from compress.cli.common import check_output_file

    for out in (junit, summary, json_out):
        check_output_file(out, force=force, inputs=(baseline, candidate, baseline_json, candidate_json))
    if saved:
        if baseline_json is None or candidate_json is None:
            raise CompressError("--baseline-json needs --candidate-json (and the other way round)")
        if reference is not None:
            raise CompressError("--reference needs --baseline/--candidate models; saved results carry their fidelity")
        result = compare_bench_json(baseline_json, candidate_json, cfg)
    else:
        if baseline is None or candidate is None:
            raise CompressError("--baseline needs --candidate (and the other way round)")
        from compress.models.sources import resolve_model_path

        paths = [resolve_model_path(p, "onnx") for p in (baseline, candidate)]
        for out in (junit, summary, json_out):
            if out is not None and any(out.resolve() == p.resolve() for p in paths):
                raise CompressError(f"{out} would overwrite a model")
        bundle = None
        if data is not None:
            from compress.data import load_data

            bundle = load_data(data_config(data, task=task, image_size=image_size, channels=channels, limit=limit))
            from compress.data import prepare_for_model
            from compress.models.preprocess import preprocessing_of_file

            preps = [preprocessing_of_file(p) for p in paths]
            if preps[0] != preps[1]:
                raise CompressError(
                    "the baseline and the candidate expect differently prepared inputs (see their "
                    "compress.preprocessing metadata, e.g. one has it baked in); export both the same way"
                )
            bundle = prepare_for_model(bundle, preps[0])
        ref = None
        if weights is not None and reference is None:
            raise CompressError("--weights goes with --reference (the PyTorch model to compare against)")
        if reference is not None:
            if bundle is None:
                raise CompressError("--reference needs --data: both models run on its validation split")
            from compress.bench.fidelity import load_reference

            ref = load_reference(reference, bundle, backend=backend, device=device, threads=threads, weights=weights)
        result = run_check(paths[0], paths[1], cfg, data=bundle, reference=ref)
    console().print(_table(result))
    for path in write_outputs(result, json_path=json_out, junit=junit, summary=summary):
        typer.echo(f"wrote {path}", err=True)
    if result.latency is not None and result.latency.advice:
        typer.echo(f"note: {result.latency.advice}", err=True)
    raise typer.Exit(result.exit_code)


def _threshold(text: str, what: str, *, percent: bool) -> float | None:
    if text.strip().lower() in ("off", "none", "-"):
        return None
    if percent:
        return parse_fraction(text, what)
    try:
        value = float(text)
    except ValueError:
        raise CompressError(f"{what}: expected a number or 'off', got '{text[:40]}'") from None
    if value != value or value in (float("inf"), float("-inf")):
        raise CompressError(f"{what}: expected a finite number or 'off', got '{text[:40]}'")
    return value


def _table(result):
    from rich.table import Table

    title = f"compress check: [{_STYLE[result.status]}]{result.status.upper()}[/]  ({result.seconds:.1f} s)"
    table = Table(title=title, title_justify="left")
    for col in ("gate", "result", "baseline", "candidate", "change", "limit", "detail"):
        table.add_column(col, overflow="fold")
    from compress.check.report import _cell, _change, _limit

    for g in result.gates:
        table.add_row(
            g.name,
            f"[{_STYLE[g.status]}]{g.status}[/]",
            _cell(g.baseline, g.unit),
            _cell(g.candidate, g.unit),
            _change(g),
            _limit(g),
            g.message,
        )
    return table
