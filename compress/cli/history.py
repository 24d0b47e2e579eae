"""`compress history`: a SQLite store of bench results, with a trend table and plot per machine."""

from __future__ import annotations

from pathlib import Path

import typer

from compress.cli.common import handle_errors

DB = typer.Option(Path(".compress/history.sqlite"), "--db", help="History database (created if missing).")

app = typer.Typer(
    help="Store bench results and show their trend (comparisons only within one machine).",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)


@app.command("add")
@handle_errors
def add(
    results: list[Path] = typer.Argument(..., help="`compress bench --json` result files."),
    db: Path = DB,
    model: str | None = typer.Option(None, "--model", help="Name to file the results under."),
    commit: str | None = typer.Option(None, "--commit", help="Commit (default: git rev-parse HEAD)."),
    this_machine: bool = typer.Option(
        False, "--this-machine", help="File a result that records no machine under this machine."
    ),
) -> None:
    """Add bench results to the history."""
    from compress.check.gate import load_bench_json
    from compress.check.history import add as add_result

    for path in results:
        row = add_result(db, load_bench_json(path), model=model, commit=commit, assume_this_machine=this_machine)
        typer.echo(f"added {path} as #{row} to {db}", err=True)


@app.command("show")
@handle_errors
def show(
    db: Path = DB,
    model: str | None = typer.Option(None, "--model", help="Only this model."),
    this_machine: bool = typer.Option(False, "--this-machine", help="Only results from this machine."),
    figure: str = typer.Option(
        "p50_ms",
        "--figure",
        help="p50_ms, mean_ms, p90_ms, p99_ms, cov, throughput, metric_value, params, bytes.",
    ),
    last: int | None = typer.Option(None, "--last", help="Only the last N results."),
    plot: Path | None = typer.Option(None, "--plot", help="Write a PNG trend plot."),
    force: bool = typer.Option(False, "--force", help="Replace an existing --plot file."),
) -> None:
    """Show the trend of a figure; changes are computed only between results of the same machine."""
    from rich.table import Table

    from compress.check.history import plot as plot_trend
    from compress.check.history import query, trend
    from compress.cli.common import console
    from compress.env import fingerprint
    from compress.errors import CompressError

    if not db.is_file():
        raise CompressError(f"history database not found: {db}")
    from compress.cli.common import check_output_file

    check_output_file(plot, force=force, inputs=(db,))
    rows = query(db, model=model, fingerprint=fingerprint() if this_machine else None, limit=last)
    lines = trend(rows, figure)
    table = Table(title=f"{db} · {figure}", title_justify="left")
    for col in ("id", "time", "model", "commit", "machine", figure, "change"):
        table.add_column(col, overflow="fold")
    for r in lines:
        value = r[figure]
        table.add_row(
            str(r["id"]),
            r["timestamp"],
            r["model"],
            r["commit"],
            r["machine"],
            "–" if value is None else f"{value:.4g}",
            "–" if r["change"] is None else f"{r['change']:+.1%}",
        )
    console().print(table)
    if plot is not None:
        plot_trend(rows, plot, figure)
        typer.echo(f"wrote {plot}", err=True)


@app.command("compare")
@handle_errors
def compare(
    baseline: int = typer.Argument(..., help="Row id of the baseline result."),
    candidate: int = typer.Argument(..., help="Row id of the candidate result."),
    db: Path = DB,
    max_slowdown: str = typer.Option("10%", "--max-slowdown", help="Allowed slowdown."),
) -> None:
    """Check two stored results against each other (refused unless measured on the same machine)."""
    from compress.check.gate import config_from_options
    from compress.check.history import compare as compare_rows
    from compress.cli.check import _table, _threshold
    from compress.cli.common import console
    from compress.errors import CompressError

    if not db.is_file():
        raise CompressError(f"history database not found: {db}")
    cfg = config_from_options({"max_slowdown": _threshold(max_slowdown, "--max-slowdown", percent=True)})
    result = compare_rows(db, baseline, candidate, cfg)
    console().print(_table(result))
    raise typer.Exit(result.exit_code)
