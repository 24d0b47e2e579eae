"""`compress run`: a whole recipe — train, compress, export, bench, report."""

from __future__ import annotations

from pathlib import Path

import typer

from compress.cli import options as opt
from compress.cli.common import handle_errors


@handle_errors
def run(
    recipe: Path = typer.Argument(..., help="Recipe YAML (see recipes/)."),
    out: Path | None = opt.OutOptional,
    force: bool = opt.Force,
    resume: bool = opt.Resume,
    check: bool = typer.Option(False, "--check", help="Only validate the recipe."),
    trust_code: bool = opt.TrustCode,
) -> None:
    """Run every step of a recipe into a run directory (default runs/<recipe name>) and report."""
    from compress.cli.common import console
    from compress.recipe import load_recipe

    r = load_recipe(recipe)
    con = console()
    if check:
        con.print(f"[green]valid[/green] {recipe}: {len(r.steps)} steps ({', '.join(s.name for s in r.steps)})")
        return
    from compress.pipeline import run_recipe
    from compress.report import rich_table
    from compress.runs import read_manifest

    target = out or Path("runs") / r.name
    from compress.cli.common import check_output_dir

    check_output_dir(target, (recipe,))
    path = run_recipe(r, target, force=force, resume=resume, trust_code=trust_code, recipe_path=str(recipe))
    import json

    report = json.loads((path / "report" / "report.json").read_text())
    con.print(rich_table(report))
    con.print(
        f"[green]done[/green] {path}  (report: {path / 'report' / 'report.md'}, plot: {path / 'report' / 'pareto.png'})"
    )
    _ = read_manifest
