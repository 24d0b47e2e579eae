"""An embedded SQLite store of bench results, with a trend table and plot.

Each row keeps the machine fingerprint, library versions, commit, model name, headline figures
(p50/mean/p90/p99 latency, throughput, the task metric, params, bytes) and the whole result as JSON.
Timings are only ever compared between rows with the same machine fingerprint: the trend table
computes changes within a fingerprint, the plot draws one line per (model, fingerprint), and
`compare` refuses rows from different machines.
"""

from __future__ import annotations

import json
import os
import sqlite3
import subprocess
from contextlib import closing
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from compress.errors import CompressError
from compress.io import temp_path_for

SCHEMA_VERSION = 1
_SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS results (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    timestamp TEXT NOT NULL,
    fingerprint TEXT NOT NULL,
    machine TEXT NOT NULL,
    versions TEXT NOT NULL,
    git_commit TEXT,
    model TEXT NOT NULL,
    backend TEXT,
    p50_ms REAL, mean_ms REAL, p90_ms REAL, p99_ms REAL, cov REAL, throughput REAL,
    metric_name TEXT, metric_value REAL,
    params INTEGER, bytes INTEGER,
    result TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS results_by_model ON results (model, fingerprint, timestamp);
"""
FIGURES = ("p50_ms", "mean_ms", "p90_ms", "p99_ms", "cov", "throughput", "metric_value", "params", "bytes")


def connect(db: str | Path) -> sqlite3.Connection:
    """Open (creating if needed) the history database at `db`."""
    db = Path(db)
    try:
        db.parent.mkdir(parents=True, exist_ok=True)
        conn = sqlite3.connect(str(db))
        conn.row_factory = sqlite3.Row
        conn.executescript(_SCHEMA)
        row = conn.execute("SELECT value FROM meta WHERE key = 'schema_version'").fetchone()
        if row is None:
            conn.execute("INSERT INTO meta VALUES ('schema_version', ?)", (str(SCHEMA_VERSION),))
            conn.commit()
        elif int(row[0]) != SCHEMA_VERSION:
            conn.close()
            raise CompressError(f"{db}: history schema version {row[0]}, this compress reads {SCHEMA_VERSION}")
    except sqlite3.DatabaseError as e:
        raise CompressError(f"{db}: not a history database ({e})") from None
    return conn


def git_commit(cwd: str | Path | None = None) -> str | None:
    """The current git commit of `cwd`, or None outside a repository or without git."""
    try:
        out = subprocess.run(["git", "rev-parse", "HEAD"], cwd=cwd, capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.SubprocessError):
        return None
    if out.returncode != 0:
        return None
    return out.stdout.strip() or None


def add(
    db: str | Path,
    result: dict[str, Any],
    *,
    model: str | None = None,
    commit: str | None = None,
    timestamp: str | None = None,
    assume_this_machine: bool = False,
) -> int:
    """Store one bench result; returns its row id.

    Args:
        result: a bench result mapping (latency summary, metrics, environment...).
        model: name to file it under (default: the result's `model`/`name`/`artifact` entry).
        commit: commit the result belongs to (default: the result's `commit`, else `git rev-parse HEAD`).
        timestamp: ISO time (default: the result's `timestamp`, else now).
        assume_this_machine: a result that records no machine is filed under this machine's fingerprint;
            without it such a result is refused.
    """
    from compress.check.gate import _find_figure, bench_fingerprint, bench_latency
    from compress.env import environment, fingerprint

    env = result.get("environment") or {}
    machine = env.get("machine") or result.get("machine")
    fp = bench_fingerprint(result)
    if fp is None:
        if not assume_this_machine:
            raise CompressError(
                "the result records no machine, so its timings could not be compared with "
                "anything; add it on the machine that measured it with --this-machine"
            )
        here = environment()
        machine, fp, env = here["machine"], fingerprint(here["machine"]), {**here, **env}
    versions = env.get("versions") or result.get("versions") or {}
    lat = bench_latency(result) or {}
    metrics = result.get("metrics") or (result.get("bench") or {}).get("metrics") or {}
    metric_name = next((k for k in ("accuracy", "psnr") if k in metrics), None)
    name = model or _model_name(result)
    if not name:
        raise CompressError("the result names no model; pass --model NAME")
    commit = commit or result.get("commit") or git_commit()
    ts = timestamp or result.get("timestamp") or datetime.now(timezone.utc).isoformat(timespec="seconds")
    runtime = result.get("runtime") or {}
    params, size = _find_figure(result, "params"), _find_figure(result, "bytes")
    row = (
        ts,
        fp,
        json.dumps(machine or {}, sort_keys=True),
        json.dumps(versions, sort_keys=True),
        commit,
        name,
        runtime.get("backend"),
        lat.get("p50_ms"),
        lat.get("mean_ms"),
        lat.get("p90_ms"),
        lat.get("p99_ms"),
        lat.get("cov"),
        lat.get("throughput"),
        metric_name,
        metrics.get(metric_name) if metric_name else None,
        int(params) if params is not None else None,
        int(size) if size is not None else None,
        json.dumps(result, default=str),
    )
    db = Path(db)
    fresh = not db.exists()
    target = temp_path_for(db) if fresh else db  # a new database appears only once it holds its first row
    if fresh:
        target.unlink()
    try:
        with closing(connect(target)) as conn:
            cur = conn.execute(
                "INSERT INTO results (timestamp, fingerprint, machine, versions, git_commit, model, backend, "
                "p50_ms, mean_ms, p90_ms, p99_ms, cov, throughput, metric_name, metric_value, params, bytes, "
                "result) "
                "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                row,
            )
            conn.commit()
            row_id = int(cur.lastrowid)
        if fresh:
            os.replace(target, db)
    except BaseException:
        if fresh:
            for leftover in (target, target.with_name(target.name + "-journal")):
                leftover.unlink(missing_ok=True)
        raise
    return row_id


def query(
    db: str | Path,
    *,
    model: str | None = None,
    fingerprint: str | None = None,
    commit: str | None = None,
    limit: int | None = None,
) -> list[dict[str, Any]]:
    """Stored results, oldest first, filtered by model, machine fingerprint and commit prefix."""
    where, args = [], []
    if model:
        where.append("model = ?")
        args.append(model)
    if fingerprint:
        where.append("fingerprint = ?")
        args.append(fingerprint)
    if commit:
        where.append("git_commit LIKE ?")
        args.append(commit + "%")
    sql = "SELECT * FROM results" + (" WHERE " + " AND ".join(where) if where else "") + " ORDER BY timestamp, id"
    with closing(connect(db)) as conn:
        rows = [_row(r) for r in conn.execute(sql, args)]
    return rows[-limit:] if limit else rows


def get(db: str | Path, row_id: int) -> dict[str, Any]:
    with closing(connect(db)) as conn:
        r = conn.execute("SELECT * FROM results WHERE id = ?", (row_id,)).fetchone()
    if r is None:
        raise CompressError(f"no result with id {row_id} in {db}")
    return _row(r)


def trend(rows: list[dict[str, Any]], figure: str = "p50_ms") -> list[dict[str, Any]]:
    """One line per row with the change of `figure` against the previous row of the same model and machine."""
    if figure not in FIGURES:
        raise CompressError(f"unknown figure '{figure}'; available: {', '.join(FIGURES)}")
    last: dict[tuple[str, str], float] = {}
    out = []
    for r in rows:
        key = (r["model"], r["fingerprint"])
        value = r.get(figure)
        prev = last.get(key)
        change = (value - prev) / prev if value is not None and prev else None
        if value is not None:
            last[key] = value
        out.append(
            {
                "id": r["id"],
                "timestamp": r["timestamp"],
                "model": r["model"],
                "commit": (r["git_commit"] or "")[:10],
                "machine": machine_label(r),
                "fingerprint": r["fingerprint"],
                figure: value,
                "change": change,
            }
        )
    return out


def compare(db: str | Path, baseline_id: int, candidate_id: int, config: Any = None):
    """Check two stored results against each other (same machine fingerprint required)."""
    from compress.check.gate import compare_bench_results

    a, b = get(db, baseline_id), get(db, candidate_id)
    return compare_bench_results(a["result"], b["result"], config, names=(f"#{baseline_id}", f"#{candidate_id}"))


def plot(rows: list[dict[str, Any]], path: str | Path, figure: str = "p50_ms") -> Path:
    """A PNG trend plot of `figure`: one line per (model, machine fingerprint), in time order."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from compress.io import atomic_write_bytes

    if figure not in FIGURES:
        raise CompressError(f"unknown figure '{figure}'; available: {', '.join(FIGURES)}")
    series: dict[tuple[str, str], list[tuple[datetime, float]]] = {}
    labels: dict[tuple[str, str], str] = {}
    for r in rows:
        if r.get(figure) is None:
            continue
        key = (r["model"], r["fingerprint"])
        series.setdefault(key, []).append((_time(r["timestamp"]), float(r[figure])))
        labels[key] = f"{r['model']} @ {machine_label(r)}"
    if not series:
        raise CompressError(f"no stored result has '{figure}' to plot")
    fig, ax = plt.subplots(figsize=(8, 4.5), dpi=100)
    try:
        for key, pts in series.items():
            xs, ys = zip(*pts, strict=True)
            ax.plot(xs, ys, marker="o", label=labels[key])
        ax.set_ylabel(figure)
        ax.set_title(f"compress history: {figure}")
        ax.grid(True, alpha=0.3)
        ax.legend(fontsize=8)
        fig.autofmt_xdate()
        fig.tight_layout()
        import io

        buf = io.BytesIO()
        fig.savefig(buf, format="png")
    finally:
        plt.close(fig)
    return atomic_write_bytes(Path(path), buf.getvalue())


def machine_label(row: dict[str, Any]) -> str:
    m = row.get("machine") or {}
    cpu = m.get("cpu") or "?"
    return f"{cpu} x{m.get('logical_cores', '?')}" + (f" + {m['gpu']}" if m.get("gpu") else "")


def _row(r: sqlite3.Row) -> dict[str, Any]:
    d = dict(r)
    for key in ("machine", "versions", "result"):
        d[key] = json.loads(d[key])
    return d


def _model_name(result: dict[str, Any]) -> str | None:
    for key in ("model", "name", "artifact", "path"):
        v = result.get(key)
        if isinstance(v, str) and v:
            return Path(v).stem if key in ("artifact", "path") else v
        if isinstance(v, dict) and isinstance(v.get("name"), str):
            return v["name"]
    return None


def _time(ts: str) -> datetime:
    try:
        return datetime.fromisoformat(ts)
    except ValueError:
        return datetime.now(timezone.utc)
