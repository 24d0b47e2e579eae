"""The Pareto plot: metric against p50 latency, marker area ~ size on disk, frontier drawn."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from compress.io import temp_path_for


def pareto_plot(rows: list[dict[str, Any]], path: Path, *, title: str = "") -> Path | None:
    import os

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from compress.report.build import pareto_front

    pts = [r for r in rows if (r.get("latency") or {}).get("p50_ms") is not None and r.get("value") is not None]
    metric = rows[0]["metric"]
    scale = 100.0 if metric in ("accuracy", "top1_agreement") else 1.0
    fig, ax = plt.subplots(figsize=(7.5, 5), dpi=120)
    if pts:
        sizes = [r["size_bytes"] or 1 for r in pts]
        biggest = max(sizes)
        front = set(pareto_front(rows))
        xs = [r["latency"]["p50_ms"] for r in pts]
        ys = [r["value"] * scale for r in pts]
        xspan, yspan = (max(xs) - min(xs)) or 1.0, (max(ys) - min(ys)) or 1.0
        placed: list[tuple[float, float]] = []
        for r, s, x, y in zip(pts, sizes, xs, ys, strict=True):
            on = r["name"] in front
            ax.scatter(
                x,
                y,
                s=60 + 900 * (s / biggest),
                alpha=0.55 if on else 0.3,
                color="tab:blue" if on else "tab:gray",
                edgecolor="black",
                linewidth=0.6,
                zorder=3,
            )
            # stagger the labels of points that sit close together so they do not print over each other
            near = sum(abs(x - px) < 0.08 * xspan and abs(y - py) < 0.08 * yspan for px, py in placed)
            placed.append((x, y))
            ax.annotate(
                f"{r['name']}\n{_size(s)}", (x, y), textcoords="offset points", xytext=(8, 6 - 24 * near), fontsize=8
            )
        fr = sorted((r["latency"]["p50_ms"], r["value"] * scale) for r in pts if r["name"] in front)
        if len(fr) > 1:
            ax.step(
                [p[0] for p in fr],
                [p[1] for p in fr],
                where="post",
                color="tab:blue",
                linewidth=1.5,
                label="Pareto frontier",
                zorder=2,
            )
            ax.legend(loc="lower right", fontsize=8)
    else:
        ax.text(0.5, 0.5, "no variant has both latency and metric", ha="center", transform=ax.transAxes)
    ax.set_xlabel("p50 latency (ms, lower is better)")
    unit = " (%)" if scale == 100.0 else " (dB)" if metric == "psnr" else ""
    ax.set_ylabel(f"{metric}{unit} (higher is better)")
    ax.set_title(title or "accuracy vs latency")
    ax.grid(True, alpha=0.3)
    ax.margins(0.25)
    fig.tight_layout()
    tmp = temp_path_for(path)
    try:
        fig.savefig(tmp, format="png")
        os.replace(tmp, path)
    finally:
        plt.close(fig)
        tmp.unlink(missing_ok=True)
    return path


def _size(n: float) -> str:
    from compress.report.build import fmt_bytes

    return fmt_bytes(n)
