"""What every subcommand shares: error handling, option parsing, consoles."""

from __future__ import annotations

import functools
import os
from collections.abc import Callable
from pathlib import Path
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
        shape = tuple(int(v) for v in text.replace("x", ",").split(","))
    except ValueError:
        raise CompressError(f"--input-shape: expected C,H,W, got '{text}'") from None
    if len(shape) != 3 or min(shape) < 1:
        raise CompressError(f"--input-shape: expected three positive sizes C,H,W, got '{text}'")
    return shape


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


def check_output_file(path: Path | None, *, force: bool, inputs: tuple[Any, ...] = ()) -> None:
    """Refuse an output file that is a directory, is one of the inputs, or exists (without --force)."""
    if path is None:
        return
    if path.is_dir():
        raise CompressError(f"{path} is a directory; give a file path")
    for i in inputs:
        if i is not None and Path(i).exists() and path.resolve() == Path(i).resolve():
            raise CompressError(f"{path} is an input of this command; choose another output")
    if path.exists() and not force:
        raise CompressError(f"{path} exists; pass --force to replace it")


def check_output_dir(out: Path, inputs: tuple[Any, ...] = ()) -> None:
    """Refuse an output directory that is, or contains, one of the inputs (--force would delete it)."""
    target = out.resolve()
    for i in inputs:
        if i is None or not Path(i).exists():
            continue
        src = Path(i).resolve()
        if src == target or target in src.parents:
            raise CompressError(f"--out {out} would replace the input {i}; choose another directory")
