"""What every subcommand shares: error handling, option parsing, consoles."""

from __future__ import annotations

import functools
import os
import sys
from collections.abc import Callable
from typing import Any, TypeVar

import typer

from compress.errors import CompressError

F = TypeVar("F", bound=Callable[..., Any])

EXIT_USER_ERROR = 2
EXIT_INTERRUPTED = 130


def handle_errors(fn: F) -> F:
    """Turn user errors into one line on stderr and exit code 2, never a traceback."""

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except CompressError as e:
            typer.echo(f"error: {e}", err=True)
            raise typer.Exit(EXIT_USER_ERROR) from None
        except KeyboardInterrupt:
            typer.echo("interrupted; an interrupted run can be continued with --resume", err=True)
            raise typer.Exit(EXIT_INTERRUPTED) from None

    return wrapper  # type: ignore[return-value]


def console(stderr: bool = False):
    from rich.console import Console

    c = Console(stderr=stderr)
    if not c.is_terminal and not os.environ.get("COLUMNS"):
        c.width = 140  # logs and CI: wide enough for the report table
    return c


def parse_fraction(text: str | None, what: str) -> float | None:
    """'10%' -> 0.10, '0.1' -> 0.1."""
    if text is None:
        return None
    t = text.strip()
    try:
        return float(t[:-1]) / 100.0 if t.endswith("%") else float(t)
    except ValueError:
        raise CompressError(f"{what}: expected a number or a percentage, got '{text}'") from None


def parse_shape(text: str | None) -> tuple[int, ...] | None:
    """'3,32,32' or '3x32x32' -> (3, 32, 32)."""
    if not text:
        return None
    try:
        return tuple(int(v) for v in text.replace("x", ",").split(","))
    except ValueError:
        raise CompressError(f"--input-shape: expected C,H,W, got '{text}'") from None


def data_config(
    name: str,
    *,
    task: str | None = None,
    image_size: int | None = None,
    channels: int | None = None,
    limit: int | None = None,
    calib_size: int | None = None,
    seed: int | None = None,
):
    from compress.config import from_dict

    raw: dict[str, Any] = {"name": name}
    for key, value in (
        ("task", task),
        ("image_size", image_size),
        ("channels", channels),
        ("limit", limit),
        ("calib_size", calib_size),
        ("seed", seed),
    ):
        if value is not None:
            raw[key] = value
    from compress.data import DataConfig

    return from_dict(DataConfig, raw, where="--data options")


def print_json_path(path: Any) -> None:
    typer.echo(f"wrote {path}", err=True)


def flush() -> None:
    sys.stdout.flush()
