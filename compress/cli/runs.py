"""Helpers shared by the subcommands that create run directories."""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

from compress.errors import RecipeError


def load_yaml_params(path: Path | None) -> dict[str, Any]:
    """A YAML mapping of config fields (for --config), validated later by from_dict."""
    if path is None:
        return {}
    import yaml

    if not path.is_file():
        raise RecipeError(f"config file not found: {path}")
    try:
        data = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as e:
        raise RecipeError(f"{path}: not valid YAML ({e})") from None
    if not isinstance(data, dict):
        raise RecipeError(f"{path}: expected a mapping of settings")
    return data


def finish(run, console, summary: dict[str, Any] | None = None) -> Path:
    """Drop the run's scratch folder, commit it and print where it went."""
    shutil.rmtree(run.work / "work", ignore_errors=True)
    path = run.commit()
    parts = [
        f"{k} {v:.4f}" if isinstance(v, float) else f"{k} {v}" for k, v in (summary or {}).items() if v is not None
    ]
    console.print(f"[green]done[/green] {path}" + (f"  ({', '.join(parts)})" if parts else ""))
    return path
