"""Progress bars for long work. The library's only use of rich; quiet when disabled or off rank 0."""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from typing import Any


class _Bar:
    def __init__(self, progress: Any, task: Any) -> None:
        self._progress = progress
        self._task = task

    def advance(self, n: int = 1, **fields: Any) -> None:
        if self._progress is not None:
            status = "  ".join(f"{k} {v:.4g}" if isinstance(v, float) else f"{k} {v}" for k, v in fields.items())
            self._progress.update(self._task, advance=n, status=status)


def enabled() -> bool:
    return os.environ.get("COMPRESS_PROGRESS", "1") != "0" and os.environ.get("RANK", "0") == "0"


@contextlib.contextmanager
def progress(description: str, total: int | None, *, show: bool = True) -> Iterator[_Bar]:
    """A rich progress bar on stderr, or a no-op when progress is off."""
    if not (show and enabled()):
        yield _Bar(None, None)
        return
    from rich.console import Console
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        TextColumn,
        TimeElapsedColumn,
        TimeRemainingColumn,
    )

    columns = [
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        TimeRemainingColumn(),
        TextColumn("{task.fields[status]}"),
    ]
    console = Console(stderr=True)
    with Progress(*columns, console=console, transient=not console.is_terminal) as p:
        task = p.add_task(description, total=total, status="")
        yield _Bar(p, task)
