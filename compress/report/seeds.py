"""Summaries over seeds: one recipe run at seeds s, s+1, ... (`compress run --seeds N`).

Per variant, every figure all the runs have (the manifest's metrics, flattened: `deployed_accuracy`,
`fidelity.top1_agreement`, `latency.p50_ms`, `macs`, ..., and `speedup` over the baseline at the same
seed) gets its mean, sample standard deviation, min, max and n; the report's metric also gets the
paired difference to the baseline variant at the same seed, its mean ± std, and how many seeds the
variant is ahead. A difference smaller than its spread, or ahead on some seeds only, is noise.
"""

from __future__ import annotations

import math
import statistics
from pathlib import Path
from typing import Any

from compress.errors import RunDirError
from compress.io import atomic_write_json, atomic_write_text
from compress.report.build import PERCENT, collect_variants, fmt_count
from compress.runs import read_manifest

SCHEMA = "compress.seeds/1"
# the figures the tables show besides the metric: (key, header)
COLUMNS = (
    ("fidelity.top1_agreement", "top-1 agr."),
    ("fidelity.psnr", "PSNR to ref"),
    ("speedup", "speedup"),
    ("latency.p50_ms", "p50 ms"),
    ("macs", "MACs"),
)


def summarize_seeds(runs: list[str | Path], *, baseline: str | None = None, title: str = "") -> dict[str, Any]:
    """The summary of recipe runs that differ only in their seed (see the module docstring)."""
    if not runs:
        raise RunDirError("no runs to summarise")
    seeds, tables = [], []
    for run in runs:
        manifest = read_manifest(run)
        if manifest.get("command") != "run":
            raise RunDirError(f"{run} is not a recipe run (compress run)")
        seeds.append((manifest.get("config") or {}).get("seed"))
        tables.append({r["name"]: (r, _figures(read_manifest(r["path"]))) for r in collect_variants([run])})
    names = list(tables[0])
    for run, table in zip(runs, tables, strict=True):
        if list(table) != names:
            raise RunDirError(f"{run} has variants {', '.join(table)}, not {', '.join(names)}: not the same recipe")
    if not names:
        raise RunDirError("no variants to summarise")
    base = baseline or names[0]
    if base not in names:
        raise RunDirError(f"baseline '{base}' is not among the variants: {', '.join(names)}")
    for table in tables:
        base_p50 = table[base][1].get("latency.p50_ms")
        for _, figures in table.values():
            p50 = figures.get("latency.p50_ms")
            if base_p50 and p50:
                figures["speedup"] = base_p50 / p50
    variants = []
    for name in names:
        rows = [t[name][0] for t in tables]
        figures = [t[name][1] for t in tables]
        shared = [k for k in figures[0] if all(k in f for f in figures)]
        values = [r["value"] for r in rows]
        entry: dict[str, Any] = {
            "name": name,
            "steps": rows[0]["steps"],
            "metric": rows[0]["metric"],
            "value": stats(values) if None not in values else None,
            "figures": {k: stats([f[k] for f in figures]) for k in shared},
            "vs_baseline": None,
        }
        base_values = [t[base][0]["value"] for t in tables]
        if name != base and None not in values and None not in base_values:
            deltas = [v - b for v, b in zip(values, base_values, strict=True)]
            entry["vs_baseline"] = {
                **stats(deltas),
                "ahead": sum(d > 0 for d in deltas),
                "behind": sum(d < 0 for d in deltas),
            }
        variants.append(entry)
    from compress.env import environment

    metrics = {v["metric"] for v in variants}
    return {
        "schema": SCHEMA,
        "title": title,
        "baseline": base,
        "metric": metrics.pop() if len(metrics) == 1 else "mixed",
        "seeds": seeds,
        "runs": [str(r) for r in runs],
        "variants": variants,
        "environment": environment(),
    }


def stats(values: list[float]) -> dict[str, Any]:
    """mean, sample std (None for one value), min, max, n and the values themselves."""
    n = len(values)
    return {
        "mean": statistics.fmean(values),
        "std": statistics.stdev(values) if n > 1 else None,
        "min": min(values),
        "max": max(values),
        "n": n,
        "values": list(values),
    }


def _figures(manifest: dict[str, Any]) -> dict[str, float]:
    """Every number among a variant's metrics, nested ones under dotted keys."""
    out: dict[str, float] = {}

    def walk(d: dict[str, Any], prefix: str) -> None:
        for k, v in d.items():
            if isinstance(v, dict):
                walk(v, f"{prefix}{k}.")
            elif isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v):
                out[prefix + k] = v

    walk(manifest.get("metrics") or {}, "")
    return out


def write_summary(summary: dict[str, Any], out: str | Path) -> tuple[Path, Path]:
    """Write summary.json and summary.md into folder `out`."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    atomic_write_json(out / "summary.json", summary)
    atomic_write_text(out / "summary.md", markdown_summary(summary))
    return out / "summary.json", out / "summary.md"


def fmt_stats(s: dict[str, Any] | None, key: str) -> str:
    """'97.31 ± 0.52%' in the figure's own units."""
    if not s:
        return "—"
    if key in PERCENT or key.endswith(("_agreement", "accuracy")):
        spread = "" if s["std"] is None else f" ± {100 * s['std']:.2f}"
        return f"{100 * s['mean']:.2f}{spread}%"
    if key in ("macs", "params", "size_bytes"):
        return fmt_count(s["mean"]) + ("" if not s["std"] else f" ± {fmt_count(s['std'])}")
    digits = 2 if key == "speedup" or abs(s["mean"]) >= 10 else 3
    spread = "" if s["std"] is None else f" ± {s['std']:.{digits}f}"
    return f"{s['mean']:.{digits}f}{spread}" + ("×" if key == "speedup" else "")


def fmt_range(s: dict[str, Any] | None, key: str) -> str:
    if not s:
        return "—"
    if key in PERCENT:
        return f"{100 * s['min']:.2f}–{100 * s['max']:.2f}%"
    return f"{s['min']:.2f}–{s['max']:.2f}"


def fmt_paired(d: dict[str, Any] | None, key: str) -> str:
    """'+1.20 ± 0.40 pt' for a paired difference."""
    if not d:
        return "—"
    scale, unit = (100, " pt") if key in PERCENT else (1, "")
    spread = "" if d["std"] is None else f" ± {scale * d['std']:.2f}"
    return f"{scale * d['mean']:+.2f}{spread}{unit}"


def fmt_ahead(d: dict[str, Any] | None) -> str:
    return "—" if not d else f"{d['ahead']} of {d['n']}"


def table_columns(summary: dict[str, Any]) -> list[tuple[str, str]]:
    """The COLUMNS some variant has a figure for."""
    return [(k, h) for k, h in COLUMNS if any(k in v["figures"] for v in summary["variants"])]


def table_rows(summary: dict[str, Any]) -> tuple[list[str], list[list[str]]]:
    """Headers and cells of the summary table (shared by the markdown and the terminal)."""
    metric = summary["metric"]
    cols = table_columns(summary)
    headers = ["variant", "steps", f"{metric} mean ± std", "min–max", f"Δ {metric} vs {summary['baseline']}", "ahead"]
    headers += [h for _, h in cols]
    rows = []
    for v in summary["variants"]:
        rows.append(
            [
                v["name"],
                " → ".join(s.split(":")[-1] for s in v["steps"]) or "—",
                fmt_stats(v["value"], v["metric"]),
                fmt_range(v["value"], v["metric"]),
                fmt_paired(v["vs_baseline"], v["metric"]),
                fmt_ahead(v["vs_baseline"]),
                *(fmt_stats(v["figures"].get(k), k) for k, _ in cols),
            ]
        )
    return headers, rows


def _caption(summary: dict[str, Any]) -> str:
    seeds = ", ".join(str(s) for s in summary["seeds"])
    text = (
        f"{len(summary['seeds'])} seeds ({seeds}); mean ± sample std; Δ paired with {summary['baseline']} "
        "at the same seed; ahead: seeds with Δ > 0"
    )
    samples = {
        v["figures"]["deployed_samples"]["mean"] for v in summary["variants"] if "deployed_samples" in v["figures"]
    }
    if summary["metric"] in PERCENT and len(samples) == 1:
        n = samples.pop()
        text += f"; one validation image is {100 / n:.2f} pt"
    return text


def markdown_summary(summary: dict[str, Any]) -> str:
    headers, rows = table_rows(summary)
    lines = [
        f"# {summary['title'] or 'summary'} over {len(summary['seeds'])} seeds",
        "",
        _caption(summary)
        + ". Each seed is a whole run of the recipe: "
        + ", ".join(f"`{Path(r).name}`" for r in summary["runs"])
        + ".",
        "",
        "| " + " | ".join(headers) + " |",
        "|---|---|" + "---:|" * (len(headers) - 2),
    ]
    lines += ["| " + " | ".join(r) + " |" for r in rows]
    lines += ["", "## Every figure the seeds share", ""]
    for v in summary["variants"]:
        lines += [f"### {v['name']}", "", "| figure | mean | std | min | max | n |", "|---|---:|---:|---:|---:|---:|"]
        for k, s in v["figures"].items():
            std = "—" if s["std"] is None else f"{s['std']:.4g}"
            lines.append(f"| {k} | {s['mean']:.4g} | {std} | {s['min']:.4g} | {s['max']:.4g} | {s['n']} |")
        lines.append("")
    env = summary["environment"]
    lines += [
        f"Machine: {env['machine'].get('cpu')} ({env['machine'].get('logical_cores')} logical cores); "
        + ", ".join(f"{k} {v}" for k, v in env["versions"].items()),
        "",
    ]
    return "\n".join(lines)


def rich_summary(summary: dict[str, Any]):
    """The summary table for the terminal."""
    from rich.table import Table

    headers, rows = table_rows(summary)
    t = Table(title=f"{summary['title']} — over {len(summary['seeds'])} seeds", caption=_caption(summary))
    for i, h in enumerate(headers):
        t.add_column(h, justify="left" if i < 2 else "right")
    for r in rows:
        t.add_row(*r)
    return t
