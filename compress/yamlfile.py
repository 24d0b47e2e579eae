"""YAML files read as plain data, within limits, so a hostile file fails fast with one line.

`yaml.safe_load` builds no Python objects beyond plain data, but it shares aliased nodes, so a small
"billion laughs" file is a huge structure to anything that walks it. `read_yaml` counts every node
as it would be expanded (aliases included) against a budget, and caps the file size and nesting depth.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from compress.errors import RecipeError

MAX_BYTES = 1 << 20
MAX_NODES = 100_000
MAX_DEPTH = 32


def read_yaml(path: Path, what: str = "file") -> Any:
    """The plain data in YAML file `path`; a RecipeError naming the file for anything wrong."""
    import yaml

    path = Path(path)
    if not path.is_file():
        raise RecipeError(f"{what} not found: {path}")
    if path.stat().st_size > MAX_BYTES:
        raise RecipeError(f"{path}: larger than {MAX_BYTES >> 20} MiB; not a {what} compress reads")
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError:
        raise RecipeError(f"{path}: not a text file") from None
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        problem = str(getattr(e, "problem", None) or "parse error")[:120]
        raise RecipeError(f"{path}: not valid YAML{where} ({problem})") from None
    except RecursionError:
        raise RecipeError(f"{path}: nested deeper than compress reads") from None
    check_size(data, str(path))
    return data


def check_size(data: Any, where: str) -> None:
    """Refuse data with more than MAX_NODES nodes once aliases are expanded, or deeper than MAX_DEPTH."""
    count = 0
    stack: list[tuple[Any, int]] = [(data, 0)]
    while stack:
        node, depth = stack.pop()
        count += 1
        if count > MAX_NODES:
            raise RecipeError(f"{where}: more than {MAX_NODES:,} values (aliases expanded); not a file compress reads")
        if depth > MAX_DEPTH:
            raise RecipeError(f"{where}: nested more than {MAX_DEPTH} levels deep")
        if isinstance(node, dict):
            stack.extend((v, depth + 1) for v in node.values())
            stack.extend((k, depth + 1) for k in node)
        elif isinstance(node, list):
            stack.extend((v, depth + 1) for v in node)
