"""Collect variants from run directories and write report.json, report.md and pareto.png."""

from __future__ import annotations

import os
import shutil
import uuid
from pathlib import Path
from typing import Any

from compress.errors import RunDirError
from compress.io import atomic_write_json, atomic_write_text
from compress.runs import read_manifest

SCHEMA = "compress.report/1"
PRIMARY = {"classification": "accuracy", "denoising": "psnr"}
PERCENT = ("accuracy", "top1_agreement")  # metrics shown as percentages
# fidelity columns (`compress.bench.fidelity`): (key, header), shown when some variant has the figure
FIDELITY_COLUMNS = (
    ("top1_agreement", "top-1 agr."),
    ("top5_agreement", "top-5 agr."),
    ("kl_divergence", "KL"),
    ("psnr", "PSNR to ref"),
)


def collect_variants(paths: list[str | Path]) -> list[dict[str, Any]]:
    """One row per variant found in `paths` (recipe runs expand into their variants)."""
    rows: list[dict[str, Any]] = []
    for p in paths:
        p = Path(p)
        manifest = read_manifest(p)
        if manifest.get("command") == "run":
            for name in manifest.get("variants", []):
                vdir = p / "variants" / name
                vm = read_manifest(vdir)
                if vm.get("variant", True):
                    rows.append(_row(name, vdir, vm))
        else:
            rows.append(_row(p.name, p, manifest))
    names = [r["name"] for r in rows]
    if len(set(names)) != len(names):
        for r in rows:
            r["name"] = f"{Path(r['path']).parent.name}/{r['name']}" if names.count(r["name"]) > 1 else r["name"]
    return rows


def _row(name: str, path: Path, manifest: dict[str, Any]) -> dict[str, Any]:
    m = manifest.get("metrics", {})
    task = (manifest.get("config", {}).get("data") or {}).get("task", "classification")
    primary = PRIMARY.get(task, "accuracy")
    value = m.get(f"deployed_{primary}")
    fidelity = m.get("fidelity") if isinstance(m.get("fidelity"), dict) else None
    if value is None and task == "classification" and fidelity and "top1_agreement" in fidelity:
        primary, value = "top1_agreement", fidelity["top1_agreement"]  # no labels: fidelity is the metric
    lat = m.get("latency") or {}
    steps = manifest.get("steps", [])
    return {
        "name": name,
        "path": str(path),
        "task": task,
        "steps": [f"{s['technique']}:{s['method']}" for s in steps],
        "metric": primary,
        "value": value,
        "fidelity": fidelity,
        "params": m.get("params"),
        "macs": m.get("macs"),
        "size_bytes": m.get("size_bytes"),
        "bits_per_weight": m.get("bits_per_weight", 32.0 if m.get("params") else None),
        "int8_ops": m.get("int8_ops"),  # what ONNX Runtime really ran as integer kernels ("49/49")
        "int8_speed": m.get("speed_verdict"),  # the quantize step's own float vs INT8 check
        "int8_summary": m.get("int8_summary"),
        "deploy_note": m.get("deploy_note"),  # e.g. codebook / bit-wise: a size format that runs float kernels
        "sparsity": m.get("sparsity"),
        "latency": {
            k: lat.get(k)
            for k in (
                "n",
                "mean_ms",
                "std_ms",
                "cov",
                "min_ms",
                "p50_ms",
                "p90_ms",
                "p95_ms",
                "p99_ms",
                "max_ms",
                "batch_size",
            )
        }
        if lat
        else None,
        "throughput": lat.get("throughput"),
        "runtime": m.get("runtime"),
        **({"benches": [_bench_entry(b) for b in m["benches"]]} if m.get("benches") else {}),
    }


def _bench_entry(b: dict[str, Any]) -> dict[str, Any]:
    """One backend's figures for a report row: where they come from, p50/p90/p99, or why not run."""
    lat = b.get("latency") or {}
    entry = {k: b.get(k) for k in ("label", "backend", "device")}
    entry.update({k: lat.get(k) for k in ("p50_ms", "p90_ms", "p99_ms", "batch_size")})
    entry["runtime"] = b.get("runtime")
    if b.get("not_run"):
        entry["not_run"] = b["not_run"]
    return entry


def build_report(
    paths: list[str | Path],
    out: str | Path,
    *,
    baseline: str | None = None,
    title: str = "compress report",
    plot: bool = True,
) -> dict[str, Any]:
    """Write report.json, report.md and pareto.png for the variants in `paths` into `out`."""
    from compress.env import environment

    rows = collect_variants(paths)
    if not rows:
        raise RunDirError("no variants to report")
    base = next((r for r in rows if r["name"] == baseline), None) if baseline else rows[0]
    if base is None:
        raise RunDirError(f"baseline '{baseline}' is not among the variants: {', '.join(r['name'] for r in rows)}")
    for r in rows:
        r["speedup"] = _ratio(_p50(base), _p50(r))
        r["delta"] = (r["value"] - base["value"]) if r["value"] is not None and base["value"] is not None else None
        r["size_ratio"] = _ratio(r["size_bytes"], base["size_bytes"])
    labels = backend_labels(rows)
    for r in rows:
        for b in r.get("benches", []):
            b["speedup"] = _ratio(_bench_p50(base, b["label"]), b["p50_ms"])
    metrics = {r["metric"] for r in rows}
    report = {
        "schema": SCHEMA,
        "title": title,
        "baseline": base["name"],
        "metric": metrics.pop() if len(metrics) == 1 else "mixed",
        "environment": environment(),
        "variants": rows,
        "pareto": pareto_front(rows),
        "notes": variant_notes(rows),
        **({"backends": labels} if labels else {}),
    }
    refs = {r["fidelity"].get("reference") for r in rows if r.get("fidelity") and "skipped" not in r["fidelity"]}
    if refs:
        report["fidelity_reference"] = refs.pop() if len(refs) == 1 else "mixed"
    out = Path(out)
    fresh = not out.exists()  # a new folder is built aside and appears whole, or not at all
    stage = out.with_name(f".{out.name}.tmp-{uuid.uuid4().hex[:8]}") if fresh else out
    try:
        stage.mkdir(parents=True, exist_ok=True)
        if plot:
            from compress.report.plot import pareto_plot

            pareto_plot(rows, stage / "pareto.png", title=title)
            report["plot"] = "pareto.png"
        atomic_write_json(stage / "report.json", report)
        atomic_write_text(stage / "report.md", markdown(report))
        if fresh:
            os.replace(stage, out)
    except BaseException:
        if fresh:
            shutil.rmtree(stage, ignore_errors=True)
        raise
    return report


def backend_labels(rows: list[dict[str, Any]]) -> list[str]:
    """The backends (label: backend/device and options) some row was benched on, in recipe order;
    empty when every row has one backend's figures only (the report keeps its single latency column)."""
    labels: list[str] = []
    for r in rows:
        labels += [b["label"] for b in r.get("benches", []) if b["label"] not in labels]
    return labels


def bench_of(row: dict[str, Any], label: str) -> dict[str, Any]:
    """A row's figures on backend `label` ({} where it was not benched there)."""
    return next((b for b in row.get("benches", []) if b["label"] == label), {})


def _bench_p50(row: dict[str, Any], label: str) -> float | None:
    return bench_of(row, label).get("p50_ms")


def fmt_bench(row: dict[str, Any], label: str, key: str) -> str:
    """A row's p50 (`key` p50_ms) or speedup (`key` speedup) on one backend, or "not run" / —."""
    b = bench_of(row, label)
    if b.get("not_run"):
        return "not run"
    v = b.get(key)
    return _x(v) if key == "speedup" else _f(v)


def variant_notes(rows: list[dict[str, Any]]) -> list[str]:
    """What a reader of the table must know to read a variant's speed: one line per quantized variant whose
    own speed check did not find it faster than its float model, and per variant whose format is
    about size, not speed (codebooks, bit-wise weights expanded to float on every call)."""
    notes = []
    for r in rows:
        if r.get("int8_speed") not in (None, "faster") and r.get("int8_summary"):
            notes.append(f"{r['name']}: {r['int8_summary']}")
        if r.get("deploy_note"):
            notes.append(f"{r['name']}: {r['deploy_note']}")
    return notes


def pareto_front(rows: list[dict[str, Any]]) -> list[str]:
    """Names of variants no other variant beats on both latency and the metric."""
    pts = [(r["name"], _p50(r), r["value"]) for r in rows if _p50(r) is not None and r["value"] is not None]
    front = []
    for name, lat, val in pts:
        dominated = any((l2 <= lat and v2 >= val) and (l2 < lat or v2 > val) for _, l2, v2 in pts)
        if not dominated:
            front.append(name)
    return front


def fidelity_columns(rows: list[dict[str, Any]], metric: str = "") -> list[tuple[str, str]]:
    """The fidelity (key, header) pairs some row has a figure for (not the one that is the metric)."""
    return [(k, h) for k, h in FIDELITY_COLUMNS if k != metric and any(k in (r.get("fidelity") or {}) for r in rows)]


def fmt_fidelity(row: dict[str, Any], key: str) -> str:
    v = (row.get("fidelity") or {}).get(key)
    if not isinstance(v, (int, float)):
        return "—"
    if key.endswith("_agreement"):
        return f"{100 * v:.2f}%"
    return f"{v:.4f}" if key == "kl_divergence" else f"{v:.2f}"


def markdown(report: dict[str, Any]) -> str:
    metric = report["metric"]
    fid = fidelity_columns(report["variants"], metric)
    ref = report.get("fidelity_reference")
    labels = report.get("backends") or []
    latency_head = (
        "".join(f" p50 ms {b} | speedup {b} |" for b in labels) if labels else " p50 ms | p90 ms | p99 ms | speedup |"
    )
    lines = [
        f"# {report['title']}",
        "",
        f"Baseline: **{report['baseline']}**. Metric and latency measured through the deployed ONNX model "
        f"({_runtime(report)}). Pareto-optimal variants are marked ★."
        + (f" Fidelity (agreement, KL, PSNR) is to **{ref}**'s outputs on the same inputs." if ref else "")
        + (f" Latency per backend; the metric, Pareto front and plot use the first, {labels[0]}." if labels else ""),
        "",
        f"| variant | steps | {metric} | Δ |{latency_head} size | params | MACs | bits/w |"
        " int8 ops |" + "".join(f" {h} |" for _, h in fid),
        "|---|---|---:|---:|" + "---:|" * (2 * len(labels) or 4) + "---:|---:|---:|---:|---:|" + "---:|" * len(fid),
    ]
    for r in report["variants"]:
        lat = r["latency"] or {}
        star = " ★" if r["name"] in report["pareto"] else ""
        latency = (
            "".join(f" {fmt_bench(r, b, 'p50_ms')} | {fmt_bench(r, b, 'speedup')} |" for b in labels)
            if labels
            else f" {_f(lat.get('p50_ms'))} | {_f(lat.get('p90_ms'))} | {_f(lat.get('p99_ms'))} | {_x(r['speedup'])} |"
        )
        lines.append(
            f"| {r['name']}{star} | {' → '.join(r['steps']) or '—'} | {fmt_metric(r['value'], metric)} | "
            f"{fmt_delta(r['delta'], metric)} |{latency} {fmt_bytes(r['size_bytes'])} | "
            f"{fmt_count(r['params'])} | {fmt_count(r['macs'])} | {_f(r['bits_per_weight'], 1)} | "
            f"{r.get('int8_ops') or '—'} |" + "".join(f" {fmt_fidelity(r, k)} |" for k, _ in fid)
        )
    env = report["environment"]
    notes = report.get("notes") or []
    if notes:
        lines += ["", "**INT8 not faster than float** (the quantize step's interleaved check):", ""]
        lines += [f"- {n}" for n in notes]
    lines += [
        "",
        "![accuracy vs latency](pareto.png)" if report.get("plot") else "",
        "",
        f"Machine: {env['machine'].get('cpu')} ({env['machine'].get('logical_cores')} logical cores); "
        + ", ".join(f"{k} {v}" for k, v in env["versions"].items()),
        "",
    ]
    return "\n".join(lines)


def _runtime(report: dict[str, Any]) -> str:
    for r in report["variants"]:
        rt = r.get("runtime") or {}
        if rt:
            return (
                f"{rt.get('backend')} {rt.get('version')}, {', '.join(rt.get('providers', []))}, "
                f"{rt.get('intra_op_threads')} threads, batch {(r['latency'] or {}).get('batch_size')}"
            )
    return "not benchmarked"


def _p50(r: dict[str, Any]) -> float | None:
    return (r.get("latency") or {}).get("p50_ms")


def _ratio(a: float | None, b: float | None) -> float | None:
    return a / b if a and b else None


def fmt_metric(v: float | None, metric: str) -> str:
    if v is None:
        return "—"
    return f"{100 * v:.2f}%" if metric in PERCENT else f"{v:.2f}"


def fmt_delta(v: float | None, metric: str) -> str:
    if v is None:
        return "—"
    return f"{100 * v:+.2f} pt" if metric in PERCENT else f"{v:+.2f}"


def fmt_bytes(n: float | None) -> str:
    if n is None:
        return "—"
    for unit in ("B", "KB", "MB", "GB"):
        if n < 1024 or unit == "GB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return str(n)


def fmt_count(n: float | None) -> str:
    if n is None:
        return "—"
    for unit, div in (("G", 1e9), ("M", 1e6), ("k", 1e3)):
        if n >= div:
            return f"{n / div:.2f}{unit}"
    return str(int(n))


def _f(v: float | None, digits: int = 3) -> str:
    return "—" if v is None else f"{v:.{digits}f}"


def _x(v: float | None) -> str:
    return "—" if v is None else f"{v:.2f}×"
