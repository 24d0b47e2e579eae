"""`compress methods`: every technique's methods and their config fields, for recipe authors."""

from __future__ import annotations

import dataclasses

import typer

from compress.cli.common import handle_errors


@handle_errors
def methods(
    technique: str | None = typer.Argument(None, help="train, distill, prune or quantize (default: all)."),
) -> None:
    """List methods with their config fields and defaults (the `params:` of a recipe step)."""
    from rich.table import Table

    from compress.cli.common import console
    from compress.errors import RecipeError
    from compress.methods import TECHNIQUES, get_method, method_names

    if technique is not None and technique not in TECHNIQUES:
        raise RecipeError(f"unknown technique '{technique}'; available: {', '.join(TECHNIQUES)}")
    out = console()
    for tech in [technique] if technique else TECHNIQUES:
        for name in method_names(tech):
            method = get_method(tech, name)
            doc = (method.fn.__doc__ or method.config.__doc__ or "").strip().splitlines()
            t = Table(title=f"{tech} · {name}", caption=doc[0] if doc else None, title_justify="left")
            t.add_column("param")
            t.add_column("default")
            for f in dataclasses.fields(method.config):
                if f.default is not dataclasses.MISSING:
                    default = repr(f.default)
                elif f.default_factory is not dataclasses.MISSING:
                    default = repr(f.default_factory())
                else:
                    default = "(required)"
                t.add_row(f.name, default)
            out.print(t)
