"""Formatting shared by the experiments' Markdown reports (percentages, seed summaries)."""

from __future__ import annotations

from typing import Any, Dict


def pct(v: Any) -> str:
    """A proportion as a percentage with one decimal, or a dash for a missing value."""
    return "—" if v is None else f"{100 * v:.1f}"


def seed_cell(s: Dict[str, Any]) -> str:
    """A :func:`deqlib.evaluate.seed_summary` as ``mean ± sd [t interval]`` in percent (one seed: the mean)."""
    if s["interval"] is None:  # one seed: no spread to show
        return f"{pct(s['mean'])} (1 seed)"
    return f"{pct(s['mean'])} ± {pct(s['sd'])} [{pct(s['interval'][0])}, {pct(s['interval'][1])}]"
