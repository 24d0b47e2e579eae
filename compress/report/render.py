"""Terminal rendering of reports and benches with rich."""

from __future__ import annotations

from typing import Any

from compress.report.build import (
    fidelity_columns,
    fmt_bench,
    fmt_bytes,
    fmt_count,
    fmt_delta,
    fmt_fidelity,
    fmt_metric,
)


def rich_table(report: dict[str, Any]):
    from rich.table import Table

    metric = report["metric"]
    labels = report.get("backends") or []  # several backends: p50 and speedup on each, else one set
    latency = [f"{k} {b}" for b in labels for k in ("p50 ms", "speedup")] or ["p50 ms", "p99 ms", "speedup"]
    t = Table(title=report["title"], caption=f"baseline: {report['baseline']}  ★ Pareto-optimal")
    for col, justify in (
        ("variant", "left"),
        ("steps", "left"),
        (metric, "right"),
        ("Δ", "right"),
        *((h, "right") for h in latency),
        ("size", "right"),
        ("params", "right"),
        ("MACs", "right"),
    ):
        t.add_column(col, justify=justify)
    fid = fidelity_columns(report["variants"], metric)
    for _, header in fid:
        t.add_column(header, justify="right")
    if report.get("fidelity_reference"):
        t.caption += f"  fidelity to: {report['fidelity_reference']}"
    for r in report["variants"]:
        lat = r["latency"] or {}
        t.add_row(
            r["name"] + (" ★" if r["name"] in report["pareto"] else ""),
            " → ".join(s.split(":")[-1] for s in r["steps"]) or "—",
            fmt_metric(r["value"], metric),
            fmt_delta(r["delta"], metric),
            *(
                [fmt_bench(r, b, k) for b in labels for k in ("p50_ms", "speedup")]
                or [
                    "—" if lat.get("p50_ms") is None else f"{lat['p50_ms']:.3f}",
                    "—" if lat.get("p99_ms") is None else f"{lat['p99_ms']:.3f}",
                    "—" if r["speedup"] is None else f"{r['speedup']:.2f}×",
                ]
            ),
            fmt_bytes(r["size_bytes"]),
            fmt_count(r["params"]),
            fmt_count(r["macs"]),
            *(fmt_fidelity(r, k) for k, _ in fid),
        )
    for note in report.get("notes") or []:
        t.caption += f"\nnot faster than float: {note}"
    return t


def latency_table(result: dict[str, Any], title: str):
    from rich.table import Table

    t = Table(title=title)
    t.add_column("figure")
    t.add_column("value", justify="right")
    lat = result["latency"]
    for k in (
        "n",
        "batch_size",
        "mean_ms",
        "std_ms",
        "cov",
        "min_ms",
        "p50_ms",
        "p90_ms",
        "p95_ms",
        "p99_ms",
        "max_ms",
        "throughput",
    ):
        v = lat[k]
        t.add_row(k, f"{v:.4f}" if isinstance(v, float) else str(v))
    # GPU backends: `latency` is device compute; the host's wait per call and the call with copies beside it
    for key, label in (("latency_host", "host"), ("latency_end_to_end", "end-to-end (copies)")):
        if key in result:
            t.add_row(f"{label} p50_ms", f"{result[key]['p50_ms']:.4f}")
    for k, v in (result.get("metrics") or {}).items():
        t.add_row(k, f"{v:.4f}" if isinstance(v, float) else str(v))
    fidelity = result.get("fidelity") or {}
    for k, v in fidelity.items():
        if k not in ("task", "reference_kind"):
            t.add_row(f"fidelity {k}", f"{v:.4f}" if isinstance(v, float) else str(v))
    rt = result.get("runtime", {})
    t.caption = (
        f"{rt.get('backend')} {rt.get('version')} · {', '.join(rt.get('providers', []))} · "
        f"{rt.get('intra_op_threads')} threads"
    )
    return t
