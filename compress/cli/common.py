"""What every subcommand shares: error handling, option parsing, consoles."""

from __future__ import annotations

import contextlib
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


EXIT_INTERNAL = 1


def handle_errors(fn: F) -> F:
    """The one error handler of every command (see `report_failure`)."""

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except BaseException as e:
            code = report_failure(e)
            if code is None:
                raise
            raise typer.Exit(code) from None

    return wrapper  # type: ignore[return-value]


def report_failure(e: BaseException) -> int | None:
    """Turn any failure into one line on stderr and an exit code, after dropping staged outputs.

    A user error (ours) and an operating-system failure (disk full, permission, a path in the way)
    exit 2; an interruption exits 130 and keeps the staged run for --resume; anything else is an
    internal error: one line, the full traceback written to a file, exit 1. Returns None for the
    exits Typer and Click raise themselves, which pass through.
    """
    from compress.runs import abort_open_runs

    if isinstance(e, (typer.Exit, SystemExit)) or (hasattr(e, "exit_code") and hasattr(e, "format_message")):
        return None
    if isinstance(e, KeyboardInterrupt):
        kept = abort_open_runs(keep=True)
        where = f" (kept {kept[0]})" if kept else ""
        _say(f"interrupted; continue with --resume{where}")
        return EXIT_INTERRUPTED
    kept = abort_open_runs(keep=False)
    note = f"; kept {kept[0]} for --resume" if kept else ""
    if isinstance(e, CompressError):
        _say(f"error: {_one_line(str(e))}{note}")
        return EXIT_USER_ERROR
    if isinstance(e, OSError):
        _say(f"error: {describe_os_error(e)}{note}")
        return EXIT_USER_ERROR
    if isinstance(e, MemoryError):
        _say(f"error: out of memory{note}; try a smaller --batch-size, --limit or model")
        return EXIT_INTERNAL
    log = write_traceback(e)
    where = f"; full traceback in {log}" if log else ""
    _say(f"internal error: {type(e).__name__}: {_one_line(str(e))}{where}{note}")
    return EXIT_INTERNAL


def describe_os_error(e: OSError) -> str:
    """'PATH: no space left on device' and the like, from an OSError of any kind."""
    import errno

    reason = {
        errno.ENOSPC: "no space left on device",
        errno.EDQUOT: "disk quota exceeded",
        errno.EACCES: "permission denied",
        errno.EPERM: "operation not permitted",
        errno.EROFS: "read-only file system",
        errno.ENOTDIR: "a path component is a file, not a directory",
        errno.EISDIR: "is a directory",
        errno.EEXIST: "already exists",
        errno.ENOENT: "no such file or directory",
        errno.ENAMETOOLONG: "file name too long",
    }.get(e.errno or -1, e.strerror or type(e).__name__)
    paths = [p for p in (e.filename, e.filename2) if p not in (None, "")]
    where = " -> ".join(str(p)[:200] for p in paths)
    return f"{where}: {reason}" if where else _one_line(f"{reason} ({e})")


def write_traceback(e: BaseException) -> str | None:
    """Write the traceback of an internal error to a log file; returns its path (None if that fails too)."""
    import tempfile
    import time
    import traceback

    text = "".join(traceback.format_exception(type(e), e, e.__traceback__))
    try:
        folder = Path(os.environ.get("COMPRESS_LOG_DIR") or Path(tempfile.gettempdir()) / "compress-logs")
        folder.mkdir(parents=True, exist_ok=True)
        path = folder / f"traceback-{time.strftime('%Y%m%d-%H%M%S')}-{os.getpid()}.txt"
        path.write_text(text)
        return str(path)
    except OSError:
        return None


def _one_line(text: str, limit: int = 400) -> str:
    line = " ".join(text.split())
    return line if len(line) <= limit else line[: limit - 3] + "..."


def _say(text: str) -> None:
    with contextlib.suppress(OSError):
        typer.echo(text, err=True)


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
    import math

    t = text.strip()
    try:
        value = float(t[:-1]) / 100.0 if t.endswith("%") else float(t)
    except ValueError:
        raise CompressError(f"{what}: expected a number or a percentage, got '{text[:40]}'") from None
    if not math.isfinite(value):
        raise CompressError(f"{what}: expected a finite number, got '{text[:40]}'")
    return value


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


def parse_image_size(text: str | int | None) -> int | tuple[int, int] | None:
    """'--image-size 224' -> 224 (a square); '192x256' (or '192,256') -> (192, 256), H x W."""
    if text is None or isinstance(text, int):
        return text
    parts = str(text).strip().lower().replace(",", "x").split("x")
    try:
        sides = [int(p) for p in parts]
    except ValueError:
        sides = []
    if len(sides) not in (1, 2):
        raise CompressError(f"--image-size: expected a size or HxW (224, 192x256), got '{str(text)[:40]}'")
    return sides[0] if len(sides) == 1 else (sides[0], sides[1])


def data_config(
    name: str,
    *,
    task: str | None = None,
    image_size: int | str | tuple[int, int] | None = None,
    channels: int | None = None,
    limit: int | None = None,
    calib_size: int | None = None,
    seed: int | None = None,
):
    from compress.config import from_dict

    raw: dict[str, Any] = {"name": name}
    for key, value in (
        ("task", task),
        ("image_size", parse_image_size(image_size)),
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
    if str(path).strip() == "":
        raise CompressError("--out is empty; give a file path")
    for i in inputs:
        if i is None or not Path(str(i)).exists():
            continue
        src = Path(str(i)).resolve()
        if path.resolve() == src:
            raise CompressError(f"{path} is an input of this command; choose another output")
    if path.exists() and not force:
        raise CompressError(f"{path} exists; pass --force to replace it")


def check_output_dir(out: Path, inputs: tuple[Any, ...] = (), *, inside_ok: bool = False) -> None:
    """Refuse an output directory that is, or contains, one of the inputs (--force would delete it),
    or that lies inside an input directory (unless `inside_ok`: a report beside its runs)."""
    if str(out).strip() in ("", "."):
        raise CompressError(f"--out '{str(out)[:60]}' is not a run directory path; give a new directory name")
    target = out.resolve()
    for i in inputs:
        if i is None or not Path(str(i)).exists():
            continue
        src = Path(str(i)).resolve()
        if src == target or target in src.parents:
            raise CompressError(f"--out {out} would replace the input {i}; choose another directory")
        if not inside_ok and src.is_dir() and src in target.parents:
            raise CompressError(f"--out {out} is inside the input {i}; choose a directory outside it")


def preprocess_overrides(
    mean: str | None = None, std: str | None = None, crop_pct: float | None = None, resize: str | None = None
) -> dict[str, Any]:
    """The preprocessing fields a user gave on the command line (see compress.models.preprocess)."""
    out: dict[str, Any] = {}
    for key, text in (("mean", mean), ("std", std)):
        if text is None:
            continue
        try:
            out[key] = [float(v) for v in text.replace(" ", "").split(",")]
        except ValueError:
            raise CompressError(f"--{key}: expected numbers separated by commas, got '{text[:40]}'") from None
    if crop_pct is not None:
        out["crop_pct"] = crop_pct
    if resize is not None:
        out["resize"] = resize
    return out
