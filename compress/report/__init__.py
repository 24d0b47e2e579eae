"""Reports: a table, report.json, report.md and a Pareto plot of accuracy against latency."""

from compress.report.build import SCHEMA, build_report, collect_variants
from compress.report.render import rich_table

__all__ = ["SCHEMA", "build_report", "collect_variants", "rich_table"]
