"""Shared by the benchmark scripts: where results go and what they are stamped with."""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path
from typing import Any


def write_result(path: str | Path, payload: dict[str, Any]) -> Path:
    from compress.env import environment
    from compress.io import atomic_write_json

    path = Path(path)
    payload = {
        "date": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        "environment": environment(),
        **payload,
    }
    atomic_write_json(path, payload)
    print(json.dumps({k: v for k, v in payload.items() if k != "environment"}, indent=2, default=str))
    return path
