"""CI outputs of a check: JSON with every figure, JUnit XML (one testcase per gate), Markdown summary."""

from __future__ import annotations

import json
import xml.etree.ElementTree as ET
from pathlib import Path

from compress.check.gate import CheckResult
from compress.check.stats import FAIL, INCONCLUSIVE, PASS, SKIPPED
from compress.io import atomic_write_text

_ICON = {PASS: "✅ pass", FAIL: "❌ FAIL", INCONCLUSIVE: "⚠️ inconclusive", SKIPPED: "➖ skipped"}


def to_json(result: CheckResult) -> str:
    return json.dumps(result.to_dict(), indent=2, default=str) + "\n"


def to_junit(result: CheckResult, suite: str = "compress check") -> str:
    """JUnit XML: one testcase per gate; FAIL is a <failure>, skipped and INCONCLUSIVE are <skipped>.

    INCONCLUSIVE is not a failure (the gate could not decide), but it is not hidden either: its message
    says why and how to decide it, and the command's exit code (3) tells the CI job.
    """
    counts = {s: sum(g.status == s for g in result.gates) for s in (FAIL, INCONCLUSIVE, SKIPPED)}
    root = ET.Element("testsuites")
    ts = ET.SubElement(
        root,
        "testsuite",
        name=suite,
        tests=str(len(result.gates)),
        failures=str(counts[FAIL]),
        errors="0",
        skipped=str(counts[SKIPPED] + counts[INCONCLUSIVE]),
        time=f"{result.seconds:.3f}",
    )
    props = ET.SubElement(ts, "properties")
    for name, value in (
        ("status", result.status),
        ("baseline", result.baseline),
        ("candidate", result.candidate),
        ("mode", result.mode),
    ):
        ET.SubElement(props, "property", name=name, value=str(value))
    for g in result.gates:
        tc = ET.SubElement(ts, "testcase", classname="compress.check", name=g.name, time="0")
        if g.status == FAIL:
            ET.SubElement(tc, "failure", message=g.message, type="regression").text = g.message
        elif g.status == INCONCLUSIVE:
            ET.SubElement(tc, "skipped", message=f"inconclusive: {g.message}")
        elif g.status == SKIPPED:
            ET.SubElement(tc, "skipped", message=g.message)
        ET.SubElement(tc, "system-out").text = g.message
    ET.indent(root)
    return '<?xml version="1.0" encoding="utf-8"?>\n' + ET.tostring(root, encoding="unicode") + "\n"


def to_markdown(result: CheckResult) -> str:
    """A summary for a CI job summary page (e.g. $GITHUB_STEP_SUMMARY)."""
    lines = [
        f"## compress check: {_ICON[result.status]}",
        "",
        f"Baseline `{result.baseline}` vs candidate `{result.candidate}`"
        + (" (saved bench results)" if result.mode == "bench-json" else ""),
        "",
        "| Gate | Result | Baseline | Candidate | Change | Limit |",
        "|---|---|---|---|---|---|",
    ]
    for g in result.gates:
        lines.append(
            f"| {g.name} | {_ICON[g.status]} | {_cell(g.baseline, g.unit)} | {_cell(g.candidate, g.unit)} "
            f"| {_change(g)} | {_limit(g)} |"
        )
    lat = result.latency
    if lat is not None:
        lines += [
            "",
            f"**Latency**: slowdown {lat.slowdown:.3f}x, "
            f"{lat.confidence:.0%} CI [{lat.ci_low:.3f}, {lat.ci_high:.3f}], "
            f"rank test p={lat.p_value:.3g} ({lat.method}; {lat.rounds} rounds, round-to-round noise "
            f"{lat.noise_cov:.1%}).",
        ]
        if lat.advice:
            lines += ["", f"> {lat.advice}"]
    lines += ["", "<details><summary>Details</summary>", ""]
    for g in result.gates:
        lines.append(f"- **{g.name}**: {g.message}")
    machine = result.environment.get("machine", {})
    versions = result.environment.get("versions", {})
    lines += [
        "",
        f"Machine: {machine.get('cpu', '?')}, {machine.get('logical_cores', '?')} logical cores; "
        + ", ".join(f"{k} {v}" for k, v in versions.items())
        + f". Check took {result.seconds:.1f} s.",
        "",
        "</details>",
        "",
    ]
    return "\n".join(lines)


def write_outputs(
    result: CheckResult,
    *,
    json_path: str | Path | None = None,
    junit: str | Path | None = None,
    summary: str | Path | None = None,
) -> list[Path]:
    """Write whichever outputs were asked for; returns their paths."""
    written = []
    for path, render in ((json_path, to_json), (junit, to_junit), (summary, to_markdown)):
        if path:
            written.append(atomic_write_text(Path(path), render(result)))
    return written


def _cell(v, unit: str) -> str:
    if v is None:
        return "–"
    if isinstance(v, float):
        if unit == "ms":
            return f"{v:.3f} ms"
        if unit in ("points", "agreement"):
            return f"{v * 100:.2f}%"
        return f"{v:,.0f}" if v.is_integer() else f"{v:.4g}"
    if isinstance(v, int):
        return f"{v:,}" + (f" {unit}" if unit == "layers" else "")
    return str(v)


def _change(g) -> str:
    if g.change is None:
        return "–"
    if g.unit == "points":
        return f"{g.change:+.2f} pts"
    return f"{g.change:+.1%}"


def _limit(g) -> str:
    if g.threshold is None:
        return "–"
    if isinstance(g.threshold, str):
        return g.threshold
    if g.unit == "points":
        return f"-{g.threshold} pts"
    if g.unit == "agreement":
        return f">= {g.threshold:.2%}"
    if g.unit not in ("points",) and g.name == "accuracy":
        return f"-{g.threshold} {g.unit}"
    return f"+{g.threshold:.0%}"
