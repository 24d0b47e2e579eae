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
    seeds: int | None = typer.Option(
        None,
        "--seeds",
        help="Run the whole recipe at N seeds (its seed, +1, ...) into DIR/seed-K and summarise mean ± spread "
        "per variant in DIR/summary.md (default: the recipe's `seeds`, 1).",
    ),
) -> None:
    """Run every step of a recipe into a run directory (default runs/<recipe name>) and report."""
    from compress.cli.common import console
    from compress.errors import RecipeError
    from compress.recipe import MAX_SEEDS, load_recipe

    r = load_recipe(recipe)
    n = r.seeds if seeds is None else seeds
    if not 1 <= n <= MAX_SEEDS:
        raise RecipeError(f"--seeds must be between 1 and {MAX_SEEDS}, got {n}")
    con = console()
    if check:  # once: the seeds change only seed values, which every seed passes
        from compress.bench import check_machine

        check_machine(r.bench, where=f"{recipe}: bench")
        _build_inputs(r, trust_code)
        runs = f", {n} seeds from {r.seed}" if n > 1 else ""
        con.print(f"[green]valid[/green] {recipe}: {len(r.steps)} steps ({', '.join(s.name for s in r.steps)}){runs}")
        return
    if n > 1:
        _run_seeds(r, recipe, out, n, force=force, resume=resume, trust_code=trust_code)
        return
    from compress.pipeline import run_recipe
    from compress.report import rich_table

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


def _build_inputs(recipe, trust_code: bool) -> None:
    """--check also builds every fresh model a step names (with its model_kwargs) on the step's data,
    so a bad architecture argument fails here rather than minutes into a run."""
    from compress.config import to_dict
    from compress.data import load_data
    from compress.pipeline import load_input

    datasets: dict[str, object] = {}
    names = {s.name for s in recipe.steps}
    for step in recipe.steps:
        cfg = step.data or recipe.data
        key = repr(to_dict(cfg))
        if key not in datasets:
            datasets[key] = load_data(cfg)
        if step.model and step.model not in names:  # with its pretrained weights: a bad file fails here
            load_input(
                step.model,
                datasets[key],
                kwargs=step.model_kwargs,
                trust_code=trust_code,
                weights=step.weights,
                weights_map=step.weights_map,
                preprocessing=step.preprocessing or None,
            )
        if step.teacher and step.teacher not in names:
            load_input(step.teacher, datasets[key], trust_code=trust_code)


def _run_seeds(r, recipe: Path, out: Path | None, n: int, *, force: bool, resume: bool, trust_code: bool) -> None:
    """`--seeds N`: every seed a whole run in DIR/seed-K, then the summary table."""
    import time

    from compress.cli.common import check_output_dir, console
    from compress.pipeline import run_recipe_seeds
    from compress.report.seeds import rich_summary

    con = console()
    target = out or Path("runs") / f"{r.name}-seeds"
    check_output_dir(target, (recipe,))
    started = time.perf_counter()

    def on_seed(seed: int, path: Path, status: str) -> None:
        what = "kept (finished before)" if status == "kept" else "done"
        con.print(f"seed {seed}: {what} {path}  [{time.perf_counter() - started:.0f} s]")

    summary = run_recipe_seeds(
        r,
        target,
        seeds=n,
        force=force,
        resume=resume,
        trust_code=trust_code,
        recipe_path=str(recipe),
        on_seed=on_seed,
    )
    con.print(rich_summary(summary))
    con.print(f"[green]done[/green] {target}  (summary: {target / 'summary.md'}, {target / 'summary.json'})")
