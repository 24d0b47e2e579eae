"""Structured pruning: dependency-aware channel removal (`channel`), structured continuous
sparsification (`continuous`) and pruning-space search (`search`)."""

from compress.prune import (  # noqa: F401  (registers methods and layers)
    attention,
    channel,
    continuous,
    dynamic_nm,
    nm,
    search,
)
from compress.prune.graph import DependencyGraph, analyze
from compress.prune.report import prunable_report

__all__ = ["DependencyGraph", "analyze", "prunable_report"]
