"""`compress report`: a table, report.json, report.md and a Pareto plot from run directories."""

from __future__ import annotations

from pathlib import Path

import typer

from compress.cli.common import handle_errors


@handle_errors
def report(
    runs: list[Path] = typer.Argument(..., help="Run directories (a recipe run expands into its variants)."),
    out: Path | None = typer.Option(None, "--out", "-o", help="Report folder (default: FIRST_RUN/report)."),
    baseline: str | None = typer.Option(None, "--baseline", help="Variant to compare against (default: first)."),
    title: str = typer.Option("compress report", "--title"),
) -> None:
    """Compare variants: accuracy, latency percentiles, speedup, size, params, MACs."""
    from compress.cli.common import console
    from compress.report import build_report, rich_table

    target = out or runs[0] / "report"
    rep = build_report(runs, target, baseline=baseline, title=title)
    con = console()
    con.print(rich_table(rep))
    con.print(f"wrote {target / 'report.json'}, {target / 'report.md'}, {target / 'pareto.png'}")
