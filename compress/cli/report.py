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
    force: bool = typer.Option(False, "--force", help="Write into an existing folder that is not a report."),
) -> None:
    """Compare variants: accuracy, latency percentiles, speedup, size, params, MACs."""
    from compress.cli.common import check_output_dir, console
    from compress.errors import CompressError
    from compress.report import build_report, rich_table

    target = out or runs[0] / "report"
    check_output_dir(target, tuple(runs), inside_ok=True)
    if target.exists() and not target.is_dir():
        raise CompressError(f"--out {target} is a file; give a folder")
    ours = (target / "report.json").is_file() or not target.exists() or not any(target.iterdir())
    if not ours and not force:
        raise CompressError(f"{target} exists and is not a report folder; pass --force to write into it")
    rep = build_report(runs, target, baseline=baseline, title=title)
    con = console()
    con.print(rich_table(rep))
    con.print(f"wrote {target / 'report.json'}, {target / 'report.md'}, {target / 'pareto.png'}")
